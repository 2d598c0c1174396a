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
use super::limits::{Deadline, Permit, on_cpu};
use super::reports::{NO_BACKEND_NOTE, NewReport};
use super::{State, decode_status, pb, status_with_kind, store_status};
use crate::hashing::{Algorithm, HashOutput, PdqMode, PdqOutput};
use crate::index::{Match, MatchResult, QueryHash};
use crate::store::HashType;

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

fn pdq_mode(v: i32) -> Result<PdqMode, Status> {
    match pb::PdqMode::try_from(v) {
        Ok(pb::PdqMode::Full) => Ok(PdqMode::Full),
        Ok(pb::PdqMode::Ref512) => Ok(PdqMode::Ref512),
        Err(_) => Err(invalid("invalid", format!("unknown pdq_mode {v}"))),
    }
}

fn algorithm(v: i32) -> Result<Algorithm, Status> {
    use pb::Algorithm as A;
    Ok(match A::try_from(v) {
        Ok(A::Pdq) => Algorithm::Pdq,
        Ok(A::Phash) => Algorithm::Phash,
        Ok(A::Dhash) => Algorithm::Dhash,
        Ok(A::Ahash) => Algorithm::Ahash,
        Ok(A::Blockhash) => Algorithm::Blockhash,
        Ok(A::Md5) => Algorithm::Md5,
        Ok(A::Sha1) => Algorithm::Sha1,
        Ok(A::Sha256) => Algorithm::Sha256,
        Ok(A::Unspecified) | Err(_) => {
            return Err(invalid("invalid", format!("unknown algorithm {v}")));
        }
    })
}

pub fn hash_response(out: &HashOutput) -> pb::HashResponse {
    pb::HashResponse {
        image: out.image.as_ref().map(image_info),
        pdq: out.pdq.as_ref().map(|p| pb::PdqHash {
            hash: p.hash.clone(),
            quality: u32::from(p.quality),
            dihedral: p.dihedral.clone(),
            mode: match p.mode {
                PdqMode::Full => pb::PdqMode::Full as i32,
                PdqMode::Ref512 => pb::PdqMode::Ref512 as i32,
            },
            fast: p.fast,
        }),
        phash: out.phash.clone().unwrap_or_default(),
        dhash: out.dhash.clone().unwrap_or_default(),
        ahash: out.ahash.clone().unwrap_or_default(),
        blockhash: out.blockhash.clone().unwrap_or_default(),
        md5: out.md5.clone().unwrap_or_default(),
        sha1: out.sha1.clone().unwrap_or_default(),
        sha256: out.sha256.clone().unwrap_or_default(),
    }
}

fn image_info(i: &crate::decode::ImageInfo) -> pb::ImageInfo {
    pb::ImageInfo {
        format: i.format.name().to_ascii_lowercase(),
        width: i.width,
        height: i.height,
        colour: i.colour.to_string(),
        alpha: i.alpha,
        bit_depth: u32::from(i.bit_depth),
        exif_orientation: i.exif_orientation.map_or(0, u32::from),
    }
}

pub fn pb_match(m: &Match) -> pb::Match {
    pb::Match {
        list: m.list.clone(),
        list_version: m.list_version,
        hash_type: m.hash_type.to_string(),
        hash: m.hash.clone(),
        entry: m.entry.clone(),
        distance: m.distance,
        threshold: m.threshold,
        transform: m.transform.unwrap_or_default().to_string(),
        classification: m.classification.clone().unwrap_or_default(),
        media_type: m.media_type.clone().unwrap_or_default(),
    }
}

pub fn match_result(r: &MatchResult) -> pb::MatchResult {
    pb::MatchResult {
        matches: r.matches.iter().map(pb_match).collect(),
        suppressed: r
            .suppressed
            .iter()
            .map(|s| pb::Suppressed {
                matched: Some(pb_match(&s.matched)),
                by: Some(pb_match(&s.by)),
            })
            .collect(),
        skipped: r
            .skipped
            .iter()
            .map(|s| pb::Skipped {
                hash_type: s.hash_type.to_string(),
                reason: s.reason.clone(),
            })
            .collect(),
    }
}

