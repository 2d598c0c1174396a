//! List replication across real processes on loopback: one writer and two replicas, each a
//! `baken serve` of its own with its own data directory, called over gRPC as clients would.
//!
//! An import on the writer reaches both replicas; a replica killed with SIGKILL and restarted
//! catches up; scans on any server give the same matches at the same list version; reports of
//! matches found on a replica land in the writer's ledger; replicas refuse list changes; a
//! replica configured with the wrong writer key applies nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baken::hashing::{self, HashOptions, Hasher};
use baken::service::pb;
use pb::list_service_client::ListServiceClient;
use pb::replication_service_client::ReplicationServiceClient;
use pb::report_service_client::ReportServiceClient;
use pb::scan_service_client::ScanServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const ADMIN: &str = "tok-admin";
const SCANNER: &str = "tok-scanner";
const REVIEWER: &str = "tok-reviewer";
const REPLICA: &str = "tok-replica";

/// A `baken serve` child, killed when dropped (also when an assertion fails).
struct Server {
    child: Child,
    addr: String,
    data: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, config: &Path, addr: &str) -> Server {
        let log = data.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_baken"))
            .arg("--data")
            .arg(data)
            .args(["serve", "--config"])
            .arg(config)
            .env("BAKEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            addr: addr.to_string(),
            data: data.to_path_buf(),
            config: config.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                s.child.try_wait().unwrap().is_none(),
                "the server exited: {}",
                s.log_text()
            );
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill9();
        let addr = self.addr.clone();
        *self = Server::start(&self.data.clone(), &self.config.clone(), &addr);
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn write_tokens(path: &Path) {
    let mut s = String::new();
    for (name, roles, tok) in [
        ("admin", "\"list_admin\", \"auditor\"", ADMIN),
        ("scanner", "\"scanner\"", SCANNER),
        ("reviewer", "\"reviewer\"", REVIEWER),
        ("replica", "\"replica\"", REPLICA),
    ] {
        s.push_str(&format!(
            "[[token]]\nname = \"{name}\"\nroles = [{roles}]\nsha256 = \"{}\"\n\n",
            baken::service::auth::token_hash(tok)
        ));
    }
    std::fs::write(path, s).unwrap();
}

fn pdq_of(img: &[u8]) -> String {
    let h = Hasher::new(HashOptions {
        algorithms: hashing::parse_algorithms("pdq").unwrap(),
        ..HashOptions::default()
    });
    h.hash_bytes(img).unwrap().pdq.unwrap().hash
}

struct Cluster {
    _dir: tempfile::TempDir,
    writer: Server,
    replicas: Vec<Server>,
}

/// Writer and replica configurations; `key` is the public key replicas trust.
fn replica_config(dir: &Path, name: &str, writer: &str, key: &Path) -> (PathBuf, String) {
    let addr = free_addr();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = \"{addr}\"\ndemo_list = false\nrefresh_interval_ms = 100\n\
             [metrics]\nlisten = \"off\"\n[auth]\ntokens_file = \"{}\"\n\
             [replication]\nmode = \"replica\"\nupstream = \"http://{writer}\"\n\
             upstream_token_file = \"{}\"\nlist_public_key = \"{}\"\npoll_interval_ms = 100\n",
            dir.join("tokens.toml").display(),
            dir.join("replica.token").display(),
            key.display()
        ),
    )
    .unwrap();
    (cfg, addr)
}

fn cluster(replicas: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tokens(&d.join("tokens.toml"));
    std::fs::write(d.join("replica.token"), format!("{REPLICA}\n")).unwrap();
    let waddr = free_addr();
    let wcfg = d.join("writer.toml");
    std::fs::write(
        &wcfg,
        format!(
            "listen = \"{waddr}\"\ndemo_list = false\nrefresh_interval_ms = 100\n\
             [metrics]\nlisten = \"off\"\n[auth]\ntokens_file = \"{}\"\n\
             [replication]\nmode = \"writer\"\n",
            d.join("tokens.toml").display()
        ),
    )
    .unwrap();
    // The writer's public key, as an operator would hand it to the replicas.
    let out = Command::new(env!("CARGO_BIN_EXE_baken"))
        .arg("--data")
        .arg(d.join("writer"))
        .args(["list", "public-key"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = d.join("writer.pub");
    std::fs::write(&key, &out.stdout).unwrap();
    let writer = Server::start(&d.join("writer"), &wcfg, &waddr);
    let replicas = (0..replicas)
        .map(|i| {
            let name = format!("replica{i}");
            let (cfg, addr) = replica_config(d, &name, &waddr, &key);
            Server::start(&d.join(&name), &cfg, &addr)
        })
        .collect();
    Cluster {
        _dir: dir,
        writer,
        replicas,
    }
}

async fn import_csv(ch: &Channel, list: &str, csv: String) -> u64 {
    let mut c = ListServiceClient::new(ch.clone());
    let msgs = vec![
        pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Header(pb::ImportHeader {
                list: list.into(),
                format: pb::ListFormat::Csv as i32,
                source: "test".into(),
                entry_id: String::new(),
            })),
        },
        pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Data(csv.into_bytes())),
        },
    ];
    let r = c
        .import_list(authed(tokio_stream::iter(msgs), ADMIN))
        .await
        .unwrap()
        .into_inner();
    r.version_to
}

