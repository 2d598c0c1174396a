//! Reports through the service: matches with a context become reports through the sink (a
//! backend in memory, and the real signed store), the report API serves them, and an online
//! backup through the admin RPC restores lists and reports. The real server on 127.0.0.1.

mod common;

use std::time::Duration;

use baken::service::{self, ServiceConfig, pb};
use pb::admin_service_client::AdminServiceClient;
use pb::list_service_client::ListServiceClient;
use pb::report_service_client::ReportServiceClient;
use pb::scan_service_client::ScanServiceClient;
use tonic::{Code, Status};

use common::service::*;

// ------------------------------------------------------------------ reports through the traits

/// A report backend in memory, recording exactly what the service hands over (the real store
/// is exercised by `scans_become_signed_reports_that_the_report_api_serves`).
/// (content reference, MD5, matched entries, actor) of a created report.
type Created = (String, String, Vec<String>, String);

#[derive(Default)]
struct MemoryReports {
    created: std::sync::Mutex<Vec<Created>>,
    scans: std::sync::Mutex<service::reports::ScanCounts>,
}

impl service::ReportSink for MemoryReports {
    type Context = pb::ReportContext;
    type Error = Status;

    fn create(
        &self,
        r: service::reports::NewReport<'_>,
    ) -> Result<service::reports::CreatedReport, Status> {
        let mut c = self.created.lock().unwrap();
        let id = format!("r-{}", c.len() + 1);
        c.push((
            r.context.content_reference.clone(),
            r.hashes.md5.clone().unwrap_or_default(),
            r.matches.iter().map(|m| m.entry.clone()).collect(),
            r.actor.to_string(),
        ));
        Ok(service::reports::CreatedReport {
            report_id: id,
            status: "pending_review".into(),
            retention_deadline: None,
        })
    }

    fn record_scans(&self, counts: service::reports::ScanCounts) -> Result<(), Status> {
        let mut s = self.scans.lock().unwrap();
        s.matched += counts.matched;
        s.not_matched += counts.not_matched;
        s.failed += counts.failed;
        Ok(())
    }
}

