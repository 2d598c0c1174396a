//! ScanService: HashImage, Scan, MatchHashes and the bidirectional ScanStream.
//!
//! Every item is admitted under the global in-flight limit, decoded, hashed and matched on the
//! CPU pool, and answered; image bytes are dropped as soon as they are hashed. Logs carry
//! outcomes and list names, never image bytes and never the hashes of content that did not
//! match.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::auth::{Identity, Rpc};
use super::convert::{algorithm, hash_response, image_info, match_result, parse_hashes, pdq_mode};
use super::limits::{Deadline, Permit, on_cpu};
use super::reports::NO_BACKEND_NOTE;
use super::{State, decode_status, engine_status, pb, status_with_kind};
use crate::engine::{EngineError, Outcome, ReportOutcome};
use crate::error::DecodeError;
use crate::hashing::Algorithm;

pub struct ScanSvc {
    state: Arc<State>,
}

impl ScanSvc {
    pub fn new(state: Arc<State>) -> Self {
        ScanSvc { state }
    }
}

fn invalid(kind: &str, msg: impl Into<String>) -> Status {
    status_with_kind(Code::InvalidArgument, kind, msg)
}

impl ScanSvc {
    /// Count the outcome (metrics, scan tally) and, on a match with a context, create the
    /// report through the engine's one sink.
    async fn conclude(
        &self,
        m: Outcome,
        context: Option<pb::ReportContext>,
        who: &Identity,
    ) -> Result<(Outcome, String, String, String), Status> {
        let st = &self.state;
        let media = if m.hashes.video.is_some() {
            "video"
        } else if m.hashes.image.is_some() {
            "image"
        } else {
            "hashes"
        };
        st.metrics.scan(m.verdict().as_str(), media);
        if m.is_match() {
            for x in &m.result.matches {
                st.metrics.matched(&x.list, x.hash_type.as_str());
            }
            let lists: Vec<&str> = m.result.matches.iter().map(|x| x.list.as_str()).collect();
            tracing::info!(caller = %who.name, matches = m.result.matches.len(), lists = ?lists, "match");
            if let Some(ctx) = &context
                && st.reports.is_some()
                && ctx.content_reference.trim().is_empty()
            {
                // Scanned and matched all the same: it counts, though no report can be made.
                st.tally.add(m.verdict());
                return Err(invalid(
                    "invalid_context",
                    "context.content_reference is required to create a report",
                ));
            }
        }
        let (st2, actor) = (st.clone(), who.name.clone());
        let conclude = move |m: Outcome| {
            let sink = st2.reports.as_deref();
            let r = st2
                .engine
                .conclude(&m, &st2.tally, sink, context.as_ref(), &actor);
            r.map(|o| (m, o))
        };
        // Only a report write needs the blocking pool; counting does not.
        let (m, outcome) = if m.is_match() && st.reports.is_some() {
            st.blocking(move || conclude(m)).await?
        } else {
            conclude(m)?
        };
        Ok(match outcome {
            ReportOutcome::NotMatched => (m, String::new(), String::new(), String::new()),
            ReportOutcome::NoContext => (
                m,
                String::new(),
                String::new(),
                "no report context was given: the match is answered but no report was created"
                    .into(),
            ),
            ReportOutcome::NoSink => (m, String::new(), String::new(), NO_BACKEND_NOTE.into()),
            ReportOutcome::Created(c) => {
                tracing::info!(caller = %who.name, report = %c.report_id, status = %c.status, "report created");
                (m, c.report_id, c.status, String::new())
            }
        })
    }

