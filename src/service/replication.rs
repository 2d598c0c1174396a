//! ReplicationService (the writer's side of list replication), the replica's follower loop, and
//! the report backend through which a replica's reports are created on the writer.
//!
//! Trust: a replica applies nothing the writer's list-signing key did not sign (see
//! `crate::replication`); the transport adds authentication (the `replica` role) and, with
//! https, confidentiality. A replica that cannot reach its writer keeps serving the versions it
//! has and says so in ReplicationStatus and its log; matching never waits for a pull.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::auth::{Identity, Rpc};
use super::config::{ReplicationMode, ServiceConfig};
use super::reports::{CreatedReport, NewReport, ReportBackend, ReportSink, ScanCounts};
use super::{ServeError, State, convert, pb, status_with_kind, store_status};
use crate::replication::{self as repl, Applier, PullDigest, PullEnd};
use crate::reports::{PublicKey, Signer};
use crate::store::{ListMeta, StoreError};

/// Records per message of a pull (each a few hundred bytes: ~1 MiB messages).
const PULL_BATCH: usize = 4096;
/// How long a replica waits for the writer to take a report.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The replication side of a server's state.
pub struct Replication {
    pub mode: ReplicationMode,
    /// Writer: signs pulls.
    signer: Option<Signer>,
    /// Replica: what the follower last saw.
    status: Mutex<FollowStatus>,
}

#[derive(Debug, Clone, Default)]
struct FollowStatus {
    caught_up: bool,
    last_sync: String,
    last_error: String,
    upstream: BTreeMap<String, u64>,
}

