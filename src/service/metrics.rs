//! Prometheus metrics, served over plain HTTP on their own listener (`GET /metrics`, OpenMetrics
//! text). Labels are RPC names, status codes, error kinds, list names and hash types: never a
//! hash value, never anything from an image.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCode {
    pub rpc: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    pub rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
    /// image, video, hashes (MatchHashes), unknown (the item failed before it was told).
    pub media: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListType {
    pub list: String,
    pub hash_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabel {
    pub list: String,
}

type HistogramFamily = Family<RpcLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RpcCode, Counter>,
    pub latency: HistogramFamily,
    pub scans: Family<Outcome, Counter>,
    pub matches: Family<ListType, Counter>,
    pub errors: Family<Kind, Counter>,
    pub shed: Family<RpcLabel, Counter>,
    pub in_flight: Gauge,
    pub list_entries: Family<ListLabel, Gauge>,
    pub list_version: Family<ListLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("baken");
        let requests = Family::<RpcCode, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let scans = Family::<Outcome, Counter>::default();
        let matches = Family::<ListType, Counter>::default();
        let errors = Family::<Kind, Counter>::default();
        let shed = Family::<RpcLabel, Counter>::default();
        let in_flight = Gauge::default();
        let list_entries = Family::<ListLabel, Gauge>::default();
        let list_version = Family::<ListLabel, Gauge>::default();
        registry.register(
            "requests",
            "RPCs answered, by RPC and gRPC status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "RPC latency (unary RPCs; each item of a stream)",
            latency.clone(),
        );
        registry.register(
            "scans",
            "Scanned items by outcome (match, no_match, suppressed, error) and media (image, video, hashes, unknown)",
            scans.clone(),
        );
        registry.register("matches", "Matches by list and hash type", matches.clone());
        registry.register(
            "errors",
            "Failed requests by kind (decode error kinds, busy, deadline, not_found, …)",
            errors.clone(),
        );
        registry.register(
            "shed",
            "Requests refused because the in-flight limit was reached",
            shed.clone(),
        );
        registry.register(
            "in_flight",
            "Requests being processed now",
            in_flight.clone(),
        );
        registry.register(
            "list_entries",
            "Live entries per list in the matching index",
            list_entries.clone(),
        );
        registry.register(
            "list_version",
            "Version of each list the matching index serves (on a replica: the writer's number)",
            list_version.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            scans,
            matches,
            errors,
            shed,
            in_flight,
            list_entries,
            list_version,
        }
    }

    pub fn shed(&self, rpc: &str) {
        self.shed.get_or_create(&RpcLabel { rpc: rpc.into() }).inc();
        self.error("busy");
    }

    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&Kind { kind: kind.into() }).inc();
    }

    pub fn scan(&self, outcome: &str, media: &str) {
        self.scans
            .get_or_create(&Outcome {
                outcome: outcome.into(),
                media: media.into(),
            })
            .inc();
    }

    pub fn matched(&self, list: &str, hash_type: &str) {
        self.matches
            .get_or_create(&ListType {
                list: list.into(),
                hash_type: hash_type.into(),
            })
            .inc();
    }

    /// Count one answered RPC with its status code and latency.
    pub fn observe(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RpcCode {
                rpc: rpc.into(),
                code: code_name(code).into(),
            })
            .inc();
        self.latency
            .get_or_create(&RpcLabel { rpc: rpc.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The gRPC name of a status code (`OK`, `RESOURCE_EXHAUSTED`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serve `GET /metrics` (OpenMetrics text; `before` refreshes the gauges first) on `listener`
/// until `shutdown` changes. HTTP/1.1 by hyper through axum, which tonic's router already
/// builds; anything else is 404.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    before: Arc<dyn Fn() + Send + Sync>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use axum::http::{StatusCode, header};
    let scrape = move || {
        let (metrics, before) = (metrics.clone(), before.clone());
        async move {
            before();
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics.render(),
            )
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            )
        });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}
