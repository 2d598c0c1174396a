//! ListService: hash lists over gRPC. Each change is one store change (atomic, versioned,
//! audited with the caller's identity); after a commit the matching index is refreshed at
//! once, so the next scan sees it.
//!
//! Store work is blocking (synced RocksDB writes): it runs on tokio's blocking pool. Imports
//! and exports stream through bounded channels, so neither side buffers a whole file.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::auth::Rpc;
use super::{State, pb, status_with_kind, store_status};
use crate::store::export::{self, ExportFormat};
use crate::store::import::{self, Format, ImportError};
use crate::store::{ChangeCounts, HashType, ListMeta, NewList, Store, VideoRule};

pub struct ListSvc {
    state: Arc<State>,
}

impl ListSvc {
    pub fn new(state: Arc<State>) -> Self {
        ListSvc { state }
    }

    /// Authorise `rpc`, then run `f` with the caller's name on the blocking pool.
    async fn call<Q, R, F>(&self, rpc: Rpc, req: Request<Q>, f: F) -> Result<Response<R>, Status>
    where
        Q: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&State, Q, &str) -> Result<R, Status> + Send + 'static,
    {
        let t0 = Instant::now();
        let r = async {
            let who = self.state.auth.check(&req, rpc)?;
            self.state.check_writable(rpc)?;
            let q = req.into_inner();
            let st = self.state.clone();
            self.state.blocking(move || f(&st, q, &who.name)).await
        }
        .await;
        self.state.finish(rpc, t0, &r);
        r.map(Response::new)
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    status_with_kind(Code::InvalidArgument, "invalid", msg)
}

fn list_info(m: &ListMeta) -> pb::ListInfo {
    pb::ListInfo {
        id: m.id,
        name: m.name.clone(),
        source: m.source.clone(),
        description: m.description.clone(),
        hash_types: m.hash_types.iter().map(|t| t.to_string()).collect(),
        classification_scheme: m.classification_scheme.clone().unwrap_or_default(),
        version: m.version,
        created: m.created.clone(),
        updated: m.updated.clone(),
        negative: m.negative,
        thresholds: m
            .thresholds
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        live_entries: m.live_entries,
        tombstones: m.tombstones,
        vpdq_query_match_percent: m.video.query_match_percent,
        vpdq_compared_match_percent: m.video.compared_match_percent,
    }
}

fn counts(c: &ChangeCounts) -> pb::Counts {
    pb::Counts {
        added: c.added,
        updated: c.updated,
        unchanged: c.unchanged,
        tombstoned: c.tombstoned,
        restored: c.restored,
        tombstone_unknown: c.tombstone_unknown,
        errors: c.errors,
    }
}

fn format(v: i32) -> Result<Format, Status> {
    use pb::ListFormat as F;
    Ok(match F::try_from(v) {
        Ok(F::Csv) => Format::Csv,
        Ok(F::Tsv) => Format::Tsv,
        Ok(F::Threatexchange) => Format::ThreatExchange,
        Ok(F::Stopncii) => Format::Stopncii,
        Ok(F::Ncmec) => Format::Ncmec,
        Ok(F::Vics) => Format::Vics,
        Ok(F::Vpdq) => Format::Vpdq,
        Ok(F::Unspecified) | Err(_) => {
            return Err(invalid(
                "header.format: give the list file's format (csv, tsv, threatexchange, stopncii, ncmec, vics, vpdq)",
            ));
        }
    })
}

/// Make a committed change visible to matching now rather than at the next refresh tick.
fn refresh(st: &State) {
    if let Err(e) = st.matcher.refresh() {
        tracing::error!(error = %e, "index refresh after a list change failed");
    }
}

fn import_status(e: ImportError) -> Status {
    match e {
        ImportError::Store(s) => store_status(&s),
        ImportError::Malformed { .. } => {
            status_with_kind(Code::InvalidArgument, "malformed", e.to_string())
        }
        ImportError::Io(_) => status_with_kind(
            Code::Cancelled,
            "upload_broken",
            "the upload stream broke off; nothing was imported",
        ),
    }
}