impl Replication {
    pub fn new(config: &ServiceConfig) -> Result<Replication, ServeError> {
        let r = &config.replication;
        let signer = match r.mode {
            ReplicationMode::Writer => Some(
                repl::load_or_generate_key(&config.data, r.list_signing_key.as_deref())
                    .map_err(|e| ServeError::Config(e.to_string()))?,
            ),
            _ => None,
        };
        if let Some(s) = &signer {
            tracing::info!(key_id = %s.public().key_id(), "replication: writer; pulls are signed");
        }
        Ok(Replication {
            mode: r.mode,
            signer,
            status: Mutex::new(FollowStatus::default()),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, FollowStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replica: every list has been pulled since start.
    pub fn caught_up(&self) -> bool {
        self.status().caught_up
    }
}

fn not_writer(rpc: Rpc) -> Status {
    status_with_kind(
        Code::FailedPrecondition,
        "not_writer",
        format!(
            "{} is served by a replication writer; this server is not one ([replication] mode)",
            rpc.name()
        ),
    )
}

pub struct ReplicationSvc {
    state: Arc<State>,
}

impl ReplicationSvc {
    pub fn new(state: Arc<State>) -> Self {
        ReplicationSvc { state }
    }

    /// Authorise; writer-side RPCs also need this server to be the writer.
    fn admit<T>(&self, req: &Request<T>, rpc: Rpc) -> Result<Identity, Status> {
        let who = self.state.auth.check(req, rpc)?;
        if rpc != Rpc::ReplicationStatus && self.state.replication.mode != ReplicationMode::Writer {
            return Err(not_writer(rpc));
        }
        Ok(who)
    }
}

#[tonic::async_trait]
impl pb::replication_service_server::ReplicationService for ReplicationSvc {
    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            self.admit(&req, Rpc::ListVersions)?;
            let st = self.state.clone();
            st.clone()
                .blocking(move || {
                    let lists = st.store.lists().map_err(|e| store_status(&e))?;
                    let lists = lists
                        .iter()
                        .map(|m| serde_json::to_vec(m).map_err(|e| Status::internal(e.to_string())))
                        .collect::<Result<_, _>>()?;
                    Ok(pb::ListVersionsResponse { lists })
                })
                .await
        }
        .await;
        self.state.finish(Rpc::ListVersions, t0, &r);
        r.map(Response::new)
    }

    type PullChangesStream = ReceiverStream<Result<pb::PullChangesChunk, Status>>;

    async fn pull_changes(
        &self,
        req: Request<pb::PullChangesRequest>,
    ) -> Result<Response<Self::PullChangesStream>, Status> {
        let t0 = Instant::now();
        let r = async {
            let who = self.admit(&req, Rpc::PullChanges)?;
            let q = req.into_inner();
            let st = self.state.clone();
            let meta = {
                let st = st.clone();
                let name = q.list.clone();
                st.clone()
                    .blocking(move || st.store.list(&name).map_err(|e| store_status(&e)))
                    .await?
            };
            if q.from_version > meta.version {
                return Err(status_with_kind(
                    Code::FailedPrecondition,
                    "replica_ahead",
                    format!(
                        "list {} is at version {} on the writer, the replica at {}: the writer went back in time (restored from an older backup?); rebuild the replica from an empty data directory",
                        meta.name, meta.version, q.from_version
                    ),
                ));
            }
            tracing::info!(caller = %who.name, list = %meta.name, from = q.from_version, to = meta.version, "pull");
            let (tx, rx) = mpsc::channel(4);
            tokio::task::spawn_blocking(move || {
                if let Err(s) = produce_pull(&st, &meta, q.from_version, &tx) {
                    let _ = tx.blocking_send(Err(s));
                }
            });
            Ok(ReceiverStream::new(rx))
        }
        .await;
        self.state.finish(Rpc::PullChanges, t0, &r);
        r.map(Response::new)
    }

    async fn submit_report(
        &self,
        req: Request<pb::SubmitReportRequest>,
    ) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let who = self.admit(&req, Rpc::SubmitReport)?;
            let Some(sink) = self.state.reports.clone() else {
                return Err(status_with_kind(
                    Code::FailedPrecondition,
                    "reports_disabled",
                    "the writer runs without reports ([reports] enabled = false)",
                ));
            };
            let q = req.into_inner();
            let context = q
                .context
                .ok_or_else(|| invalid("report_context is required"))?;
            let hashes = convert::hash_output(
                q.hashes.as_ref().ok_or_else(|| invalid("hashes are required"))?,
            )?;
            let matches = q
                .matches
                .iter()
                .map(convert::match_from_pb)
                .collect::<Result<Vec<_>, _>>()?;
            if matches.is_empty() {
                return Err(invalid("a report needs at least one match"));
            }
            // The replica vouches for its caller; both are recorded.
            let actor = if q.actor.is_empty() {
                who.name.clone()
            } else {
                format!("{} via {}", q.actor, who.name)
            };
            let created = self
                .state
                .blocking(move || {
                    sink.create(NewReport {
                        context: &context,
                        hashes: &hashes,
                        matches: &matches,
                        actor: &actor,
                    })
                })
                .await?;
            tracing::info!(caller = %who.name, report = %created.report_id, "report created for a replica");
            Ok(pb::SubmitReportResponse {
                report_id: created.report_id,
                status: created.status,
            })
        }
        .await;
        self.state.finish(Rpc::SubmitReport, t0, &r);
        r.map(Response::new)
    }

    async fn submit_scan_counts(
        &self,
        req: Request<pb::SubmitScanCountsRequest>,
    ) -> Result<Response<pb::SubmitScanCountsResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            self.admit(&req, Rpc::SubmitScanCounts)?;
            let q = req.into_inner();
            if let Some(sink) = self.state.reports.clone() {
                let counts = ScanCounts {
                    matched: q.matched,
                    not_matched: q.not_matched,
                    suppressed: q.suppressed,
                    failed: q.failed,
                };
                self.state
                    .blocking(move || sink.record_scans(counts))
                    .await?;
            }
            Ok(pb::SubmitScanCountsResponse {})
        }
        .await;
        self.state.finish(Rpc::SubmitScanCounts, t0, &r);
        r.map(Response::new)
    }

    async fn replication_status(
        &self,
        req: Request<pb::ReplicationStatusRequest>,
    ) -> Result<Response<pb::ReplicationStatusResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            self.admit(&req, Rpc::ReplicationStatus)?;
            let st = self.state.clone();
            st.clone().blocking(move || status_of(&st)).await
        }
        .await;
        self.state.finish(Rpc::ReplicationStatus, t0, &r);
        r.map(Response::new)
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    status_with_kind(Code::InvalidArgument, "invalid", msg)
}

