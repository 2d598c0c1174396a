//! The gRPC service: hashing, scanning and matching, hash lists and reports behind a tonic API
//! (`proto/baken/v1/*.proto`), with the standard health service and server reflection.
//!
//! * [`config`]: the configuration (embedded defaults, a TOML file, `BAKEN_*` variables).
//! * [`auth`]: roles from bearer tokens (hashed at rest) or client certificates; every RPC
//!   checks its caller first.
//! * [`limits`]: the in-flight limit with load shedding, CPU work on the rayon pool, deadlines.
//! * [`metrics`]: Prometheus metrics on their own HTTP listener.
//! * [`scan`], [`lists`], [`reports`]: the three services; reports are a thin adapter over a
//!   [`reports::ReportBackend`].
//!
//! [`start`] binds, serves and returns a [`Running`] handle; [`Running::shutdown`] stops
//! accepting, lets in-flight requests finish (bounded by the drain timeout) and closes the store.

pub mod admin;
pub mod auth;
pub mod config;
pub mod convert;
pub mod limits;
pub mod lists;
pub mod metrics;
pub mod pb;
pub mod replication;
pub mod report_store;
pub mod reports;
pub mod scan;
mod server;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{
    Certificate, Identity as TlsIdentity, Server as TonicServer, ServerTlsConfig,
};
use tonic::{Code, Status};

use crate::engine::{Engine, Tally};
use crate::index::{MatchConfig, Matcher};
use crate::store::{Store, StoreError};

pub use auth::{Auth, Identity, Role, Rpc};
pub use config::ServiceConfig;
pub use reports::{ReportBackend, ReportSink};
pub use server::Server;
pub use status::{ERROR_KIND_KEY, decode_status, engine_status, status_with_kind, store_status};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server: {0}")]
    Transport(String),
}

/// What every service shares.
pub struct State {
    pub config: ServiceConfig,
    pub store: Arc<Store>,
    pub matcher: Arc<Matcher>,
    /// The data path (over `matcher`); the RPCs only adapt it.
    pub engine: Arc<Engine>,
    pub pool: Arc<rayon::ThreadPool>,
    pub admission: limits::Admission,
    pub auth: Auth,
    pub metrics: Arc<metrics::Metrics>,
    pub reports: Option<Arc<dyn ReportBackend>>,
    pub tally: Tally,
    /// Concurrent items per ScanStream (and its read-ahead).
    pub stream_concurrency: usize,
    pub replication: replication::Replication,
    _refresher: crate::index::Refresher,
}

impl State {
    /// Refuse list changes on a replica: its lists come from the writer only.
    pub fn check_writable(&self, rpc: Rpc) -> Result<(), Status> {
        let changes = matches!(
            rpc,
            Rpc::CreateList | Rpc::ImportList | Rpc::RemoveEntries | Rpc::TombstoneEntries
        );
        if changes && self.config.replication.mode == config::ReplicationMode::Replica {
            return Err(status_with_kind(
                Code::FailedPrecondition,
                "replica",
                format!(
                    "this server is a replica: lists change only on the writer ({}); send {} there",
                    self.config.replication.upstream,
                    rpc.name()
                ),
            ));
        }
        Ok(())
    }

    /// Count an answered RPC (status code, latency, error kind).
    pub fn finish<T>(&self, rpc: Rpc, t0: Instant, r: &Result<T, Status>) {
        let code = match r {
            Ok(_) => Code::Ok,
            Err(s) => {
                let kind = s
                    .metadata()
                    .get(ERROR_KIND_KEY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| metrics::code_name(s.code()).to_ascii_lowercase());
                // `busy` is counted where the request was shed.
                if kind != "busy" {
                    self.metrics.error(&kind);
                }
                tracing::debug!(rpc = rpc.name(), code = ?s.code(), kind = %kind, "request failed");
                s.code()
            }
        };
        self.metrics.observe(rpc.name(), code, t0.elapsed());
    }