async fn status(ch: &Channel) -> pb::ReplicationStatusResponse {
    ReplicationServiceClient::new(ch.clone())
        .replication_status(authed(pb::ReplicationStatusRequest {}, ADMIN))
        .await
        .unwrap()
        .into_inner()
}

/// Wait until `server` serves `list` at `version` (matching included).
async fn wait_for(server: &Server, list: &str, version: u64) {
    let ch = server.channel().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&ch).await;
        if s.lists
            .iter()
            .any(|l| l.name == list && l.serving_version == version && l.stored_version == version)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not reach {list} v{version}: {s:?}\n{}",
            server.addr,
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (list, entry, distance, list version) of every match of `img`.
async fn matches(ch: &Channel, img: &[u8]) -> Vec<(String, String, u32, u64)> {
    let r = ScanServiceClient::new(ch.clone())
        .scan(authed(
            pb::ScanRequest {
                image: img.to_vec(),
                ..Default::default()
            },
            SCANNER,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut m: Vec<_> = r
        .result
        .unwrap()
        .matches
        .into_iter()
        .map(|m| (m.list, m.entry, m.distance, m.list_version))
        .collect();
    m.sort();
    m
}

async fn health(ch: &Channel, service: &str) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_and_two_replicas_agree_through_imports_kills_and_restarts() {
    let mut c = cluster(2);
    let w = c.writer.channel().await;
    let images: Vec<Vec<u8>> = (0..12)
        .map(|i| common::generated_png(160, 120, 1000 + i))
        .collect();
    let hashes: Vec<String> = images.iter().map(|i| pdq_of(i)).collect();

    // Version 1: the first six images are known.
    ListServiceClient::new(w.clone())
        .create_list(authed(
            pb::CreateListRequest {
                name: "known".into(),
                source: "own".into(),
                classification_scheme: "ncmec".into(),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap();
    let csv: String = (0..6)
        .map(|i| format!("pdq,{},A1,case-{i}\n", hashes[i]))
        .collect();
    let v1 = import_csv(&w, "known", csv).await;
    assert_eq!(v1, 1);
    for r in &c.replicas {
        wait_for(r, "known", v1).await;
        let ch = r.channel().await;
        assert_eq!(
            health(&ch, "").await,
            SERVING,
            "a caught-up replica is ready"
        );
        assert!(status(&ch).await.caught_up);
    }

    // The same matches, at the same version, everywhere; nothing for unknown images.
    let chans = [
        w.clone(),
        c.replicas[0].channel().await,
        c.replicas[1].channel().await,
    ];
    for (i, img) in images.iter().enumerate() {
        let want = matches(&chans[0], img).await;
        assert_eq!(want.is_empty(), i >= 6, "image {i}: {want:?}");
        if i < 6 {
            assert_eq!(want[0], ("known".into(), format!("case-{i}"), 0, v1));
        }
        for ch in &chans[1..] {
            assert_eq!(matches(ch, img).await, want, "image {i}");
        }
    }

    // Replicas refuse list changes and send callers to the writer.
    let e = ListServiceClient::new(chans[1].clone())
        .create_list(authed(
            pb::CreateListRequest {
                name: "local".into(),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("replica"), "{e:?}");

    // A match on a replica with a context becomes a report in the writer's ledger, recording
    // the list version it matched against.
    let r = ScanServiceClient::new(chans[1].clone())
        .scan(authed(
            pb::ScanRequest {
                image: images[2].clone(),
                context: Some(pb::ReportContext {
                    content_reference: "upload-42".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            SCANNER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.report_id.is_empty(), "{r:?}");
    let rep = ReportServiceClient::new(w.clone())
        .get_report(authed(
            pb::GetReportRequest {
                report_id: r.report_id.clone(),
            },
            REVIEWER,
        ))
        .await
        .unwrap()
        .into_inner();
    let body: serde_json::Value = serde_json::from_slice(&rep.body_json).unwrap();
    let text = body.to_string();
    assert!(
        text.contains("upload-42") && text.contains("case-2"),
        "{text}"
    );
    assert!(
        text.contains("\"list_version\":1"),
        "the report records the version: {text}"
    );
    // The writer's access audit names the replica's caller and the replica as the creator.
    let audit = ReportServiceClient::new(w.clone())
        .get_report_audit(authed(pb::GetReportAuditRequest::default(), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .records
            .iter()
            .any(|a| a.report_id == r.report_id && a.actor == "token:scanner via token:replica"),
        "{audit:?}"
    );
    // The replica keeps no reports of its own.
    let e = ReportServiceClient::new(chans[1].clone())
        .get_report(authed(
            pb::GetReportRequest {
                report_id: r.report_id.clone(),
            },
            REVIEWER,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Replica 1 dies (SIGKILL) while the writer changes the list twice: three images added,
    // one withdrawn.
    c.replicas[1].kill9();
    let csv: String = (6..9)
        .map(|i| format!("pdq,{},A2,case-{i}\n", hashes[i]))
        .collect();
    let v2 = import_csv(&w, "known", csv).await;
    let t = ListServiceClient::new(w.clone())
        .tombstone_entries(authed(
            pb::TombstoneEntriesRequest {
                list: "known".into(),
                external_ids: vec!["case-0".into()],
                reason: "withdrawn by source".into(),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    let v3 = t.version_to;
    assert_eq!((v2, v3), (2, 3));
    wait_for(&c.replicas[0], "known", v3).await;

    // Restarted on its data directory, it catches up from its own version.
    c.replicas[1].restart();
    wait_for(&c.replicas[1], "known", v3).await;
    let chans = [
        w.clone(),
        c.replicas[0].channel().await,
        c.replicas[1].channel().await,
    ];
    for (i, img) in images.iter().enumerate() {
        let want = matches(&chans[0], img).await;
        assert_eq!(want.is_empty(), i == 0 || i >= 9, "image {i}: {want:?}");
        for ch in &chans[1..] {
            assert_eq!(matches(ch, img).await, want, "image {i}");
        }
    }
    // It pulled only the changes since its version, not the whole list again.
    let log = c.replicas[1].log_text();
    assert!(log.contains("from=1") && log.contains("to=3"), "{log}");

    // Exports agree entry for entry (tombstones included).
    let export = |ch: Channel| async move {
        let mut s = ListServiceClient::new(ch)
            .export_list(authed(
                pb::ExportListRequest {
                    list: "known".into(),
                    include_deleted: true,
                    ..Default::default()
                },
                ADMIN,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = s.message().await.unwrap() {
            out.extend(chunk.data);
        }
        out
    };
    let want = export(chans[0].clone()).await;
    assert!(!want.is_empty());
    assert_eq!(export(chans[1].clone()).await, want);
    assert_eq!(export(chans[2].clone()).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_applies_nothing_unless_the_writer_key_signed_it() {
    let c = cluster(0);
    let w = c.writer.channel().await;
    ListServiceClient::new(w.clone())
        .create_list(authed(
            pb::CreateListRequest {
                name: "known".into(),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap();
    let img = common::generated_png(160, 120, 7);
    import_csv(&w, "known", format!("pdq,{},A1,case-7\n", pdq_of(&img))).await;

    // Another data directory's key: not the writer's.
    let dir = c._dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_baken"))
        .arg("--data")
        .arg(dir.join("stranger"))
        .args(["list", "public-key"])
        .output()
        .unwrap();
    let wrong = dir.join("stranger.pub");
    std::fs::write(&wrong, &out.stdout).unwrap();
    let (cfg, addr) = replica_config(dir, "fooled", &c.writer.addr, &wrong);
    let r = Server::start(&dir.join("fooled"), &cfg, &addr);
    let ch = r.channel().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status(&ch).await;
        if !s.last_error.is_empty() {
            break s;
        }
        assert!(Instant::now() < deadline, "no error reported: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(s.last_error.contains("signature"), "{s:?}");
    assert!(!s.caught_up);
    assert!(s.lists.is_empty(), "nothing unverified is visible: {s:?}");
    assert_ne!(health(&ch, "").await, SERVING, "not ready");
    assert_eq!(
        health(&ch, "liveness").await,
        SERVING,
        "but alive: a restart would not help"
    );
    // Its scans find nothing (and say nothing about the unverified list).
    assert!(matches(&ch, &img).await.is_empty());

    // Trusting two keys (as while a list-signing key is rotated), one of them the writer's:
    // after a restart it follows.
    let mut bundle = std::fs::read_to_string(&wrong).unwrap();
    bundle.push_str(&std::fs::read_to_string(dir.join("writer.pub")).unwrap());
    std::fs::write(&wrong, bundle).unwrap();
    let mut r = r;
    r.restart();
    wait_for(&r, "known", 1).await;
    let ch = r.channel().await;
    assert_eq!(health(&ch, "").await, SERVING);
    assert_eq!(matches(&ch, &img).await.len(), 1);
}