/// Parse the caller's hashes into query hashes (and the same hashes in the shape reports
/// take). Malformed values are INVALID_ARGUMENT naming the offending item by position, never
/// echoing the value.
fn parse_hashes(
    hashes: &[pb::HashValue],
    max: usize,
) -> Result<(Vec<QueryHash>, HashOutput), Status> {
    if hashes.is_empty() {
        return Err(invalid("invalid", "no hashes given"));
    }
    if hashes.len() > max {
        return Err(status_with_kind(
            Code::InvalidArgument,
            "too_many_hashes",
            format!(
                "{} hashes in one request, over the limit of {max}",
                hashes.len()
            ),
        ));
    }
    let mut q = Vec::with_capacity(hashes.len());
    let mut out = HashOutput::default();
    for (i, h) in hashes.iter().enumerate() {
        let ty = HashType::new(&h.r#type)
            .map_err(|e| invalid("invalid_hash", format!("hashes[{i}]: {e}")))?;
        let value = ty
            .parse_value(&h.value)
            .map_err(|e| invalid("invalid_hash", format!("hashes[{i}]: {e}")))?;
        let quality = match h.quality {
            Some(v) if v > 100 => {
                return Err(invalid(
                    "invalid_hash",
                    format!("hashes[{i}]: quality {v} is over 100"),
                ));
            }
            Some(v) => Some(v as u8),
            None => None,
        };
        if !h.dihedral.is_empty() && ty.as_str() != "pdq" {
            return Err(invalid(
                "invalid_hash",
                format!("hashes[{i}]: dihedral variants are for pdq only"),
            ));
        }
        if h.dihedral.len() > 7 {
            return Err(invalid(
                "invalid_hash",
                format!("hashes[{i}]: at most 7 dihedral variants (rot90 … flipminus1)"),
            ));
        }
        let mut variants = vec![value];
        for (k, d) in h.dihedral.iter().enumerate() {
            variants.push(
                ty.parse_value(d).map_err(|e| {
                    invalid("invalid_hash", format!("hashes[{i}].dihedral[{k}]: {e}"))
                })?,
            );
        }
        // The same hashes as Baken would have computed them, for a report on a match.
        let text = ty.format_value(&variants[0]);
        match ty.as_str() {
            "pdq" => {
                out.pdq = Some(PdqOutput {
                    hash: text,
                    quality: quality.unwrap_or(100),
                    dihedral: variants.iter().map(hex::encode).collect(),
                    mode: PdqMode::Full,
                    fast: false,
                });
            }
            "md5" => out.md5 = Some(text),
            "sha1" => out.sha1 = Some(text),
            "sha256" => out.sha256 = Some(text),
            "phash" => out.phash = Some(text),
            "dhash" => out.dhash = Some(text),
            "ahash" => out.ahash = Some(text),
            "blockhash" => out.blockhash = Some(text),
            _ => {}
        }
        q.push(QueryHash {
            hash_type: ty,
            variants,
            quality,
        });
    }
    Ok((q, out))
}

/// The outcome of matching one item, before any report.
struct Matched {
    result: MatchResult,
    hashes: HashOutput,
}

impl ScanSvc {
    /// Count the outcome and, on a match with a context, create the report.
    async fn conclude(
        &self,
        m: &Matched,
        context: Option<pb::ReportContext>,
        who: &Identity,
    ) -> Result<(String, String, String), Status> {
        let st = &self.state;
        let (matched, suppressed) = (
            !m.result.matches.is_empty(),
            !m.result.suppressed.is_empty(),
        );
        st.tally.add(matched, suppressed);
        st.metrics.scan(if matched {
            "match"
        } else if suppressed {
            "suppressed"
        } else {
            "no_match"
        });
        if !matched {
            return Ok(Default::default());
        }
        for x in &m.result.matches {
            st.metrics.matched(&x.list, x.hash_type.as_str());
        }
        let lists: Vec<&str> = m.result.matches.iter().map(|x| x.list.as_str()).collect();
        tracing::info!(caller = %who.name, matches = m.result.matches.len(), lists = ?lists, "match");
        let Some(ctx) = context else {
            return Ok((
                String::new(),
                String::new(),
                "no report context was given: the match is answered but no report was created"
                    .into(),
            ));
        };
        let Some(sink) = st.reports.clone() else {
            return Ok((String::new(), String::new(), NO_BACKEND_NOTE.into()));
        };
        if ctx.content_reference.trim().is_empty() {
            return Err(invalid(
                "invalid_context",
                "context.content_reference is required to create a report",
            ));
        }
        let (hashes, matches, who2) = (m.hashes.clone(), m.result.matches.clone(), who.clone());
        let created = st
            .blocking(move || {
                sink.create(NewReport {
                    context: &ctx,
                    hashes: &hashes,
                    matches: &matches,
                    actor: &who2,
                })
            })
            .await?;
        tracing::info!(caller = %who.name, report = %created.report_id, status = %created.status, "report created");
        Ok((created.report_id, created.status, String::new()))
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
        let algos = st
            .config
            .scan_hash_algorithms()
            .map_err(|e| Status::internal(e.to_string()))?;
        let hasher = st.hasher(algos, mode, false);
        let pb::ScanRequest {
            image,
            lists,
            context,
            return_hashes,
            ..
        } = req;
        let st2 = st.clone();
        let work = on_cpu(&st.pool, Some(permit), deadline, move || {
            for l in &lists {
                st2.store.list(l).map_err(|e| store_status(&e))?;
            }
            let out = hasher.hash_bytes(&image).map_err(|e| decode_status(&e));
            // The image is not needed past this point.
            drop(image);
            let out = out?;
            let only = (!lists.is_empty()).then_some(lists.as_slice());
            let result = st2
                .matcher
                .match_query(&crate::cli::lists::query_from(&out), only)
                .map_err(|e| store_status(&e))?;
            Ok::<_, Status>(Matched {
                result,
                hashes: out,
            })
        })
        .await?;
        let m = match work {
            Ok(m) => m,
            Err(e) => {
                if e.code() == Code::InvalidArgument || e.code() == Code::ResourceExhausted {
                    st.tally.failed();
                    st.metrics.scan("error");
                }
                return Err(e);
            }
        };
        deadline.check("after the image was processed")?;
        let (report_id, report_status, report_note) = self.conclude(&m, context, who).await?;
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
        let result = on_cpu(&st.pool, Some(permit), deadline, move || {
            for l in &lists {
                st2.store.list(l).map_err(|e| store_status(&e))?;
            }
            let only = (!lists.is_empty()).then_some(lists.as_slice());
            st2.matcher
                .match_query(&query, only)
                .map_err(|e| store_status(&e))
        })
        .await??;
        deadline.check("after matching")?;
        let m = Matched { result, hashes };
        let (report_id, report_status, report_note) = self.conclude(&m, req.context, who).await?;
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
            let hasher = st.hasher(algos, pdq_mode(req.pdq_mode)?, req.fast);
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