    /// Run blocking storage work off the async runtime.
    pub async fn blocking<R, F>(&self, f: F) -> Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R, Status> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| Status::internal("internal error while processing the request"))?
    }
}

/// Hand the scan counts to the report backend; kept in the tally when it refuses them.
fn flush_tally(st: &State) {
    if let Err(e) = st.tally.flush(st.reports.as_deref()) {
        tracing::warn!(error = %e.message(), "scan counts not recorded yet; kept for the next attempt");
    }
}

/// A running server.
pub struct Running {
    /// Where gRPC is served.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the plaintext health-only gRPC listener is, if enabled.
    pub health_addr: Option<SocketAddr>,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    tally_task: tokio::task::JoinHandle<()>,
    follower: Option<tokio::task::JoinHandle<()>>,
    health: tonic_health::server::HealthReporter,
    /// The retention task of a report store the [`Server`] opened; stops with the server.
    purger: Option<crate::reports::store::Purger>,
}

impl Running {
    /// The shared state (tests look at metrics and the in-flight count).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stop accepting, let in-flight requests finish (at most the drain timeout), stop the
    /// background tasks and close the store. Returns the number of requests still in flight
    /// when the drain timeout ran out (0 after a clean drain).
    pub async fn shutdown(self) -> usize {
        let drain = Duration::from_secs(self.state.config.drain_timeout_secs);
        tracing::info!(
            in_flight = self.state.admission.in_flight(),
            "shutting down: draining in-flight requests"
        );
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = self.stop.send(true);
        let mut server = self.server;
        let left = match tokio::time::timeout(drain, &mut server).await {
            Ok(Ok(Ok(()))) => 0,
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "server ended with an error");
                0
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "server task failed");
                0
            }
            Err(_) => {
                let n = self.state.admission.in_flight();
                tracing::warn!(
                    in_flight = n,
                    "drain timeout: aborting the remaining requests"
                );
                server.abort();
                n
            }
        };
        // Aborted tasks drop what they hold (state references) once awaited.
        if let Some(t) = self.metrics_task {
            t.abort();
            let _ = t.await;
        }
        self.tally_task.abort();
        let _ = self.tally_task.await;
        if let Some(f) = self.follower {
            f.abort();
            let _ = f.await;
        }
        self.state.admission.close();
        // Wait (bounded) for CPU work that outlived its request, then flush the scan tally.
        let t0 = Instant::now();
        while self.state.admission.in_flight() > 0 && t0.elapsed() < drain {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let state = self.state;
        let _ = tokio::task::spawn_blocking(move || {
            flush_tally(&state);
            // The last reference to the matcher and the store goes here (RocksDB closes);
            // anything still holding one (a task aborted mid-request) lets go when it ends.
            drop(state);
        })
        .await;
        drop(self.purger);
        tracing::info!("shut down");
        left
    }
}

/// Open the store of `config.data` (creating the directory).
pub fn open_store(config: &ServiceConfig) -> Result<Arc<Store>, ServeError> {
    std::fs::create_dir_all(&config.data)
        .map_err(|e| ServeError::Config(format!("creating {}: {e}", config.data.display())))?;
    Ok(Arc::new(Store::open(&config.data)?))
}