/// Stream one pull: start, records in batches, the signed end. Runs on the blocking pool; a
/// replica that goes away ends it at the next send.
fn produce_pull(
    st: &State,
    meta: &ListMeta,
    from: u64,
    tx: &mpsc::Sender<Result<pb::PullChangesChunk, Status>>,
) -> Result<(), Status> {
    use pb::pull_changes_chunk::Part;
    let signer = st
        .replication
        .signer
        .as_ref()
        .ok_or_else(|| not_writer(Rpc::PullChanges))?;
    let list = serde_json::to_vec(meta).map_err(|e| Status::internal(e.to_string()))?;
    let gone = || StoreError::Invalid("the replica went away".into());
    let send = |part: Part| {
        tx.blocking_send(Ok(pb::PullChangesChunk { part: Some(part) }))
            .map_err(|_| gone())
    };
    send(Part::Start(pb::PullStart {
        list,
        from_version: from,
        to_version: meta.version,
    }))
    .map_err(|e| store_status(&e))?;
    let mut digest = PullDigest::default();
    let mut batch = Vec::with_capacity(PULL_BATCH);
    st.store
        .replication_records(meta, from, |k, v| {
            digest.add(k, v);
            batch.push(pb::ReplicatedEntry {
                key: k.to_vec(),
                value: v.to_vec(),
            });
            if batch.len() >= PULL_BATCH {
                let entries = std::mem::replace(&mut batch, Vec::with_capacity(PULL_BATCH));
                send(Part::Entries(pb::EntryBatch { entries }))?;
            }
            Ok(())
        })
        .map_err(|e| store_status(&e))?;
    if !batch.is_empty() {
        send(Part::Entries(pb::EntryBatch { entries: batch })).map_err(|e| store_status(&e))?;
    }
    let end =
        PullEnd::sign(signer, meta, from, digest).map_err(|e| Status::internal(e.to_string()))?;
    send(Part::End(pb::PullEnd {
        list: end.list,
        from_version: end.from,
        to_version: end.to,
        entries: end.entries,
        digest: end.digest.to_vec(),
        key_id: end.key_id,
        signature: end.signature,
    }))
    .map_err(|e| store_status(&e))?;
    Ok(())
}

fn status_of(st: &State) -> Result<pb::ReplicationStatusResponse, Status> {
    let snap = st.matcher.snapshot();
    let serving: BTreeMap<&str, u64> = snap
        .lists
        .values()
        .map(|l| (l.name.as_str(), l.version))
        .collect();
    let follow = st.replication.status().clone();
    let lists = st
        .store
        .lists()
        .map_err(|e| store_status(&e))?
        .into_iter()
        .map(|m| pb::ListReplicaState {
            serving_version: serving.get(m.name.as_str()).copied().unwrap_or(0),
            stored_version: m.version,
            upstream_version: follow.upstream.get(&m.name).copied().unwrap_or(0),
            live_entries: m.live_entries,
            name: m.name,
        })
        .collect();
    Ok(pb::ReplicationStatusResponse {
        mode: st.replication.mode.as_str().into(),
        upstream: st.config.replication.upstream.clone(),
        caught_up: follow.caught_up,
        last_sync: follow.last_sync,
        last_error: follow.last_error,
        lists,
    })
}

/// The hashes a replica sent, in the shape reports take.
/// Adds the replica's bearer token to every call to the writer.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type WriterClient =
    pb::replication_service_client::ReplicationServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of the writer (connects lazily: a replica starts while its writer is down).
pub fn writer_client(config: &ServiceConfig) -> Result<WriterClient, ServeError> {
    let r = &config.replication;
    let cfg = |m: String| ServeError::Config(format!("replication: {m}"));
    let mut ep = Endpoint::from_shared(r.upstream.clone())
        .map_err(|e| cfg(format!("upstream {:?}: {e}", r.upstream)))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(ca) = &r.upstream_ca {
        let pem = std::fs::read(ca).map_err(|e| cfg(format!("reading {}: {e}", ca.display())))?;
        ep = ep
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| cfg(format!("upstream TLS: {e}")))?;
    }
    let token = match &r.upstream_token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| cfg(format!("reading {}: {e}", p.display())))?;
            let v: MetadataValue<Ascii> = format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| cfg(format!("{}: the token is not printable ASCII", p.display())))?;
            Some(v)
        }
        None => None,
    };
    let max = config.max_message_bytes;
    Ok(
        pb::replication_service_client::ReplicationServiceClient::with_interceptor(
            ep.connect_lazy(),
            Bearer(token),
        )
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
    )
}

