//! The report store behind the API: [`ReportSink`] and [`ReportBackend`] over
//! [`reports::ReportStore`]. The provider's identity, legal basis and recipient come from the
//! server's configuration (`[reports]`); everything about one piece of content comes from the
//! caller's `ReportContext`.

use std::collections::BTreeSet;
use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Code, Status};

use super::auth::Identity;
use super::config::ReportsConfig;
use super::reports::{CreatedReport, NewReport, ReportBackend, ReportSink, ScanCounts};
use super::{convert, pb};
use crate::engine::StoreSink;
use crate::reports::store::ReportStore;
use crate::reports::{self, Decision, ReportError, ReportState, export, stats};

pub struct StoreBackend {
    rs: Arc<ReportStore>,
    /// Creation and counts go through the engine's sink over the same store.
    sink: StoreSink,
    config: ReportsConfig,
}

impl StoreBackend {
    pub fn new(rs: Arc<ReportStore>, config: ReportsConfig) -> StoreBackend {
        let sink = StoreSink {
            store: rs.clone(),
            now: None,
        };
        StoreBackend { rs, sink, config }
    }

    pub fn store(&self) -> &Arc<ReportStore> {
        &self.rs
    }
}

fn invalid(msg: String) -> Status {
    super::status_with_kind(Code::InvalidArgument, "invalid_report_context", msg)
}