    async fn scan_item(
        &self,
        req: pb::ScanRequest,
        who: &Identity,
        deadline: Deadline,
        permit: Permit,
    ) -> Result<pb::ScanResponse, Status> {
        let st = self.state.clone();
        let mode = pdq_mode(req.pdq_mode)?;
        let mut algos = st
            .config
            .scan_hash_algorithms()
            .map_err(|e| Status::internal(e.to_string()))?;
        // A video's frames match the PDQ lists (and vPDQ lists); images are unaffected.
        if algos.contains(&Algorithm::Pdq) {
            algos.push(Algorithm::Vpdq);
        }
        let hasher = st.engine.hasher(algos, mode, false);
        let pb::ScanRequest {
            image,
            lists,
            context,
            return_hashes,
            ..
        } = req;
        let st2 = st.clone();
        let work = on_cpu(&st.pool, Some(permit), deadline, move || {
            // The image moves into the engine, which drops it once hashed.
            st2.engine.scan(&hasher, image, &lists)
        })
        .await?;
        let m = match work {
            Ok(m) => m,
            Err(e) => {
                // Counted as failed: the item's own fault, not a storage fault of ours.
                if matches!(&e, EngineError::Decode(d) if !matches!(d, DecodeError::Io(_))) {
                    st.tally.failed();
                    st.metrics.scan("error", "unknown");
                }
                return Err(engine_status(&e));
            }
        };
        deadline.check("after the image was processed")?;
        let (m, report_id, report_status, report_note) = self.conclude(m, context, who).await?;
        Ok(pb::ScanResponse {
            image: m.hashes.image.as_ref().map(image_info),
            result: Some(match_result(&m.result)),
            report_id,
            report_status,
            report_note,
            hashes: return_hashes.then(|| hash_response(&m.hashes)),
        })
    }

    async fn match_item(
        &self,
        req: pb::MatchHashesRequest,
        who: &Identity,
        deadline: Deadline,
        permit: Permit,
    ) -> Result<pb::MatchResponse, Status> {
        let st = self.state.clone();
        let (query, hashes) = parse_hashes(&req.hashes, st.config.limits.max_hashes_per_request)?;
        let lists = req.lists;
        let st2 = st.clone();
        let m = on_cpu(&st.pool, Some(permit), deadline, move || {
            st2.engine.check_lists(&lists)?;
            st2.engine.match_hashes(&query, hashes, &lists)
        })
        .await?
        .map_err(|e| engine_status(&e))?;
        deadline.check("after matching")?;
        let (m, report_id, report_status, report_note) = self.conclude(m, req.context, who).await?;
        Ok(pb::MatchResponse {
            result: Some(match_result(&m.result)),
            report_id,
            report_status,
            report_note,
        })
    }
}

/// A status as a stream item's error.
fn item_error(s: &Status) -> pb::ItemError {
    let kind = s
        .metadata()
        .get(super::ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| super::metrics::code_name(s.code()).to_ascii_lowercase());
    pb::ItemError {
        code: s.code() as i32,
        kind,
        message: s.message().to_string(),
    }
}

