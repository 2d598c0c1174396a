//! ReportService: a thin adapter over a [`ReportBackend`], and [`ReportSink`], through which a
//! Scan or MatchHashes with a caller context turns a match into a report.
//!
//! The report model (signed, chained reports, review, retention, statistics, exports) lives in
//! the reports module, which implements these traits. A server started without a backend
//! answers matches without a report (`report_note` says why) and ReportService RPCs with
//! UNIMPLEMENTED.
//!
//! Both traits are synchronous: implementations write RocksDB with synced batches, and the
//! service calls them on the blocking pool, never on the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::State;
use super::auth::{Identity, Rpc};
use super::pb;
use crate::hashing::HashOutput;
use crate::index::Match;

/// What the service hands over to create a report for one matched item.
pub struct NewReport<'a> {
    /// The caller's context (content reference, account, IP events, …), as sent.
    pub context: &'a pb::ReportContext,
    /// The item's hashes: computed by Baken (Scan) or sent by the caller (MatchHashes). Only
    /// matched items get here.
    pub hashes: &'a HashOutput,
    /// The matches (suppressed ones are not reported).
    pub matches: &'a [Match],
    /// The authenticated caller, recorded as the report's creator.
    pub actor: &'a Identity,
}

/// A created report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedReport {
    pub report_id: String,
    /// pending_review | ready_to_send.
    pub status: String,
}

/// Scan outcomes, for the transparency statistics' volume figures. Nothing else about scanned
/// content is passed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub matched: u64,
    pub not_matched: u64,
    /// All matches suppressed by a negative list (counted in `not_matched` too).
    pub suppressed: u64,
    /// Could not be decoded.
    pub failed: u64,
}