/// Report errors as statuses a caller can act on.
fn status(e: ReportError) -> Status {
    let (code, kind) = match &e {
        ReportError::NotFound(_) => (Code::NotFound, "report_not_found"),
        ReportError::Invalid(_) => (Code::InvalidArgument, "invalid_report_request"),
        ReportError::WrongState { .. } => (Code::FailedPrecondition, "report_wrong_state"),
        ReportError::Purged(..) => (Code::FailedPrecondition, "report_purged"),
        ReportError::NoSigningKey | ReportError::Key(_) | ReportError::NotActiveKey { .. } => {
            (Code::FailedPrecondition, "no_signing_key")
        }
        ReportError::Store(_) | ReportError::Corrupt(_) | ReportError::Io(_) => {
            tracing::error!(error = %e, "report store failure");
            return super::status_with_kind(
                Code::Internal,
                "report_store",
                "the report store failed; see the server log".to_string(),
            );
        }
    };
    super::status_with_kind(code, kind, e.to_string())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn state_pb(s: &ReportState) -> pb::ReportState {
    let review = s.human_review.as_ref();
    pb::ReportState {
        report_id: s.report_id.clone(),
        seq: s.seq,
        created_at: s.created_at.clone(),
        retention_deadline: s.retention_deadline.clone(),
        status: s.status.as_str().to_string(),
        auto_ready: s.auto_ready.clone().unwrap_or_default(),
        review_decision: review
            .map(|r| match r.decision {
                Decision::Confirmed => "confirmed",
                Decision::Rejected => "rejected",
            })
            .unwrap_or_default()
            .to_string(),
        reviewer: review
            .map(|r| r.reviewer_pseudonym.clone())
            .unwrap_or_default(),
        reviewed_at: review.map(|r| r.at.clone()).unwrap_or_default(),
        purged_at: s.purged.as_ref().map(|p| p.at.clone()).unwrap_or_default(),
        purge_reason: s
            .purged
            .as_ref()
            .map(|p| p.reason.as_str().to_string())
            .unwrap_or_default(),
        abuse_type: s.abuse_type.as_str().to_string(),
        recipient: s.recipient.clone(),
    }
}

impl ReportSink for StoreBackend {
    type Context = pb::ReportContext;
    type Error = Status;

    fn create(&self, r: NewReport<'_>) -> Result<CreatedReport, Status> {
        if r.context.content_reference.trim().is_empty() {
            return Err(invalid(
                "report_context.content_reference is required: the provider's pointer to the content it keeps".into(),
            ));
        }
        let ctx = convert::caller_context(&self.config, r.context)?;
        self.sink
            .create(crate::engine::NewReport {
                context: &ctx,
                hashes: r.hashes,
                matches: r.matches,
                actor: r.actor,
            })
            .map_err(status)
    }

    fn record_scans(&self, c: ScanCounts) -> Result<(), Status> {
        self.sink.record_scans(c).map_err(status)
    }
}

impl ReportBackend for StoreBackend {
    fn get(&self, req: &pb::GetReportRequest, who: &Identity) -> Result<pb::Report, Status> {
        let r = self
            .rs
            .get(&req.report_id, &who.name, now())
            .map_err(status)?;
        // The body as signed: the canonical serialisation is compact, in declaration order.
        let body_json = match &r.body {
            Some(b) => {
                serde_json::to_vec(b).map_err(|e| status(ReportError::Corrupt(e.to_string())))?
            }
            None => Vec::new(),
        };
        Ok(pb::Report {
            state: Some(state_pb(&r.state)),
            body_json,
        })
    }

    fn list(
        &self,
        req: &pb::ListReportsRequest,
        who: &Identity,
    ) -> Result<pb::ListReportsResponse, Status> {
        let bound = |s: &str| -> Result<Option<OffsetDateTime>, Status> {
            if s.is_empty() {
                return Ok(None);
            }
            reports::parse_time(s)
                .map(Some)
                .map_err(|_| invalid(format!("{s:?} is not an RFC 3339 time")))
        };
        let (after, before) = (bound(&req.created_after)?, bound(&req.created_before)?);
        let after_seq: u64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| invalid("page_token: pass back next_page_token as given".into()))?
        };
        let page = match req.page_size {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let all = self.rs.list(&who.name, now()).map_err(status)?;
        let mut out = Vec::new();
        let mut next = String::new();
        for s in all.iter().filter(|s| s.seq > after_seq) {
            let created = reports::parse_time(&s.created_at).ok();
            let keep = (req.status.is_empty() || s.status.as_str() == req.status)
                && (req.recipient.is_empty() || s.recipient == req.recipient)
                && (req.abuse_type.is_empty() || s.abuse_type.as_str() == req.abuse_type)
                && after.is_none_or(|a| created.is_some_and(|c| c >= a))
                && before.is_none_or(|b| created.is_some_and(|c| c < b));
            if !keep {
                continue;
            }
            if out.len() == page {
                next = out
                    .last()
                    .map(|l: &pb::ReportState| l.seq.to_string())
                    .unwrap_or_default();
                break;
            }
            out.push(state_pb(s));
        }
        Ok(pb::ListReportsResponse {
            reports: out,
            next_page_token: next,
        })
    }

    fn export(
        &self,
        req: &pb::ExportReportRequest,
        who: &Identity,
    ) -> Result<pb::ExportReportResponse, Status> {
        let format = match req.format.as_str() {
            "" | "csar-json" => "csar-json",
            "ncmec-xml" => "ncmec-xml",
            other => return Err(invalid(format!("format {other:?}: csar-json or ncmec-xml"))),
        };
        let (report, entry) = self
            .rs
            .get_for_export(&req.report_id, format, req.draft, &who.name, now())
            .map_err(status)?;
        let (document, content_type) = if format == "ncmec-xml" {
            (
                export::ncmec_xml(&report).map_err(status)?,
                "application/xml",
            )
        } else {
            (
                export::csar_json(
                    &report,
                    &entry,
                    // The key that signed this entry, which a rotation may have retired since.
                    self.rs
                        .public_key_for(&entry.entry.key_id)
                        .map_err(status)?
                        .as_ref(),
                    req.draft,
                )
                .map_err(status)?,
                "application/json",
            )
        };
        Ok(pb::ExportReportResponse {
            report_id: report.state.report_id,
            format: format.to_string(),
            content_type: content_type.to_string(),
            document: document.into_bytes(),
        })
    }

    fn review(
        &self,
        req: &pb::ReviewReportRequest,
        who: &Identity,
    ) -> Result<pb::ReportState, Status> {
        let decision: Decision = req.decision.parse().map_err(invalid)?;
        let reviewer = if req.reviewer.is_empty() {
            // Identity names are `token:NAME` / `cert:NAME`: pseudonyms by construction.
            who.name.replace([' ', '@'], "_")
        } else {
            req.reviewer.clone()
        };
        let s = self
            .rs
            .review(&req.report_id, decision, &reviewer, &who.name, now())
            .map_err(status)?;
        Ok(state_pb(&s))
    }

    fn verify(
        &self,
        req: &pb::VerifyReportsRequest,
        who: &Identity,
    ) -> Result<pb::VerifyReportsResponse, Status> {
        let key = if req.public_key.is_empty() {
            self.rs.public_key().ok_or_else(|| {
                status(ReportError::Key(
                    "this server has no signing key; pass public_key".into(),
                ))
            })?
        } else {
            reports::sign::PublicKey::parse(&req.public_key)
                .map_err(|e| invalid(format!("public_key: {e}")))?
        };
        let v = self.rs.verify(&key, &who.name, now()).map_err(status)?;
        Ok(pb::VerifyReportsResponse {
            ok: v.ok,
            key_id: v.key_id,
            entries: v.entries,
            reports: v.reports,
            purged: v.purged,
            head_seq: v.head_seq,
            head_digest: v.head_digest,
            audit_records: v.audit_records,
            problems: v
                .problems
                .into_iter()
                .map(|p| pb::VerifyProblem {
                    seq: p.seq.unwrap_or_default(),
                    report_id: p.report_id.unwrap_or_default(),
                    kind: p.kind.to_string(),
                    message: p.message,
                })
                .collect(),
        })
    }

    fn statistics(
        &self,
        req: &pb::ReportStatisticsRequest,
        who: &Identity,
    ) -> Result<pb::ReportStatisticsResponse, Status> {
        let today = reports::day(now());
        let from = if req.from.is_empty() {
            "0000-01-01".to_string()
        } else {
            req.from.clone()
        };
        let to = if req.to.is_empty() {
            today
        } else {
            req.to.clone()
        };
        let s = stats::compute(&self.rs, &from, &to).map_err(status)?;
        self.rs
            .audit_stats(&from, &to, &who.name, now())
            .map_err(status)?;
        let statistics_json =
            serde_json::to_vec(&s).map_err(|e| status(ReportError::Corrupt(e.to_string())))?;
        Ok(pb::ReportStatisticsResponse {
            from,
            to,
            scanned: s.volume.processed,
            matched: s.volume.matched,
            reports_created: s.reports.created,
            reviews_confirmed: s.reviews.confirmed,
            reviews_rejected: s.reviews.rejected,
            statistics_json,
        })
    }

    fn audit(
        &self,
        req: &pb::GetReportAuditRequest,
        _who: &Identity,
    ) -> Result<pb::GetReportAuditResponse, Status> {
        let limit = match req.limit {
            0 => 1000,
            n => n.min(10_000) as usize,
        };
        let records = self
            .rs
            .audit_log()
            .map_err(status)?
            .into_iter()
            .filter(|a| a.seq > req.after_seq)
            .take(limit)
            .map(|a| pb::ReportAuditRecord {
                seq: a.seq,
                at: a.at,
                actor: a.actor,
                action: a.action,
                report_id: a.report_id.unwrap_or_default(),
                detail: a.detail.unwrap_or_default(),
            })
            .collect();
        Ok(pb::GetReportAuditResponse { records })
    }
}

/// The report store configuration from the service's `[reports]` section.
pub fn report_config(cfg: &ReportsConfig) -> Result<reports::ReportConfig, String> {
    let retention: reports::Retention = cfg.retention.parse()?;
    Ok(reports::ReportConfig {
        review: reports::ReviewPolicy {
            require_review: cfg.require_review,
            confirmed_lists: cfg.confirmed_lists.iter().cloned().collect::<BTreeSet<_>>(),
            auto_ready_max_distance: 0,
        },
        retention,
    })
}