#[tonic::async_trait]
impl pb::scan_service_server::ScanService for ScanSvc {
    async fn hash_image(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let st = &self.state;
            st.auth.check(&req, Rpc::HashImage)?;
            let deadline = Deadline::from_metadata(req.metadata());
            let permit = st.admission.try_admit(Rpc::HashImage.name())?;
            let req = req.into_inner();
            let mut algos = req
                .algorithms
                .iter()
                .map(|a| algorithm(*a))
                .collect::<Result<Vec<_>, _>>()?;
            if algos.is_empty() {
                algos = vec![
                    Algorithm::Pdq,
                    Algorithm::Md5,
                    Algorithm::Sha1,
                    Algorithm::Sha256,
                ];
            }
            algos.sort();
            algos.dedup();
            let hasher = st.engine.hasher(algos, pdq_mode(req.pdq_mode)?, req.fast);
            let image = req.image;
            let out = on_cpu(&st.pool, Some(permit), deadline, move || {
                hasher.hash_bytes(&image)
            })
            .await?
            .map_err(|e| decode_status(&e))?;
            deadline.check("after the image was hashed")?;
            Ok(hash_response(&out))
        }
        .await;
        self.state.finish(Rpc::HashImage, t0, &r);
        r.map(Response::new)
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let who = self.state.auth.check(&req, Rpc::Scan)?;
            let deadline = Deadline::from_metadata(req.metadata());
            let permit = self.state.admission.try_admit(Rpc::Scan.name())?;
            self.scan_item(req.into_inner(), &who, deadline, permit)
                .await
        }
        .await;
        self.state.finish(Rpc::Scan, t0, &r);
        r.map(Response::new)
    }

    async fn match_hashes(
        &self,
        req: Request<pb::MatchHashesRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let who = self.state.auth.check(&req, Rpc::MatchHashes)?;
            let deadline = Deadline::from_metadata(req.metadata());
            let permit = self.state.admission.try_admit(Rpc::MatchHashes.name())?;
            self.match_item(req.into_inner(), &who, deadline, permit)
                .await
        }
        .await;
        self.state.finish(Rpc::MatchHashes, t0, &r);
        r.map(Response::new)
    }

    async fn scan_upload(
        &self,
        req: Request<Streaming<pb::ScanRequest>>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let t0 = Instant::now();
        let r = async {
            let who = self.state.auth.check(&req, Rpc::ScanUpload)?;
            let deadline = Deadline::from_metadata(req.metadata());
            // Admitted before the bytes arrive: the in-flight limit bounds the memory uploads
            // hold, not only the CPU they use.
            let permit = self.state.admission.try_admit(Rpc::ScanUpload.name())?;
            let mut inbound = req.into_inner();
            let limit = self.state.config.video.max_input_bytes;
            let mut item: Option<pb::ScanRequest> = None;
            while let Some(msg) = inbound.message().await? {
                deadline.check("while the upload was being received")?;
                let size = match item.as_mut() {
                    None => {
                        let n = msg.image.len();
                        item = Some(msg);
                        n
                    }
                    Some(it) => {
                        it.image.extend_from_slice(&msg.image);
                        it.image.len()
                    }
                };
                if size as u64 > limit {
                    return Err(status_with_kind(
                        Code::ResourceExhausted,
                        "too_large",
                        format!("the upload is over the video limit of {limit} bytes"),
                    ));
                }
            }
            let item = item.ok_or_else(|| invalid("invalid", "the upload stream was empty"))?;
            self.scan_item(item, &who, deadline, permit).await
        }
        .await;
        self.state.finish(Rpc::ScanUpload, t0, &r);
        r.map(Response::new)
    }

    type ScanStreamStream = ReceiverStream<Result<pb::ScanStreamResponse, Status>>;

    async fn scan_stream(
        &self,
        req: Request<Streaming<pb::ScanStreamRequest>>,
    ) -> Result<Response<Self::ScanStreamStream>, Status> {
        let who = match self.state.auth.check(&req, Rpc::ScanStream) {
            Ok(w) => w,
            Err(e) => {
                self.state
                    .finish::<()>(Rpc::ScanStream, Instant::now(), &Err(e.clone()));
                return Err(e);
            }
        };
        let deadline = Deadline::from_metadata(req.metadata());
        let mut inbound = req.into_inner();
        let n = self.state.stream_concurrency.max(1);
        // Bounded both ways: at most `n` items are read ahead and in progress, and answers
        // wait in a channel of `n` for a slow reader. Past that the server stops reading the
        // stream, and HTTP/2 flow control slows the sender down.
        let (tx, rx) = mpsc::channel(n);
        let slots = Arc::new(Semaphore::new(n));
        let svc = Arc::new(ScanSvc {
            state: self.state.clone(),
        });
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        // The client broke the stream (or cancelled): nothing to answer.
                        tracing::debug!(error = %e.message(), "scan stream ended by the client");
                        break;
                    }
                };
                let (svc, tx, who) = (svc.clone(), tx.clone(), who.clone());
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let id = msg.request_id;
                    let outcome = match svc.state.admission.try_admit(Rpc::ScanStream.name()) {
                        Err(e) => Err(e),
                        Ok(permit) => match msg.item {
                            Some(pb::scan_stream_request::Item::Scan(s)) => svc
                                .scan_item(s, &who, deadline, permit)
                                .await
                                .map(pb::scan_stream_response::Outcome::Scan),
                            Some(pb::scan_stream_request::Item::Match(m)) => svc
                                .match_item(m, &who, deadline, permit)
                                .await
                                .map(pb::scan_stream_response::Outcome::Match),
                            None => Err(invalid("invalid", "a stream item needs scan or match")),
                        },
                    };
                    svc.state.finish(Rpc::ScanStream, t0, &outcome);
                    let outcome = outcome.unwrap_or_else(|e| {
                        pb::scan_stream_response::Outcome::Error(item_error(&e))
                    });
                    let _ = tx
                        .send(Ok(pb::ScanStreamResponse {
                            request_id: id,
                            outcome: Some(outcome),
                        }))
                        .await;
                    drop(slot);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
