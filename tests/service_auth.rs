//! The service's authorisation as a client meets it: every role against every RPC, bearer
//! tokens, TLS and mutual TLS identities, and the configurations it refuses. The real server
//! on 127.0.0.1.

mod common;

use std::path::Path;

use baken::service::{self, ServiceConfig, pb};
use pb::admin_service_client::AdminServiceClient;
use pb::list_service_client::ListServiceClient;
use pb::report_service_client::ReportServiceClient;
use pb::scan_service_client::ScanServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use common::service::*;

// ------------------------------------------------------------------ authorisation

const TOKENS: [(&str, &str); 6] = [
    ("scanner", "tok-scanner"),
    ("reviewer", "tok-reviewer"),
    ("list_admin", "tok-admin"),
    ("auditor", "tok-auditor"),
    ("replica", "tok-replica"),
    ("admin", "tok-ops"),
];

fn write_tokens(dir: &Path) -> std::path::PathBuf {
    let mut s = String::new();
    for (role, tok) in TOKENS {
        s.push_str(&format!(
            "[[token]]\nname = \"{role}-bot\"\nroles = [\"{role}\"]\nsha256 = \"{}\"\n\n",
            service::auth::token_hash(tok)
        ));
    }
    let p = dir.join("tokens.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// Call one RPC with a minimal valid request; the status code (OK when it succeeded).
async fn call(ch: &Channel, rpc: &str, token: Option<&str>, img: &[u8]) -> Code {
    let mut scan = ScanServiceClient::new(ch.clone());
    let mut lists = ListServiceClient::new(ch.clone());
    let mut reports = ReportServiceClient::new(ch.clone());
    let mut repl = pb::replication_service_client::ReplicationServiceClient::new(ch.clone());
    let a = |m| authed(m, token);
    fn done<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
        r.map(|_| ())
    }
    let r: Result<(), Status> = match rpc {
        "HashImage" => done(
            scan.hash_image(authed(
                pb::HashRequest {
                    image: img.to_vec(),
                    ..Default::default()
                },
                token,
            ))
            .await,
        ),
        "Scan" => done(
            scan.scan(authed(
                pb::ScanRequest {
                    image: img.to_vec(),
                    ..Default::default()
                },
                token,
            ))
            .await,
        ),
        "MatchHashes" => done(
            scan.match_hashes(authed(
                pb::MatchHashesRequest {
                    hashes: vec![pb::HashValue {
                        r#type: "md5".into(),
                        value: "00".repeat(16),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                token,
            ))
            .await,
        ),
        "ScanStream" => match scan
            .scan_stream(authed(
                tokio_stream::iter(vec![pb::ScanStreamRequest {
                    request_id: "1".into(),
                    item: Some(pb::scan_stream_request::Item::Scan(pb::ScanRequest {
                        image: img.to_vec(),
                        ..Default::default()
                    })),
                }]),
                token,
            ))
            .await
        {
            Ok(s) => {
                let mut s = s.into_inner();
                let first = s.message().await.map(|m| m.unwrap());
                first.map(|m| {
                    assert!(matches!(
                        m.outcome,
                        Some(pb::scan_stream_response::Outcome::Scan(_))
                    ))
                })
            }
            Err(e) => Err(e),
        },
        "CreateList" => {
            let n = format!(
                "l{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            );
            done(
                lists
                    .create_list(authed(
                        pb::CreateListRequest {
                            name: n,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            )
        }
        "GetList" => done(
            lists
                .get_list(a(pb::GetListRequest { name: "m".into() }))
                .await,
        ),
        "ListLists" => done(
            lists
                .list_lists(authed(pb::ListListsRequest {}, token))
                .await,
        ),
        "ImportList" => {
            let mut l = lists.clone();
            import_csv(&mut l, "m", "md5,00000000000000000000000000000001\n", token)
                .await
                .map(|_| ())
        }
        "RemoveEntries" => done(
            lists
                .remove_entries(authed(
                    pb::RemoveEntriesRequest {
                        list: "m".into(),
                        external_ids: vec!["x".into()],
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        "TombstoneEntries" => done(
            lists
                .tombstone_entries(authed(
                    pb::TombstoneEntriesRequest {
                        list: "m".into(),
                        external_ids: vec!["x".into()],
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        "ExportList" => match lists
            .export_list(authed(
                pb::ExportListRequest {
                    list: "m".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
        {
            Ok(s) => {
                let mut s = s.into_inner();
                let mut r = Ok(());
                loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
            Err(e) => Err(e),
        },
        "ListStats" => done(
            lists
                .list_stats(authed(pb::ListStatsRequest::default(), token))
                .await,
        ),
        "GetListAudit" => done(
            lists
                .get_list_audit(authed(pb::GetListAuditRequest::default(), token))
                .await,
        ),
        "GetReport" => done(
            reports
                .get_report(authed(
                    pb::GetReportRequest {
                        report_id: "1".into(),
                    },
                    token,
                ))
                .await,
        ),
        "ListReports" => done(
            reports
                .list_reports(authed(pb::ListReportsRequest::default(), token))
                .await,
        ),
        "ExportReport" => done(
            reports
                .export_report(authed(pb::ExportReportRequest::default(), token))
                .await,
        ),
        "ReviewReport" => done(
            reports
                .review_report(authed(pb::ReviewReportRequest::default(), token))
                .await,
        ),
        "VerifyReports" => done(
            reports
                .verify_reports(authed(pb::VerifyReportsRequest::default(), token))
                .await,
        ),
        "ReportStatistics" => done(
            reports
                .report_statistics(authed(pb::ReportStatisticsRequest::default(), token))
                .await,
        ),
        "GetReportAudit" => done(
            reports
                .get_report_audit(authed(pb::GetReportAuditRequest::default(), token))
                .await,
        ),
        "ListVersions" => done(
            repl.list_versions(authed(pb::ListVersionsRequest {}, token))
                .await,
        ),
        "PullChanges" => done(
            repl.pull_changes(authed(
                pb::PullChangesRequest {
                    list: "m".into(),
                    from_version: 0,
                },
                token,
            ))
            .await,
        ),
        "SubmitReport" => done(
            repl.submit_report(authed(pb::SubmitReportRequest::default(), token))
                .await,
        ),
        "SubmitScanCounts" => done(
            repl.submit_scan_counts(authed(pb::SubmitScanCountsRequest::default(), token))
                .await,
        ),
        "ReplicationStatus" => done(
            repl.replication_status(authed(pb::ReplicationStatusRequest {}, token))
                .await,
        ),
        "Backup" => {
            // A fresh absolute destination on the server's disk, removed again.
            let dest = std::env::temp_dir().join(format!(
                "baken-matrix-backup-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            let r = AdminServiceClient::new(ch.clone())
                .backup(authed(
                    pb::BackupRequest {
                        destination: dest.to_string_lossy().into_owned(),
                    },
                    token,
                ))
                .await;
            let _ = std::fs::remove_dir_all(&dest);
            done(r)
        }
        other => panic!("no call for {other}"),
    };
    r.err().map_or(Code::Ok, |s| s.code())
}

/// Which roles may call which RPC: the policy, written out independently of the code.
const MATRIX: [(&str, &[&str]); 26] = [
    ("HashImage", &["scanner"]),
    ("Scan", &["scanner"]),
    ("MatchHashes", &["scanner"]),
    ("ScanStream", &["scanner"]),
    ("CreateList", &["list_admin"]),
    ("GetList", &["list_admin", "auditor"]),
    ("ListLists", &["list_admin", "auditor"]),
    ("ImportList", &["list_admin"]),
    ("RemoveEntries", &["list_admin"]),
    ("TombstoneEntries", &["list_admin"]),
    ("ExportList", &["list_admin"]),
    ("ListStats", &["list_admin", "auditor"]),
    ("GetListAudit", &["list_admin", "auditor"]),
    ("GetReport", &["reviewer", "auditor"]),
    ("ListReports", &["reviewer", "auditor"]),
    ("ExportReport", &["reviewer", "auditor"]),
    ("ReviewReport", &["reviewer"]),
    ("VerifyReports", &["auditor"]),
    ("ReportStatistics", &["auditor"]),
    ("GetReportAudit", &["auditor"]),
    ("ListVersions", &["replica"]),
    ("PullChanges", &["replica"]),
    ("SubmitReport", &["replica"]),
    ("SubmitScanCounts", &["replica"]),
    ("ReplicationStatus", &["list_admin", "auditor"]),
    ("Backup", &["admin"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_rpc() {
    let tokdir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tokdir.path());
    // A replication writer, so that the writer's RPCs answer too.
    let (running, _dir) = start(|c| {
        c.auth.tokens_file = Some(tokens);
        c.replication.mode = service::config::ReplicationMode::Writer;
    })
    .await;
    let ch = channel(running.addr).await;
    let img = common::generated_png(48, 48, 4);
    let mut admin = ListServiceClient::new(ch.clone());
    create_list(&mut admin, "m", Some("tok-admin")).await;
    assert_eq!(MATRIX.len(), baken::service::Rpc::ALL.len());
    for rpc in baken::service::Rpc::ALL {
        assert!(
            MATRIX.iter().any(|(n, _)| *n == rpc.name()),
            "{rpc:?} not in the matrix"
        );
    }
    let mut checked = 0;
    for (rpc, allowed) in MATRIX {
        for (role, token) in TOKENS {
            let code = call(&ch, rpc, Some(token), &img).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{role} must be allowed {rpc}, got {code:?}"
                );
                if matches!(rpc, "GetReport" | "ExportReport") {
                    // The real report store holds no report "1" (nor an empty id).
                    assert!(
                        matches!(code, Code::NotFound | Code::InvalidArgument),
                        "{role} {rpc}: {code:?}"
                    );
                } else if matches!(rpc, "ReviewReport" | "SubmitReport") {
                    // No decision given.
                    assert_eq!(code, Code::InvalidArgument, "{role} {rpc}");
                } else {
                    assert_eq!(code, Code::Ok, "{role} {rpc}");
                }
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} must be denied {rpc}");
            }
            checked += 1;
        }
        assert_eq!(
            call(&ch, rpc, None, &img).await,
            Code::Unauthenticated,
            "{rpc} without a token"
        );
        assert_eq!(
            call(&ch, rpc, Some("wrong"), &img).await,
            Code::Unauthenticated,
            "{rpc} with an unknown token"
        );
    }
    assert_eq!(checked, MATRIX.len() * TOKENS.len());

    // Health and reflection need no credentials.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "baken.v1.ScanService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut refl =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let mut s = refl
        .server_reflection_info(tokio_stream::iter(vec![
            tonic_reflection::pb::v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                        String::new(),
                    ),
                ),
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    let resp = s.message().await.unwrap().unwrap();
    let names = match resp.message_response.unwrap() {
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(l) => {
            l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    for want in [
        "baken.v1.ScanService",
        "baken.v1.ListService",
        "baken.v1.ReportService",
        "baken.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // The audit log names the token's holder.
    let audit = admin
        .get_list_audit(authed(
            pb::GetListAuditRequest::default(),
            Some("tok-auditor"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.actor == "token:list_admin-bot")
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_identities() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "baken test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sans: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (srv_cert, srv_key) = leaf(vec!["localhost".into()], "baken server");
    let (scanner_cert, scanner_key) = leaf(vec!["scanner.provider.test".into()], "scanner-1");
    let (auditor_cert, auditor_key) = leaf(vec!["other.provider.test".into()], "audit-team");
    let (stranger_cert, stranger_key) = leaf(vec!["stranger.test".into()], "stranger");
    let w = |name: &str, s: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, s).unwrap();
        p
    };
    let (cert_p, key_p, ca_p) = (
        w("server.pem", &srv_cert),
        w("server.key", &srv_key),
        w("ca.pem", &ca.pem()),
    );
    let (running, _data) = start(|c| {
        c.tls = Some(service::config::TlsConfig {
            cert: cert_p,
            key: key_p,
            client_ca: Some(ca_p),
            require_client_cert: true,
        });
        c.health_listen = "127.0.0.1:0".into();
        c.auth.client_cert = vec![
            service::auth::CertRule {
                name: "scanner-1".into(),
                roles: vec![service::Role::Scanner],
                san: Some("scanner.provider.test".into()),
                common_name: None,
                sha256: None,
            },
            service::auth::CertRule {
                name: "audit".into(),
                roles: vec![service::Role::Auditor],
                san: None,
                common_name: Some("audit-team".into()),
                sha256: None,
            },
        ];
    })
    .await;
    let connect = |cert: Option<(&str, &str)>| {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
            .domain_name("localhost");
        if let Some((c, k)) = cert {
            tls = tls.identity(tonic::transport::Identity::from_pem(c, k));
        }
        let ep = Endpoint::from_shared(format!("https://{}", running.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        async move { ep.connect().await }
    };
    let img = common::generated_png(40, 40, 6);
    // The scanner certificate (SAN rule) may scan, not list.
    let ch = connect(Some((&scanner_cert, &scanner_key))).await.unwrap();
    assert_eq!(call(&ch, "Scan", None, &img).await, Code::Ok);
    assert_eq!(
        call(&ch, "ListLists", None, &img).await,
        Code::PermissionDenied
    );
    // The auditor certificate (common-name rule) may list, not scan.
    let ch = connect(Some((&auditor_cert, &auditor_key))).await.unwrap();
    assert_eq!(call(&ch, "ListLists", None, &img).await, Code::Ok);
    assert_eq!(call(&ch, "Scan", None, &img).await, Code::PermissionDenied);
    // A certificate from the CA with no rule: authenticated by TLS, but no identity.
    let ch = connect(Some((&stranger_cert, &stranger_key)))
        .await
        .unwrap();
    assert_eq!(call(&ch, "Scan", None, &img).await, Code::Unauthenticated);
    // No client certificate: the handshake fails (or the first call does).
    match connect(None).await {
        Err(_) => {}
        Ok(ch) => assert_ne!(call(&ch, "Scan", None, &img).await, Code::Ok),
    }
    // Plaintext to a TLS port fails.
    let plain = Endpoint::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert_ne!(call(&ch, "Scan", None, &img).await, Code::Ok);
    }
    // The plaintext health-only listener (for the kubelet's grpc: probes, which cannot present
    // a client certificate) answers health checks and nothing else.
    let health_addr = running.health_addr.expect("health_listen was set");
    let hch = channel(health_addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(hch.clone());
    for service in ["", "baken.v1.ScanService"] {
        let h = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            h.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    assert_eq!(call(&hch, "Scan", None, &img).await, Code::Unimplemented);
    assert_eq!(
        call(&hch, "ListLists", None, &img).await,
        Code::Unimplemented
    );
    running.shutdown().await;
    // Gone with the server.
    assert!(
        Endpoint::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .connect()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unsafe_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = ServiceConfig {
        listen: "0.0.0.0:0".into(),
        data: dir.path().join("data"),
        demo_list: false,
        ..ServiceConfig::default()
    };
    let store = service::open_store(&c).unwrap();
    let e = service::start(c, store, None).await.err().unwrap();
    assert!(e.to_string().contains("needs authorisation"), "{e}");
}