/// Start serving with `store` (see [`open_store`]) and, when this build has one, a report
/// backend. Binds the listeners before returning, so the addresses are known.
pub async fn start(
    config: ServiceConfig,
    store: Arc<Store>,
    reports: Option<Arc<dyn ReportBackend>>,
) -> Result<Running, ServeError> {
    config.validate()?;
    let auth = config.build_auth()?;
    let replication = replication::Replication::new(&config)?;
    let follow = match config.replication.mode {
        config::ReplicationMode::Replica => {
            let keys = crate::replication::load_public_keys(
                config
                    .replication
                    .list_public_key
                    .as_deref()
                    .unwrap_or(std::path::Path::new("")),
            )
            .map_err(|e| ServeError::Config(e.to_string()))?;
            Some((replication::writer_client(&config)?, keys))
        }
        _ => None,
    };
    if !auth.enabled {
        tracing::warn!(listen = %config.listen, "authorisation is OFF: every caller has every role (local use only)");
    }
    if config.tls.is_none() {
        tracing::warn!(listen = %config.listen, "TLS is off: traffic is plaintext (local use only)");
    }
    let threads = if config.cpu_threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.cpu_threads
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("baken-cpu-{i}"))
            .build()
            .map_err(|e| ServeError::Config(format!("CPU pool: {e}")))?,
    );
    let match_config = config.match_config()?;
    let matcher = {
        let store = store.clone();
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || pool.install(|| Matcher::open(store, match_config)))
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))??
    };
    let matcher = Arc::new(matcher);
    let engine = Arc::new(
        Engine::new(matcher.clone(), config.decode_limits())
            .with_video(config.video, config.vpdq_seconds_per_hash)
            .with_candidates(
                config
                    .matching
                    .candidate_options()
                    .map_err(ServeError::Config)?,
            ),
    );
    let refresher = Matcher::start_refresher(
        &matcher,
        Duration::from_millis(config.refresh_interval_ms.max(50)),
    );
    let metrics = Arc::new(metrics::Metrics::new());
    let stream_concurrency = if config.stream_concurrency == 0 {
        threads * 2
    } else {
        config.stream_concurrency
    };
    let state = Arc::new(State {
        admission: limits::Admission::new(config.max_in_flight, metrics.clone()),
        config,
        store,
        matcher,
        engine,
        pool,
        auth,
        metrics: metrics.clone(),
        reports,
        tally: Tally::default(),
        stream_concurrency,
        replication,
        _refresher: refresher,
    });

    let listener = TcpListener::bind(&state.config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: state.config.listen.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Transport(e.to_string()))?;

    let (stop, stop_rx) = watch::channel(false);
    let metrics_task = match state.config.metrics_listen() {
        Some(m) => {
            let l = TcpListener::bind(m)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: m.to_string(),
                    source,
                })?;
            let maddr = l
                .local_addr()
                .map_err(|e| ServeError::Transport(e.to_string()))?;
            let st = state.clone();
            let before: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                for l in st.matcher.snapshot().lists.values() {
                    st.metrics
                        .list_entries
                        .get_or_create(&metrics::ListLabel {
                            list: l.name.clone(),
                        })
                        .set(i64::try_from(l.entries).unwrap_or(i64::MAX));
                    st.metrics
                        .list_version
                        .get_or_create(&metrics::ListLabel {
                            list: l.name.clone(),
                        })
                        .set(i64::try_from(l.version).unwrap_or(i64::MAX));
                }
            });
            let task = tokio::spawn(metrics::serve_http(
                l,
                metrics.clone(),
                before,
                stop_rx.clone(),
            ));
            Some((maddr, task))
        }
        None => None,
    };

    // Scan counts go to the report backend's statistics in batches, not one write per scan.
    let tally_task = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let st = st.clone();
                let _ = tokio::task::spawn_blocking(move || flush_tally(&st)).await;
            }
        })
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    // "" is readiness: a replica is not ready (nor is its ScanService) until it has caught up
    // with the writer. "liveness" answers SERVING while the process serves at all.
    let ready = follow.is_none();
    health
        .set_service_status("liveness", tonic_health::ServingStatus::Serving)
        .await;
    if ready {
        health
            .set_serving::<pb::scan_service_server::ScanServiceServer<scan::ScanSvc>>()
            .await;
    } else {
        health
            .set_not_serving::<pb::scan_service_server::ScanServiceServer<scan::ScanSvc>>()
            .await;
    }
    health
        .set_serving::<pb::list_service_server::ListServiceServer<lists::ListSvc>>()
        .await;
    health
        .set_serving::<pb::report_service_server::ReportServiceServer<reports::ReportSvc>>()
        .await;
    health
        .set_serving::<pb::admin_service_server::AdminServiceServer<admin::AdminSvc>>()
        .await;
    health
        .set_serving::<pb::replication_service_server::ReplicationServiceServer<replication::ReplicationSvc>>()
        .await;
    health
        .set_service_status(
            "",
            if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            },
        )
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    // grpcurl and most tools speak v1; grpcio-reflection's Python client still asks v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Transport(e.to_string()))?;

    // The health-only listener shares the reporter, so it turns NOT_SERVING with the main one
    // at shutdown. Plaintext is safe here: the health status is all it serves.
    let health_addr = match state.config.health_listen() {
        Some(h) => {
            let l = TcpListener::bind(h)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: h.to_string(),
                    source,
                })?;
            let haddr = l
                .local_addr()
                .map_err(|e| ServeError::Transport(e.to_string()))?;
            let mut rx = stop_rx.clone();
            tokio::spawn(
                TonicServer::builder()
                    .add_service(health_service.clone())
                    .serve_with_incoming_shutdown(TcpIncoming::from(l), async move {
                        let _ = rx.changed().await;
                    }),
            );
            Some(haddr)
        }
        None => None,
    };

    let max = state.config.max_message_bytes;
    let scan_svc =
        pb::scan_service_server::ScanServiceServer::new(scan::ScanSvc::new(state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
    let list_svc =
        pb::list_service_server::ListServiceServer::new(lists::ListSvc::new(state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
    let report_svc =
        pb::report_service_server::ReportServiceServer::new(reports::ReportSvc::new(state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);

    let replication_svc = pb::replication_service_server::ReplicationServiceServer::new(
        replication::ReplicationSvc::new(state.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);

    let mut builder = TonicServer::builder()
        // Idle and dead peers are noticed; a slow client cannot hold a connection forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &state.config.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ServeError::Tls(format!("reading {}: {e}", p.display())))
        };
        let mut t = ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            t = t
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(!tls.require_client_cert);
        }
        builder = builder
            .tls_config(t)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scan_svc)
        .add_service(list_svc)
        .add_service(report_svc)
        .add_service(replication_svc)
        .add_service(pb::admin_service_server::AdminServiceServer::new(
            admin::AdminSvc::new(state.clone()),
        ));
    let follower = follow.map(|(client, keys)| {
        tokio::spawn(replication::follow(
            state.clone(),
            client,
            keys,
            health.clone(),
            stop_rx.clone(),
        ))
    });
    let mut rx = stop_rx;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = rx.changed().await;
    }));
    tracing::info!(
        %addr,
        health = ?health_addr,
        metrics = ?metrics_task.as_ref().map(|m| m.0),
        tls = state.config.tls.is_some(),
        auth = state.auth.enabled,
        max_in_flight = state.config.max_in_flight,
        "serving"
    );
    let (metrics_addr, metrics_task) = match metrics_task {
        Some((a, t)) => (Some(a), Some(t)),
        None => (None, None),
    };
    Ok(Running {
        addr,
        metrics_addr,
        health_addr,
        state,
        stop,
        server,
        metrics_task,
        tally_task,
        follower,
        health,
        purger: None,
    })
}

impl ServiceConfig {
    fn match_config(&self) -> Result<MatchConfig, ServeError> {
        let mut thresholds = std::collections::BTreeMap::new();
        for (k, v) in &self.matching.thresholds {
            let t = crate::store::HashType::new(k)
                .map_err(|e| ServeError::Config(format!("matching.thresholds.{k}: {e}")))?;
            thresholds.insert(t, *v);
        }
        Ok(MatchConfig {
            thresholds,
            pdq_quality_floor: self.matching.quality_floor,
            index: self
                .matching
                .index
                .parse()
                .map_err(|e: String| ServeError::Config(format!("matching.index: {e}")))?,
            candidate_threshold: self.matching.candidate_threshold,
            candidate_quality_floor: self.matching.candidate_quality_floor,
            ..MatchConfig::default()
        })
    }
}