/// Replica: follow the writer until `stop`. Sets `health` to SERVING after the first complete
/// round (every list pulled to the writer's version), so readiness means "caught up".
pub async fn follow(
    st: Arc<State>,
    mut client: WriterClient,
    keys: Vec<PublicKey>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let poll = Duration::from_millis(st.config.replication.poll_interval_ms.max(50));
    loop {
        let t0 = Instant::now();
        let round = sync_once(&st, &mut client, &keys).await;
        let first = {
            let mut s = st.replication.status();
            s.last_sync = crate::store::now_rfc3339();
            match &round {
                Ok(()) => {
                    s.last_error.clear();
                    let first = !s.caught_up;
                    s.caught_up = true;
                    first
                }
                Err(e) => {
                    if s.last_error != *e {
                        tracing::warn!(error = %e, upstream = %st.config.replication.upstream, "replication: pull failed; serving the versions held");
                    }
                    s.last_error = e.clone();
                    false
                }
            }
        };
        if first {
            tracing::info!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "replication: caught up with the writer; ready"
            );
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            health
                .set_serving::<pb::scan_service_server::ScanServiceServer<super::scan::ScanSvc>>()
                .await;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One round: ask the writer for its lists, pull each one that is behind, then bring matching
/// up to date at once (rather than at the next refresh tick).
async fn sync_once(
    st: &Arc<State>,
    client: &mut WriterClient,
    keys: &[PublicKey],
) -> Result<(), String> {
    let lists = client
        .list_versions(pb::ListVersionsRequest {})
        .await
        .map_err(|s| format!("ListVersions: {}", s.message()))?
        .into_inner()
        .lists;
    let mut pulled = false;
    for bytes in lists {
        let w: ListMeta =
            serde_json::from_slice(&bytes).map_err(|e| format!("ListVersions: bad list: {e}"))?;
        st.replication
            .status()
            .upstream
            .insert(w.name.clone(), w.version);
        let local = {
            let (st, id) = (st.clone(), w.id);
            tokio::task::spawn_blocking(move || st.store.list_by_id(id))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        if local.as_ref().is_some_and(|l| l.version == w.version) {
            continue;
        }
        let from = local.map_or(0, |l| l.version);
        let t0 = Instant::now();
        let meta = pull(st, client, keys, &w.name, from).await?;
        tracing::info!(list = %meta.name, from, to = meta.version, entries = meta.live_entries, elapsed_ms = t0.elapsed().as_millis() as u64, "replication: list updated");
        pulled = true;
    }
    if pulled {
        let st = st.clone();
        tokio::task::spawn_blocking(move || st.matcher.refresh().map(|_| ()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("index refresh: {e}"))?;
    }
    Ok(())
}

/// Pull one list and apply it: records are staged as they arrive, on the blocking pool, and
/// committed only when the signed end checks out.
async fn pull(
    st: &Arc<State>,
    client: &mut WriterClient,
    keys: &[PublicKey],
    list: &str,
    from: u64,
) -> Result<ListMeta, String> {
    use pb::pull_changes_chunk::Part;
    let mut stream = client
        .pull_changes(pb::PullChangesRequest {
            list: list.to_string(),
            from_version: from,
        })
        .await
        .map_err(|s| format!("PullChanges {list}: {}", s.message()))?
        .into_inner();
    let rt = tokio::runtime::Handle::current();
    let (st, keys, list) = (st.clone(), keys.to_vec(), list.to_string());
    let actor = format!("replication:{}", st.config.replication.upstream);
    tokio::task::spawn_blocking(move || -> Result<ListMeta, String> {
        let mut next = || -> Result<Option<Part>, String> {
            rt.block_on(stream.message())
                .map(|m| m.and_then(|c| c.part))
                .map_err(|s| format!("PullChanges {list}: {}", s.message()))
        };
        let Some(Part::Start(start)) = next()? else {
            return Err(format!(
                "PullChanges {list}: the stream did not begin with its start"
            ));
        };
        let meta: ListMeta = serde_json::from_slice(&start.list)
            .map_err(|e| format!("PullChanges {list}: bad list metadata: {e}"))?;
        if meta.name != list || start.from_version != from || start.to_version != meta.version {
            return Err(format!(
                "PullChanges {list}: the start does not fit the request"
            ));
        }
        let mut applier =
            Applier::begin(&st.store, &meta, from, &actor).map_err(|e| e.to_string())?;
        loop {
            match next()? {
                Some(Part::Entries(b)) => {
                    for e in b.entries {
                        applier
                            .record(&e.key, &e.value)
                            .map_err(|e| e.to_string())?;
                    }
                }
                Some(Part::End(e)) => {
                    let end = PullEnd {
                        list: e.list,
                        from: e.from_version,
                        to: e.to_version,
                        entries: e.entries,
                        digest: e.digest.as_slice().try_into().map_err(|_| {
                            format!("PullChanges {list}: the digest is not 32 bytes")
                        })?,
                        key_id: e.key_id,
                        signature: e.signature,
                    };
                    return applier.finish(&end, &keys).map_err(|e| e.to_string());
                }
                Some(Part::Start(_)) => {
                    return Err(format!("PullChanges {list}: a second start"));
                }
                None => return Err(format!("PullChanges {list}: the stream ended early")),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A replica's report backend: creates reports (and records scan counts) on the writer; the
/// rest of ReportService is the writer's.
pub struct ForwardingBackend {
    client: WriterClient,
    rt: tokio::runtime::Handle,
    upstream: String,
}

impl ForwardingBackend {
    pub fn new(client: WriterClient, rt: tokio::runtime::Handle, upstream: String) -> Self {
        ForwardingBackend {
            client,
            rt,
            upstream,
        }
    }

    fn elsewhere(&self) -> Status {
        status_with_kind(
            Code::FailedPrecondition,
            "replica",
            format!(
                "this server is a replica: reports are kept by the writer ({}); ask it",
                self.upstream
            ),
        )
    }

    fn unavailable(&self, what: &str, s: &Status) -> Status {
        status_with_kind(
            Code::Unavailable,
            "writer_unavailable",
            format!(
                "{what}: the writer ({}) did not take it ({}): nothing was recorded; retry",
                self.upstream,
                s.message()
            ),
        )
    }
}

impl ReportSink for ForwardingBackend {
    type Context = pb::ReportContext;
    type Error = Status;

    fn create(&self, r: NewReport<'_>) -> Result<CreatedReport, Status> {
        let req = pb::SubmitReportRequest {
            context: Some(r.context.clone()),
            hashes: Some(convert::hash_response(r.hashes)),
            matches: r.matches.iter().map(convert::pb_match).collect(),
            actor: r.actor.to_string(),
        };
        let mut c = self.client.clone();
        let res = self.rt.block_on(async move {
            match tokio::time::timeout(SUBMIT_TIMEOUT, c.submit_report(req)).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("no answer in time")),
            }
        });
        match res {
            Ok(resp) => {
                let resp = resp.into_inner();
                Ok(CreatedReport {
                    report_id: resp.report_id,
                    status: resp.status,
                    retention_deadline: None,
                })
            }
            // The writer's own verdicts on the request pass through as they are.
            Err(s) if matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition) => {
                Err(s)
            }
            Err(s) => Err(self.unavailable("the report", &s)),
        }
    }

    fn record_scans(&self, c: ScanCounts) -> Result<(), Status> {
        let mut client = self.client.clone();
        let req = pb::SubmitScanCountsRequest {
            matched: c.matched,
            not_matched: c.not_matched,
            suppressed: c.suppressed,
            failed: c.failed,
        };
        self.rt
            .block_on(async move {
                tokio::time::timeout(SUBMIT_TIMEOUT, client.submit_scan_counts(req))
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")))
            })
            .map(|_| ())
            .map_err(|s| self.unavailable("scan counts", &s))
    }
}

impl ReportBackend for ForwardingBackend {
    fn get(&self, _: &pb::GetReportRequest, _: &Identity) -> Result<pb::Report, Status> {
        Err(self.elsewhere())
    }
    fn list(
        &self,
        _: &pb::ListReportsRequest,
        _: &Identity,
    ) -> Result<pb::ListReportsResponse, Status> {
        Err(self.elsewhere())
    }
    fn export(
        &self,
        _: &pb::ExportReportRequest,
        _: &Identity,
    ) -> Result<pb::ExportReportResponse, Status> {
        Err(self.elsewhere())
    }
    fn review(&self, _: &pb::ReviewReportRequest, _: &Identity) -> Result<pb::ReportState, Status> {
        Err(self.elsewhere())
    }
    fn verify(
        &self,
        _: &pb::VerifyReportsRequest,
        _: &Identity,
    ) -> Result<pb::VerifyReportsResponse, Status> {
        Err(self.elsewhere())
    }
    fn statistics(
        &self,
        _: &pb::ReportStatisticsRequest,
        _: &Identity,
    ) -> Result<pb::ReportStatisticsResponse, Status> {
        Err(self.elsewhere())
    }
    fn audit(
        &self,
        _: &pb::GetReportAuditRequest,
        _: &Identity,
    ) -> Result<pb::GetReportAuditResponse, Status> {
        Err(self.elsewhere())
    }
}
