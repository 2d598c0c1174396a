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
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::State;
use super::auth::{Identity, Rpc};
use super::pb;

pub use crate::engine::{CreatedReport, ReportSink};
pub use crate::reports::ScanCounts;

/// What the service hands a report backend for one matched item: the caller's context as
/// the API sent it.
pub type NewReport<'a> = crate::engine::NewReport<'a, pb::ReportContext>;

/// The report store as the API sees it. Each method gets the authenticated caller (for the
/// access audit) and returns API messages or a status (NOT_FOUND, FAILED_PRECONDITION,
/// INVALID_ARGUMENT, INTERNAL).
pub trait ReportBackend: ReportSink<Context = pb::ReportContext, Error = Status> {
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