impl service::ReportBackend for MemoryReports {
    fn get(&self, req: &pb::GetReportRequest, _: &service::Identity) -> Result<pb::Report, Status> {
        let c = self.created.lock().unwrap();
        let i: usize = req
            .report_id
            .trim_start_matches("r-")
            .parse()
            .map_err(|_| Status::not_found("no such report"))?;
        let (cref, ..) = c
            .get(i - 1)
            .ok_or_else(|| Status::not_found("no such report"))?;
        Ok(pb::Report {
            state: Some(pb::ReportState {
                report_id: req.report_id.clone(),
                status: "pending_review".into(),
                ..Default::default()
            }),
            body_json: format!("{{\"content_reference\":\"{cref}\"}}").into_bytes(),
        })
    }
    fn list(
        &self,
        _: &pb::ListReportsRequest,
        _: &service::Identity,
    ) -> Result<pb::ListReportsResponse, Status> {
        Ok(pb::ListReportsResponse::default())
    }
    fn export(
        &self,
        _: &pb::ExportReportRequest,
        _: &service::Identity,
    ) -> Result<pb::ExportReportResponse, Status> {
        Err(Status::failed_precondition("pending review"))
    }
    fn review(
        &self,
        _: &pb::ReviewReportRequest,
        w: &service::Identity,
    ) -> Result<pb::ReportState, Status> {
        Ok(pb::ReportState {
            reviewer: w.name.clone(),
            ..Default::default()
        })
    }
    fn verify(
        &self,
        _: &pb::VerifyReportsRequest,
        _: &service::Identity,
    ) -> Result<pb::VerifyReportsResponse, Status> {
        Ok(pb::VerifyReportsResponse {
            ok: true,
            ..Default::default()
        })
    }
    fn statistics(
        &self,
        _: &pb::ReportStatisticsRequest,
        _: &service::Identity,
    ) -> Result<pb::ReportStatisticsResponse, Status> {
        Ok(pb::ReportStatisticsResponse::default())
    }
    fn audit(
        &self,
        _: &pb::GetReportAuditRequest,
        _: &service::Identity,
    ) -> Result<pb::GetReportAuditResponse, Status> {
        Ok(pb::GetReportAuditResponse::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_with_a_context_become_reports_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ServiceConfig {
        listen: "127.0.0.1:0".into(),
        data: dir.path().join("data"),
        demo_list: false,
        ..ServiceConfig::default()
    };
    c.metrics.listen = "off".into();
    let store = service::open_store(&c).unwrap();
    let backend = std::sync::Arc::new(MemoryReports::default());
    let running = service::start(c, store, Some(backend.clone()))
        .await
        .unwrap();
    let ch = channel(running.addr).await;
    let (mut scan, mut lists, mut reports) = (
        ScanServiceClient::new(ch.clone()),
        ListServiceClient::new(ch.clone()),
        ReportServiceClient::new(ch),
    );
    let img = common::generated_png(80, 60, 44);
    let md5 = format!("{:032x}", md5_digest(&img));
    create_list(&mut lists, "known", None).await;
    import_csv(&mut lists, "known", &format!("md5,{md5},A1,case-7\n"), None)
        .await
        .unwrap();

    let ctx = |cref: &str| pb::ReportContext {
        content_reference: cref.into(),
        account: Some(pb::Account {
            id: "acct-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = scan
        .scan(pb::ScanRequest {
            image: img.clone(),
            context: Some(ctx("upload-77")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.report_id.as_str(), r.report_status.as_str()),
        ("r-1", "pending_review")
    );
    // The privacy path reports too.
    let r = scan
        .match_hashes(pb::MatchHashesRequest {
            hashes: vec![pb::HashValue {
                r#type: "md5".into(),
                value: md5.clone(),
                ..Default::default()
            }],
            context: Some(ctx("upload-78")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.report_id, "r-2");
    // No match, no report; a match without a content reference is refused.
    let r = scan
        .scan(pb::ScanRequest {
            image: common::generated_png(80, 60, 45),
            context: Some(ctx("upload-79")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.report_id.is_empty() && r.report_note.is_empty());
    let e = scan
        .scan(pb::ScanRequest {
            image: img.clone(),
            context: Some(ctx(" ")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    {
        let created = backend.created.lock().unwrap();
        assert_eq!(created.len(), 2);
        assert_eq!(created[0].0, "upload-77");
        assert_eq!(created[0].1, md5);
        assert_eq!(created[0].2, vec!["case-7".to_string()]);
        assert_eq!(created[0].3, "anonymous");
        assert_eq!(created[1].0, "upload-78");
    }
    // ReportService delegates to the backend.
    let got = reports
        .get_report(pb::GetReportRequest {
            report_id: "r-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        String::from_utf8(got.body_json)
            .unwrap()
            .contains("upload-77")
    );
    let e = reports
        .get_report(pb::GetReportRequest {
            report_id: "r-9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = reports
        .export_report(pb::ExportReportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        reports
            .verify_reports(pb::VerifyReportsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .ok
    );
    // Scan outcomes reach the statistics in a batch (at the latest at shutdown).
    running.shutdown().await;
    let s = *backend.scans.lock().unwrap();
    assert_eq!((s.matched, s.not_matched), (3, 1), "{s:?}");
}

/// The whole duty cycle over the API against the real, signed report store: a scan with a
/// context creates a report; it is read, refused for export until reviewed, reviewed, exported
/// in both formats, verified, counted and audited — and holds no image bytes.
#[tokio::test]
async fn scans_become_signed_reports_that_the_report_api_serves() {
    let (running, dir) = start(|_| {}).await;
    let ch = channel(running.addr).await;
    let (mut scan, mut lists, mut reports) = (
        ScanServiceClient::new(ch.clone()),
        ListServiceClient::new(ch.clone()),
        ReportServiceClient::new(ch),
    );
    let img = common::generated_png(96, 64, 91);
    let hashed = hash_image(&mut scan, img.clone()).await;
    let pdq = hashed.pdq.as_ref().unwrap().hash.clone();
    create_list(&mut lists, "known", None).await;
    import_csv(&mut lists, "known", &format!("pdq,{pdq},A1,case-9\n"), None)
        .await
        .unwrap();
    let ctx = |cref: &str| pb::ReportContext {
        content_reference: cref.into(),
        account: Some(pb::Account {
            id: "acct-9".into(),
            ..Default::default()
        }),
        ip_events: vec![pb::IpEvent {
            ip: "192.0.2.44".into(),
            port: 443,
            at: "2026-11-01T10:00:00Z".into(),
            event: "upload".into(),
            possible_proxy: false,
        }],
        service: "photos".into(),
        ..Default::default()
    };
    // The list import shows in matching after the refresh interval.
    let mut created = None;
    for _ in 0..50 {
        let r = scan
            .scan(pb::ScanRequest {
                image: img.clone(),
                context: Some(ctx("vault://upload/9")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if !r.report_id.is_empty() {
            assert_eq!(r.report_status, "pending_review");
            created = Some(r.report_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = created.expect("a matching scan with a context creates a report");
    // A bad context is refused with a message naming the field.
    let e = scan
        .scan(pb::ScanRequest {
            image: img.clone(),
            context: Some(pb::ReportContext {
                ip_events: vec![pb::IpEvent {
                    ip: "not-an-ip".into(),
                    ..Default::default()
                }],
                ..ctx("vault://upload/10")
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("not-an-ip"), "{}", e.message());

    let r = reports
        .get_report(pb::GetReportRequest {
            report_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state.as_ref().unwrap().status, "pending_review");
    let body = String::from_utf8(r.body_json.clone()).unwrap();
    for needle in [
        &pdq,
        "vault://upload/9",
        "acct-9",
        "192.0.2.44",
        "case-9",
        "known",
    ] {
        assert!(body.contains(needle), "report body lacks {needle}: {body}");
    }
    // Not ready to send before review; a draft preview is allowed.
    let e = reports
        .export_report(pb::ExportReportRequest {
            report_id: id.clone(),
            format: "ncmec-xml".into(),
            draft: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let e = reports
        .review_report(pb::ReviewReportRequest {
            report_id: id.clone(),
            decision: "confirm".into(),
            reviewer: "jane@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "reviewers are pseudonyms");
    let s = reports
        .review_report(pb::ReviewReportRequest {
            report_id: id.clone(),
            decision: "confirm".into(),
            reviewer: "rev-17".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (s.status.as_str(), s.reviewer.as_str()),
        ("ready_to_send", "rev-17")
    );
    let xml = reports
        .export_report(pb::ExportReportRequest {
            report_id: id.clone(),
            format: "ncmec-xml".into(),
            draft: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(xml.content_type, "application/xml");
    let xml = String::from_utf8(xml.document).unwrap();
    assert!(xml.contains(&pdq) && xml.contains("192.0.2.44"), "{xml}");
    let json = reports
        .export_report(pb::ExportReportRequest {
            report_id: id.clone(),
            format: "csar-json".into(),
            draft: false,
        })
        .await
        .unwrap()
        .into_inner();
    let doc: serde_json::Value = serde_json::from_slice(&json.document).unwrap();
    assert!(doc.to_string().contains(&pdq));

    let v = reports
        .verify_reports(pb::VerifyReportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok && v.reports == 1 && v.problems.is_empty(), "{v:?}");
    let ready = reports
        .list_reports(pb::ListReportsRequest {
            status: "ready_to_send".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready.reports.len(), 1);
    let st = reports
        .report_statistics(pb::ReportStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.reports_created, st.reviews_confirmed), (1, 1));
    let audit = reports
        .get_report_audit(pb::GetReportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.records.iter().map(|a| a.action.as_str()).collect();
    for a in [
        "report.create",
        "report.read",
        "report.review",
        "report.export",
        "report.verify",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    // Nothing of the image reached the data directory.
    let data = dir.path().join("data");
    let mut files = vec![data];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            let n = img.len();
            for w in [n / 5, 2 * n / 5, 3 * n / 5, 4 * n / 5].map(|at| &img[at..at + 64]) {
                assert!(
                    !bytes.windows(64).any(|x| x == w),
                    "image bytes in {}",
                    p.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen > 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_through_the_admin_rpc_restores_lists_and_reports() {
    let (running, dir) = start(|_| {}).await;
    let ch = channel(running.addr).await;
    let (mut scan, mut lists, mut admin) = (
        ScanServiceClient::new(ch.clone()),
        ListServiceClient::new(ch.clone()),
        AdminServiceClient::new(ch.clone()),
    );
    let img = common::generated_png(96, 64, 93);
    let pdq = hash_image(&mut scan, img.clone()).await.pdq.unwrap().hash;
    create_list(&mut lists, "known", None).await;
    import_csv(&mut lists, "known", &format!("pdq,{pdq},A1,case-3\n"), None)
        .await
        .unwrap();
    let mut report_id = String::new();
    for _ in 0..50 {
        let r = scan
            .scan(scan_with_context(img.clone(), "vault://upload/3"))
            .await
            .unwrap()
            .into_inner();
        if !r.report_id.is_empty() {
            report_id = r.report_id;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!report_id.is_empty(), "a matching scan creates a report");

    // Refused: a relative path, an existing non-empty directory, a place inside the data
    // directory. Nothing is written for any of them.
    for (dest, why) in [
        ("relative/backup".to_string(), "absolute"),
        (dir.path().display().to_string(), "not empty"),
        (
            dir.path().join("data/inside").display().to_string(),
            "inside the data directory",
        ),
    ] {
        let e = admin
            .backup(pb::BackupRequest {
                destination: dest.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{dest}: {e:?}");
        assert!(e.message().contains(why), "{dest}: {}", e.message());
    }
    assert!(!dir.path().join("data/inside").exists());

    // While the server keeps serving.
    let dest = dir.path().join("online-backup");
    let (b, again) = tokio::join!(
        admin.backup(pb::BackupRequest {
            destination: dest.display().to_string(),
        }),
        scan.scan(pb::ScanRequest {
            image: img.clone(),
            ..Default::default()
        })
    );
    let b = b.unwrap().into_inner();
    assert!(again.is_ok());
    assert_eq!(b.lists.len(), 1);
    assert_eq!((b.lists[0].name.as_str(), b.lists[0].version), ("known", 1));
    assert_eq!(b.ledger_head_seq, 1);
    assert_eq!(b.skipped.len(), 2);
    running.shutdown().await;

    // The copy checks out against its manifest and its signatures, and restores: a store
    // opened on it has the list, its entry and the report.
    let check = baken::backup::verify(&dest, None).unwrap();
    assert!(
        check.ok,
        "{:?} {:?}",
        check.problems, check.reports.problems
    );
    assert_eq!(check.manifest.mode, "online");
    assert_eq!(check.reports.head_digest, b.ledger_head_digest);
    let store = std::sync::Arc::new(baken::store::Store::open(&dest).unwrap());
    assert_eq!(store.list("known").unwrap().live_entries, 1);
    let (signer, created) = baken::reports::sign::Signer::load_or_generate(&dest).unwrap();
    assert!(!created, "the signing key came along");
    let rs = baken::reports::store::ReportStore::new(
        store,
        Some(signer),
        baken::reports::ReportConfig::default(),
    )
    .unwrap();
    let r = rs
        .get(&report_id, "restore-check", time::OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(
        r.body.unwrap().files[0].content_reference,
        "vault://upload/3"
    );
}