/// Creates reports from matches.
pub trait ReportSink: Send + Sync {
    /// Create the report of one matched item. Errors are statuses: INVALID_ARGUMENT for a bad
    /// context (e.g. no content_reference), INTERNAL for storage faults.
    fn create(&self, report: NewReport<'_>) -> Result<CreatedReport, Status>;

    /// Add scan outcomes to the statistics (called in batches every few seconds).
    fn record_scans(&self, _counts: ScanCounts) -> Result<(), Status> {
        Ok(())
    }
}

/// The report store as the API sees it. Each method gets the authenticated caller (for the
/// access audit) and returns API messages or a status (NOT_FOUND, FAILED_PRECONDITION,
/// INVALID_ARGUMENT, INTERNAL).
pub trait ReportBackend: ReportSink {
    fn get(&self, req: &pb::GetReportRequest, who: &Identity) -> Result<pb::Report, Status>;
    fn list(
        &self,
        req: &pb::ListReportsRequest,
        who: &Identity,
    ) -> Result<pb::ListReportsResponse, Status>;
    fn export(
        &self,
        req: &pb::ExportReportRequest,
        who: &Identity,
    ) -> Result<pb::ExportReportResponse, Status>;
    fn review(
        &self,
        req: &pb::ReviewReportRequest,
        who: &Identity,
    ) -> Result<pb::ReportState, Status>;
    fn verify(
        &self,
        req: &pb::VerifyReportsRequest,
        who: &Identity,
    ) -> Result<pb::VerifyReportsResponse, Status>;
    fn statistics(
        &self,
        req: &pb::ReportStatisticsRequest,
        who: &Identity,
    ) -> Result<pb::ReportStatisticsResponse, Status>;
    fn audit(
        &self,
        req: &pb::GetReportAuditRequest,
        who: &Identity,
    ) -> Result<pb::GetReportAuditResponse, Status>;
}

/// Scan outcomes counted in memory and handed to the sink in batches.
#[derive(Default)]
pub struct ScanTally {
    matched: AtomicU64,
    not_matched: AtomicU64,
    suppressed: AtomicU64,
    failed: AtomicU64,
}

impl ScanTally {
    pub fn add(&self, matched: bool, suppressed: bool) {
        if matched {
            self.matched.fetch_add(1, Ordering::Relaxed);
        } else {
            self.not_matched.fetch_add(1, Ordering::Relaxed);
            if suppressed {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Hand the counts so far to `sink` (they are dropped without one: nothing to keep them).
    pub fn flush(&self, sink: Option<&dyn ReportBackend>) {
        let counts = ScanCounts {
            matched: self.matched.swap(0, Ordering::Relaxed),
            not_matched: self.not_matched.swap(0, Ordering::Relaxed),
            suppressed: self.suppressed.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
        };
        if counts == ScanCounts::default() {
            return;
        }
        if let Some(s) = sink
            && let Err(e) = s.record_scans(counts)
        {
            // Kept for the next flush: a sink that is down for a while (a replica's writer)
            // must not cost the statistics their volumes.
            self.matched.fetch_add(counts.matched, Ordering::Relaxed);
            self.not_matched
                .fetch_add(counts.not_matched, Ordering::Relaxed);
            self.suppressed
                .fetch_add(counts.suppressed, Ordering::Relaxed);
            self.failed.fetch_add(counts.failed, Ordering::Relaxed);
            tracing::warn!(error = %e.message(), "scan counts not recorded yet; kept for the next attempt");
        }
    }
}

/// The message a Scan answer carries when no report could be created for a match.
pub const NO_BACKEND_NOTE: &str =
    "reports are not enabled on this server: the match is answered but no report was created";

pub struct ReportSvc {
    state: Arc<State>,
}

impl ReportSvc {
    pub fn new(state: Arc<State>) -> Self {
        ReportSvc { state }
    }

    /// Authorise, then run `f` against the backend on the blocking pool.
    async fn call<Q, R, F>(&self, rpc: Rpc, req: Request<Q>, f: F) -> Result<Response<R>, Status>
    where
        Q: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&dyn ReportBackend, &Q, &Identity) -> Result<R, Status> + Send + 'static,
    {
        let t0 = Instant::now();
        let r = async {
            let who = self.state.auth.check(&req, rpc)?;
            let Some(backend) = self.state.reports.clone() else {
                return Err(super::status_with_kind(
                    tonic::Code::Unimplemented,
                    "reports_disabled",
                    format!(
                        "{} is not available: this server runs without the report store",
                        rpc.name()
                    ),
                ));
            };
            let q = req.into_inner();
            self.state
                .blocking(move || f(backend.as_ref(), &q, &who))
                .await
        }
        .await;
        self.state.finish(rpc, t0, &r);
        r.map(Response::new)
    }
}

#[tonic::async_trait]
impl pb::report_service_server::ReportService for ReportSvc {
    async fn get_report(
        &self,
        req: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        self.call(Rpc::GetReport, req, |b, q, w| b.get(q, w)).await
    }

    async fn list_reports(
        &self,
        req: Request<pb::ListReportsRequest>,
    ) -> Result<Response<pb::ListReportsResponse>, Status> {
        self.call(Rpc::ListReports, req, |b, q, w| b.list(q, w))
            .await
    }

    async fn export_report(
        &self,
        req: Request<pb::ExportReportRequest>,
    ) -> Result<Response<pb::ExportReportResponse>, Status> {
        self.call(Rpc::ExportReport, req, |b, q, w| b.export(q, w))
            .await
    }

    async fn review_report(
        &self,
        req: Request<pb::ReviewReportRequest>,
    ) -> Result<Response<pb::ReportState>, Status> {
        self.call(Rpc::ReviewReport, req, |b, q, w| b.review(q, w))
            .await
    }

    async fn verify_reports(
        &self,
        req: Request<pb::VerifyReportsRequest>,
    ) -> Result<Response<pb::VerifyReportsResponse>, Status> {
        self.call(Rpc::VerifyReports, req, |b, q, w| b.verify(q, w))
            .await
    }

    async fn report_statistics(
        &self,
        req: Request<pb::ReportStatisticsRequest>,
    ) -> Result<Response<pb::ReportStatisticsResponse>, Status> {
        self.call(Rpc::ReportStatistics, req, |b, q, w| b.statistics(q, w))
            .await
    }

    async fn get_report_audit(
        &self,
        req: Request<pb::GetReportAuditRequest>,
    ) -> Result<Response<pb::GetReportAuditResponse>, Status> {
        self.call(Rpc::GetReportAudit, req, |b, q, w| b.audit(q, w))
            .await
    }
}