/// The importer's input: chunks from the gRPC stream, through a bounded channel.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Vec<u8>, ()>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(())) => {
                    return Err(std::io::Error::other("upload stream broken"));
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The exporter's output: 64 KiB chunks into the response stream, waiting for the client.
struct ChannelWriter {
    tx: mpsc::Sender<Result<pb::ExportListChunk, Status>>,
    buf: Vec<u8>,
}

const EXPORT_CHUNK: usize = 64 << 10;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        self.tx
            .blocking_send(Ok(pb::ExportListChunk { data }))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= EXPORT_CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn tombstone(
    st: &State,
    actor: &str,
    action: &str,
    list: &str,
    hashes: &[pb::EntryHash],
    external_ids: &[String],
    reason: &str,
) -> Result<pb::ChangeResponse, Status> {
    if hashes.is_empty() && external_ids.is_empty() {
        return Err(invalid("give at least one hash or external id"));
    }
    const MAX: usize = 100_000;
    if hashes.len() + external_ids.len() > MAX {
        return Err(invalid(format!(
            "at most {MAX} hashes and external ids in one request"
        )));
    }
    // Parse everything before the change begins: a bad value refuses the request whole.
    let mut parsed = Vec::with_capacity(hashes.len());
    for (i, h) in hashes.iter().enumerate() {
        let ty = HashType::new(&h.r#type).map_err(|e| invalid(format!("hashes[{i}]: {e}")))?;
        let v = ty
            .parse_value(&h.value)
            .map_err(|e| invalid(format!("hashes[{i}]: {e}")))?;
        parsed.push((ty, v));
    }
    let reason = if reason.trim().is_empty() {
        if action == "list.tombstone" {
            "withdrawn by source"
        } else {
            "removed by operator"
        }
    } else {
        reason
    };
    let store: &Store = &st.store;
    let mut change = store
        .begin(list, actor, action)
        .map_err(|e| store_status(&e))?;
    for (ty, v) in &parsed {
        change
            .tombstone(ty, v, reason)
            .map_err(|e| store_status(&e))?;
    }
    for id in external_ids {
        change
            .tombstone_external(id, reason)
            .map_err(|e| store_status(&e))?;
    }
    let (meta, audit) = change
        .commit(Some(reason.to_string()))
        .map_err(|e| store_status(&e))?;
    refresh(st);
    tracing::info!(list = %meta.name, actor, action, version = meta.version, "list changed");
    Ok(pb::ChangeResponse {
        list: meta.name,
        version_from: audit.version_from,
        version_to: audit.version_to,
        counts: Some(counts(&audit.counts)),
    })
}

#[tonic::async_trait]
impl pb::list_service_server::ListService for ListSvc {
    async fn create_list(
        &self,
        req: Request<pb::CreateListRequest>,
    ) -> Result<Response<pb::ListInfo>, Status> {
        self.call(Rpc::CreateList, req, |st, q, actor| {
            let mut thresholds = BTreeMap::new();
            for (k, v) in q.thresholds {
                let t = HashType::new(&k).map_err(|e| invalid(format!("thresholds: {e}")))?;
                thresholds.insert(t, v);
            }
            let meta = st
                .store
                .create_list(
                    NewList {
                        name: q.name,
                        source: if q.source.is_empty() {
                            "own".into()
                        } else {
                            q.source
                        },
                        description: q.description,
                        classification_scheme: (!q.classification_scheme.is_empty())
                            .then_some(q.classification_scheme),
                        negative: q.negative,
                        thresholds,
                        video: VideoRule {
                            query_match_percent: q
                                .vpdq_query_match_percent
                                .unwrap_or(VideoRule::default().query_match_percent),
                            compared_match_percent: q
                                .vpdq_compared_match_percent
                                .unwrap_or(VideoRule::default().compared_match_percent),
                        },
                    },
                    actor,
                )
                .map_err(|e| store_status(&e))?;
            refresh(st);
            tracing::info!(list = %meta.name, actor, "list created");
            Ok(list_info(&meta))
        })
        .await
    }

    async fn get_list(
        &self,
        req: Request<pb::GetListRequest>,
    ) -> Result<Response<pb::ListInfo>, Status> {
        self.call(Rpc::GetList, req, |st, q, _| {
            st.store
                .list(&q.name)
                .map(|m| list_info(&m))
                .map_err(|e| store_status(&e))
        })
        .await
    }

    async fn list_lists(
        &self,
        req: Request<pb::ListListsRequest>,
    ) -> Result<Response<pb::ListListsResponse>, Status> {
        self.call(Rpc::ListLists, req, |st, _, _| {
            let lists = st.store.lists().map_err(|e| store_status(&e))?;
            Ok(pb::ListListsResponse {
                lists: lists.iter().map(list_info).collect(),
            })
        })
        .await
    }

    async fn import_list(
        &self,
        req: Request<Streaming<pb::ImportListRequest>>,
    ) -> Result<Response<pb::ImportListResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let st = self.state.clone();
            let who = st.auth.check(&req, Rpc::ImportList)?;
            st.check_writable(Rpc::ImportList)?;
            let mut inbound = req.into_inner();
            let header = match inbound.message().await?.and_then(|m| m.part) {
                Some(pb::import_list_request::Part::Header(h)) => h,
                _ => {
                    return Err(invalid(
                        "the first message of ImportList must carry the header (list, format)",
                    ));
                }
            };
            let fmt = format(header.format)?;
            // Refuse an unknown list before reading the upload.
            {
                let (st, name) = (st.clone(), header.list.clone());
                st.clone()
                    .blocking(move || st.store.list(&name).map_err(|e| store_status(&e)))
                    .await?;
            }
            let source = if header.source.is_empty() {
                "grpc".to_string()
            } else {
                header.source
            };
            let (tx, rx) = mpsc::channel::<Result<Vec<u8>, ()>>(8);
            let list = header.list;
            let entry_id = (!header.entry_id.is_empty()).then_some(header.entry_id);
            let st2 = st.clone();
            let actor = who.name.clone();
            let importer = tokio::task::spawn_blocking(move || {
                let reader = BufReader::with_capacity(
                    1 << 20,
                    ChannelReader {
                        rx,
                        buf: Vec::new(),
                        pos: 0,
                    },
                );
                let r = import::import_as(
                    &st2.store,
                    &list,
                    fmt,
                    reader,
                    &source,
                    entry_id.as_deref(),
                    &actor,
                );
                if r.is_ok() {
                    refresh(&st2);
                }
                r
            });
            let mut bytes = 0u64;
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ImportListRequest {
                        part: Some(pb::import_list_request::Part::Data(d)),
                    })) => {
                        bytes += d.len() as u64;
                        if tx.send(Ok(d)).await.is_err() {
                            // The importer stopped early (a malformed file): its error says why.
                            break;
                        }
                    }
                    Ok(Some(_)) => {
                        let _ = tx.send(Err(())).await;
                        drop(tx);
                        let _ = importer.await;
                        return Err(invalid(
                            "after the header, ImportList messages must carry data only; nothing was imported",
                        ));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(())).await;
                        drop(tx);
                        let _ = importer.await;
                        return Err(e);
                    }
                }
            }
            drop(tx);
            let (report, meta) = importer
                .await
                .map_err(|_| Status::internal("the import failed; see the server log"))?
                .map_err(import_status)?;
            tracing::info!(list = %meta.name, actor = %who.name, bytes, records = report.records,
                errors = report.counts.errors, version = meta.version, "list imported");
            Ok(pb::ImportListResponse {
                list: report.list,
                records: report.records,
                version_from: report.version_from,
                version_to: report.version_to,
                counts: Some(counts(&report.counts)),
                errors: report
                    .errors
                    .into_iter()
                    .map(|e| pb::RecordError {
                        at: e.at,
                        message: e.message,
                    })
                    .collect(),
            })
        }
        .await;
        self.state.finish(Rpc::ImportList, t0, &r);
        r.map(Response::new)
    }

    async fn remove_entries(
        &self,
        req: Request<pb::RemoveEntriesRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.call(Rpc::RemoveEntries, req, |st, q, actor| {
            tombstone(
                st,
                actor,
                "list.remove",
                &q.list,
                &q.hashes,
                &q.external_ids,
                &q.reason,
            )
        })
        .await
    }

    async fn tombstone_entries(
        &self,
        req: Request<pb::TombstoneEntriesRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.call(Rpc::TombstoneEntries, req, |st, q, actor| {
            tombstone(
                st,
                actor,
                "list.tombstone",
                &q.list,
                &q.hashes,
                &q.external_ids,
                &q.reason,
            )
        })
        .await
    }

    type ExportListStream = ReceiverStream<Result<pb::ExportListChunk, Status>>;

    async fn export_list(
        &self,
        req: Request<pb::ExportListRequest>,
    ) -> Result<Response<Self::ExportListStream>, Status> {
        let t0 = Instant::now();
        let r = async {
            let st = self.state.clone();
            let who = st.auth.check(&req, Rpc::ExportList)?;
            let q = req.into_inner();
            let fmt = match pb::ExportFormat::try_from(q.format) {
                Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Csv) => ExportFormat::Csv,
                Ok(pb::ExportFormat::Jsonl) => ExportFormat::Jsonl,
                Err(_) => return Err(invalid("format: use csv or jsonl")),
            };
            let meta = {
                let (st, name) = (st.clone(), q.list.clone());
                st.clone()
                    .blocking(move || st.store.list(&name).map_err(|e| store_status(&e)))
                    .await?
            };
            let (tx, rx) = mpsc::channel(4);
            tokio::task::spawn_blocking(move || {
                let mut w = ChannelWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(EXPORT_CHUNK),
                };
                let r = export::export(&st.store, &meta, fmt, q.include_deleted, &mut w)
                    .and_then(|n| w.flush().map(|_| n).map_err(|e| crate::store::StoreError::Invalid(e.to_string())));
                match r {
                    Ok(n) => tracing::info!(list = %meta.name, actor = %who.name, entries = n, "list exported"),
                    Err(e) => {
                        // A client that went away needs no answer; anything else ends the stream
                        // with an error.
                        if !tx.is_closed() {
                            let _ = tx.blocking_send(Err(store_status(&e)));
                        }
                    }
                }
            });
            Ok(ReceiverStream::new(rx))
        }
        .await;
        self.state.finish(Rpc::ExportList, t0, &r);
        r.map(Response::new)
    }

    async fn list_stats(
        &self,
        req: Request<pb::ListStatsRequest>,
    ) -> Result<Response<pb::ListStatsResponse>, Status> {
        self.call(Rpc::ListStats, req, |st, q, _| {
            let metas = if q.list.is_empty() {
                st.store.lists()
            } else {
                st.store.list(&q.list).map(|m| vec![m])
            }
            .map_err(|e| store_status(&e))?;
            let mut out = Vec::with_capacity(metas.len());
            for m in metas {
                let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
                let mut tombstones = 0u64;
                st.store
                    .scan_list_raw(&m, |prefix, deleted, _| {
                        if deleted {
                            tombstones += 1;
                        } else if let Some((_, ty, _)) = crate::store::parse_entry_prefix(prefix) {
                            *by_type.entry(ty.to_string()).or_default() += 1;
                        }
                        Ok(())
                    })
                    .map_err(|e| store_status(&e))?;
                out.push(pb::ListStat {
                    list: m.name,
                    version: m.version,
                    negative: m.negative,
                    live_entries: by_type.values().sum(),
                    by_type: by_type.into_iter().collect(),
                    tombstones,
                    updated: m.updated,
                });
            }
            Ok(pb::ListStatsResponse { lists: out })
        })
        .await
    }

    async fn get_list_audit(
        &self,
        req: Request<pb::GetListAuditRequest>,
    ) -> Result<Response<pb::GetListAuditResponse>, Status> {
        self.call(Rpc::GetListAudit, req, |st, q, _| {
            let limit = match q.limit {
                0 => 1000,
                n => n.min(1000) as usize,
            };
            let records = st
                .store
                .audit()
                .map_err(|e| store_status(&e))?
                .into_iter()
                .filter(|a| a.seq > q.after_seq)
                .take(limit)
                .map(|a| pb::ListAuditRecord {
                    seq: a.seq,
                    at: a.at,
                    actor: a.actor,
                    action: a.action,
                    list: a.list,
                    version_from: a.version_from,
                    version_to: a.version_to,
                    counts: Some(counts(&a.counts)),
                    detail: a.detail.unwrap_or_default(),
                })
                .collect();
            Ok(pb::GetListAuditResponse { records })
        })
        .await
    }
}
