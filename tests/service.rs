//! The gRPC service as a client sees it: the real server on 127.0.0.1 (ephemeral port), driven
//! through the generated tonic clients — every RPC, overload, deadlines, shutdown, and the
//! authorisation (every role against every RPC, tokens, TLS and mutual TLS, refused
//! configurations). Images are generated here (benign, synthetic). Reports: service_reports.rs.

mod common;

use std::path::Path;
use std::time::Duration;

use baken::service::{self, ServiceConfig, pb};
use pb::admin_service_client::AdminServiceClient;
use pb::list_service_client::ListServiceClient;
use pb::report_service_client::ReportServiceClient;
use pb::scan_service_client::ScanServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use common::service::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_scan_match_stream_and_metrics() {
    let (running, _dir) = start(|_| {}).await;
    let ch = channel(running.addr).await;
    let mut scan = ScanServiceClient::new(ch.clone());
    let mut lists = ListServiceClient::new(ch.clone());

    let known = common::generated_png(320, 240, 31);
    let other = common::generated_png(320, 240, 32);

    // HashImage: the default set and an explicit one.
    let h = hash_image(&mut scan, known.clone()).await;
    let pdq = h.pdq.clone().unwrap();
    assert_eq!(pdq.hash.len(), 64);
    assert_eq!(pdq.dihedral.len(), 8);
    assert_eq!(h.md5.len(), 32);
    assert!(h.phash.is_empty());
    assert_eq!(h.image.as_ref().unwrap().format, "png");
    let h2 = scan
        .hash_image(pb::HashRequest {
            image: known.clone(),
            algorithms: vec![pb::Algorithm::Phash as i32, pb::Algorithm::Sha256 as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h2.phash.len(), 16);
    assert!(h2.pdq.is_none() && h2.md5.is_empty() && h2.sha256.len() == 64);

    // A list holding the known image's PDQ hash.
    create_list(&mut lists, "known", None).await;
    let rep = import_csv(
        &mut lists,
        "known",
        &format!(
            "hash_type,hash,classification,external_id\npdq,{},A1,case-1\nmd5,nothex,A1,bad\n",
            pdq.hash
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(rep.version_to, 1);
    assert_eq!(rep.counts.as_ref().unwrap().added, 1);
    assert_eq!(rep.counts.as_ref().unwrap().errors, 1);
    assert_eq!(rep.errors.len(), 1);

    // Scan: a match (visible at once, no restart), and a non-match.
    let r = scan
        .scan(pb::ScanRequest {
            image: known.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let m = &r.result.as_ref().unwrap().matches;
    assert_eq!(m.len(), 1, "{r:?}");
    assert_eq!(m[0].list, "known");
    assert_eq!(m[0].entry, "case-1");
    assert_eq!(m[0].classification, "A1");
    assert_eq!(m[0].distance, 0);
    assert_eq!(m[0].transform, "orig");
    assert_eq!(m[0].threshold, 31);
    assert!(r.report_id.is_empty());
    assert!(r.hashes.is_none());
    let r = scan
        .scan(pb::ScanRequest {
            image: other.clone(),
            lists: vec!["known".into()],
            return_hashes: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.result.unwrap().matches.is_empty());
    let other_pdq = r.hashes.unwrap().pdq.unwrap().hash;

    // A match with a report context: answered with the report made of it.
    let r = scan
        .scan(scan_with_context(known.clone(), "upload-123"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.result.unwrap().matches.len(), 1);
    assert!(!r.report_id.is_empty(), "{}", r.report_note);
    assert_eq!(r.report_status, "pending_review");

    // Unknown list: NOT_FOUND.
    let e = scan
        .scan(pb::ScanRequest {
            image: known.clone(),
            lists: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // MatchHashes: the privacy path. Near-duplicate (a few bits flipped) and rotated variants.
    let mut rng = common::XorShift(7);
    let near = hex::encode(rng.flip(&hex::decode(&pdq.hash).unwrap(), 9));
    let r = scan
        .match_hashes(pb::MatchHashesRequest {
            hashes: vec![pb::HashValue {
                r#type: "pdq".into(),
                value: near,
                quality: Some(90),
                dihedral: vec![],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let m = r.result.unwrap().matches;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].distance, 9);
    // The known hash as the rot90 variant of a query: matched through the dihedral.
    let r = scan
        .match_hashes(pb::MatchHashesRequest {
            hashes: vec![pb::HashValue {
                r#type: "pdq".into(),
                value: other_pdq.clone(),
                quality: None,
                dihedral: vec![pdq.hash.clone()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.result.unwrap().matches[0].transform, "rot90");
    // Low quality: skipped, said so.
    let r = scan
        .match_hashes(pb::MatchHashesRequest {
            hashes: vec![pb::HashValue {
                r#type: "pdq".into(),
                value: pdq.hash.clone(),
                quality: Some(10),
                dihedral: vec![],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let res = r.result.unwrap();
    assert!(res.matches.is_empty());
    assert_eq!(res.skipped.len(), 1);
    // Malformed values: INVALID_ARGUMENT, naming the item, not echoing the value.
    for (ty, v) in [
        ("pdq", "zz"),
        ("md5", "abcd"),
        ("BAD TYPE", "00"),
        ("pdq", ""),
    ] {
        let e = scan
            .match_hashes(pb::MatchHashesRequest {
                hashes: vec![pb::HashValue {
                    r#type: ty.into(),
                    value: v.into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{ty} {v}");
        assert!(e.message().contains("hashes[0]"), "{}", e.message());
    }
    let e = scan
        .match_hashes(pb::MatchHashesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // ScanStream: 12 items (scans, hash matches, one broken image), answered by request id.
    let mut items = Vec::new();
    for i in 0..12 {
        let item = match i % 4 {
            0 => pb::scan_stream_request::Item::Scan(pb::ScanRequest {
                image: known.clone(),
                ..Default::default()
            }),
            1 => pb::scan_stream_request::Item::Scan(pb::ScanRequest {
                image: other.clone(),
                ..Default::default()
            }),
            2 => pb::scan_stream_request::Item::Match(pb::MatchHashesRequest {
                hashes: vec![pb::HashValue {
                    r#type: "pdq".into(),
                    value: pdq.hash.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            _ => pb::scan_stream_request::Item::Scan(pb::ScanRequest {
                image: known[..known.len() / 2].to_vec(),
                ..Default::default()
            }),
        };
        items.push(pb::ScanStreamRequest {
            request_id: format!("req-{i}"),
            item: Some(item),
        });
    }
    let mut stream = scan
        .scan_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let mut seen = std::collections::BTreeMap::new();
    while let Some(resp) = stream.message().await.unwrap() {
        seen.insert(resp.request_id.clone(), resp.outcome.unwrap());
    }
    assert_eq!(seen.len(), 12);
    for (id, outcome) in &seen {
        let i: usize = id.trim_start_matches("req-").parse().unwrap();
        use pb::scan_stream_response::Outcome;
        match (i % 4, outcome) {
            (0, Outcome::Scan(s)) => assert_eq!(s.result.as_ref().unwrap().matches.len(), 1),
            (1, Outcome::Scan(s)) => assert!(s.result.as_ref().unwrap().matches.is_empty()),
            (2, Outcome::Match(m)) => assert_eq!(m.result.as_ref().unwrap().matches.len(), 1),
            (3, Outcome::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.kind, "truncated");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // Metrics: counters by outcome, list and hash type, latency, errors by kind, list sizes;
    // never a hash.
    let text = metrics_text(running.metrics_addr.unwrap()).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for needle in [
        "baken_scans_total{outcome=\"match\",media=\"image\"}",
        "baken_scans_total{outcome=\"no_match\",media=\"image\"}",
        "baken_matches_total{list=\"known\",hash_type=\"pdq\"}",
        "baken_errors_total{kind=\"truncated\"}",
        "baken_errors_total{kind=\"not_found\"}",
        "baken_request_duration_seconds_bucket{",
        "baken_requests_total{rpc=\"Scan\",code=\"OK\"}",
        "baken_list_entries{list=\"known\"} 1",
        "baken_in_flight 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains(&other_pdq) && !text.contains(&pdq.hash));
    assert_eq!(running.shutdown().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rpcs() {
    let (running, _dir) = start(|_| {}).await;
    let ch = channel(running.addr).await;
    let mut lists = ListServiceClient::new(ch.clone());
    let mut scan = ScanServiceClient::new(ch);

    let info = lists
        .create_list(pb::CreateListRequest {
            name: "ncmec".into(),
            source: "NCMEC".into(),
            classification_scheme: "ncmec".into(),
            thresholds: [("pdq".to_string(), 20u32)].into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.version, 0);
    assert_eq!(info.thresholds.get("pdq"), Some(&20));
    let e = lists
        .create_list(pb::CreateListRequest {
            name: "ncmec".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = lists
        .create_list(pb::CreateListRequest {
            name: "bad name!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Import the repository's NCMEC sample file through the stream, in small chunks.
    let xml =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lists/ncmec.xml"))
            .unwrap();
    let mut msgs = vec![pb::ImportListRequest {
        part: Some(pb::import_list_request::Part::Header(pb::ImportHeader {
            list: "ncmec".into(),
            format: pb::ListFormat::Ncmec as i32,
            source: "ncmec.xml".into(),
            entry_id: String::new(),
        })),
    }];
    for c in xml.chunks(100) {
        msgs.push(pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Data(c.to_vec())),
        });
    }
    let rep = lists
        .import_list(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rep.version_to, 1);
    let added = rep.counts.as_ref().unwrap().added;
    assert!(added > 0);

    // A structurally broken file is refused whole; an unknown list and a missing header too.
    let e = import_csv(&mut lists, "nope", "md5,00\n", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let broken = vec![
        pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Header(pb::ImportHeader {
                list: "ncmec".into(),
                format: pb::ListFormat::Ncmec as i32,
                source: String::new(),
                entry_id: String::new(),
            })),
        },
        pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Data(b"<a><b></a>".to_vec())),
        },
    ];
    let e = lists
        .import_list(tokio_stream::iter(broken))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = lists
        .import_list(tokio_stream::iter(vec![pb::ImportListRequest {
            part: Some(pb::import_list_request::Part::Data(b"x".to_vec())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let info = lists
        .get_list(pb::GetListRequest {
            name: "ncmec".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.version, 1, "refused imports leave the version alone");

    // Another list with an md5 we can match and remove.
    create_list(&mut lists, "own", None).await;
    let img = common::generated_png(64, 64, 5);
    let md5 = format!("{:x}", md5_digest(&img));
    import_csv(
        &mut lists,
        "own",
        &format!("md5,{md5},B1,own-1\nmd5,{},B1,own-2\n", "ab".repeat(16)),
        None,
    )
    .await
    .unwrap();
    let hit = scan
        .scan(pb::ScanRequest {
            image: img.clone(),
            lists: vec!["own".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hit.result.unwrap().matches[0].hash_type, "md5");

    // Remove by hash (operator) and tombstone by external id (source withdrawal).
    let ch = lists
        .remove_entries(pb::RemoveEntriesRequest {
            list: "own".into(),
            hashes: vec![pb::EntryHash {
                r#type: "md5".into(),
                value: md5.clone(),
            }],
            reason: "false positive".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ch.counts.unwrap().tombstoned, 1);
    let hit = scan
        .scan(pb::ScanRequest {
            image: img,
            lists: vec!["own".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        hit.result.unwrap().matches.is_empty(),
        "removal applies at once"
    );
    let ch = lists
        .tombstone_entries(pb::TombstoneEntriesRequest {
            list: "own".into(),
            external_ids: vec!["own-2".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ch.counts.unwrap().tombstoned, 1);
    let e = lists
        .remove_entries(pb::RemoveEntriesRequest {
            list: "own".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Export (server streaming), with and without tombstones.
    for (fmt, deleted, want_lines) in [
        (pb::ExportFormat::Csv, true, 3),
        (pb::ExportFormat::Csv, false, 1),
        (pb::ExportFormat::Jsonl, true, 2),
    ] {
        let mut s = lists
            .export_list(pb::ExportListRequest {
                list: "own".into(),
                format: fmt as i32,
                include_deleted: deleted,
            })
            .await
            .unwrap()
            .into_inner();
        let mut data = Vec::new();
        while let Some(c) = s.message().await.unwrap() {
            data.extend(c.data);
        }
        let text = String::from_utf8(data).unwrap();
        assert_eq!(
            text.lines().count(),
            want_lines,
            "{fmt:?} {deleted}: {text}"
        );
    }
    // A large export arrives in several chunks, complete.
    create_list(&mut lists, "big", None).await;
    let mut csv = String::new();
    let mut rng = common::XorShift(3);
    for i in 0..5000 {
        csv.push_str(&format!("md5,{},,id-{i}\n", hex::encode(rng.bytes(16))));
    }
    import_csv(&mut lists, "big", &csv, None).await.unwrap();
    let mut s = lists
        .export_list(pb::ExportListRequest {
            list: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut chunks, mut lines) = (0, 0);
    while let Some(c) = s.message().await.unwrap() {
        chunks += 1;
        lines += c.data.iter().filter(|&&b| b == b'\n').count();
    }
    assert!(chunks > 1);
    assert_eq!(lines, 5001);
    let e = lists
        .export_list(pb::ExportListRequest {
            list: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Stats and listing.
    let stats = lists
        .list_stats(pb::ListStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.lists.len(), 3);
    let own = stats.lists.iter().find(|s| s.list == "own").unwrap();
    assert_eq!((own.live_entries, own.tombstones), (0, 2));
    let all = lists
        .list_lists(pb::ListListsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.lists.len(), 3);

    // The audit log names the caller and the actions.
    let audit = lists
        .get_list_audit(pb::GetListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.records.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"list.remove") && actions.contains(&"list.tombstone"));
    assert!(audit.records.iter().all(|r| r.actor == "anonymous"));
    let page = lists
        .get_list_audit(pb::GetListAuditRequest {
            after_seq: 2,
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.records[0].seq, 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_get_precise_codes() {
    let (running, _dir) = start(|c| {
        c.limits.max_image_bytes = 2 << 20;
        c.max_message_bytes = 3 << 20;
    })
    .await;
    let mut scan = ScanServiceClient::new(channel(running.addr).await);
    let good = common::generated_png(64, 48, 1);
    let ihdr = |w: u32, h: u32| {
        let mut body = w.to_be_bytes().to_vec();
        body.extend(h.to_be_bytes());
        body.extend([8, 2, 0, 0, 0]);
        let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
        f.extend(common::png_chunk(b"IHDR", &body));
        f.extend(common::png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]));
        f.extend(common::png_chunk(b"IEND", &[]));
        f
    };
    let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
        ("empty", vec![], Code::InvalidArgument, "empty"),
        (
            "random bytes",
            common::XorShift(9).bytes(5000),
            Code::InvalidArgument,
            "unsupported_format",
        ),
        (
            "truncated png",
            good[..good.len() / 2].to_vec(),
            Code::InvalidArgument,
            "truncated",
        ),
        (
            "zero width",
            ihdr(0, 10),
            Code::InvalidArgument,
            "zero_dimension",
        ),
        (
            "bomb header",
            ihdr(100_000, 100_000),
            Code::ResourceExhausted,
            "dimensions_too_large",
        ),
        (
            "over the byte limit",
            vec![0u8; (2 << 20) + 1],
            Code::ResourceExhausted,
            "too_large",
        ),
    ];
    for (name, bytes, code, k) in cases {
        for rpc in ["hash", "scan"] {
            let e = if rpc == "hash" {
                scan.hash_image(pb::HashRequest {
                    image: bytes.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            } else {
                scan.scan(pb::ScanRequest {
                    image: bytes.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            };
            assert_eq!(e.code(), code, "{name} via {rpc}: {e:?}");
            assert_eq!(kind(&e), k, "{name}");
            assert!(e.message().contains(k), "{name}: {}", e.message());
        }
    }
    // Over the gRPC message limit: refused by the transport before any decoding.
    let e = scan
        .hash_image(pb::HashRequest {
            image: vec![0u8; 4 << 20],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );
    // The server is fine afterwards.
    scan.hash_image(pb::HashRequest {
        image: good,
        ..Default::default()
    })
    .await
    .unwrap();
    running.shutdown().await;
}

/// A request that keeps one CPU thread busy for a while (a large image, every algorithm).
fn slow_request(img: &[u8]) -> pb::HashRequest {
    pb::HashRequest {
        image: img.to_vec(),
        algorithms: (1..=8).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_and_recovers() {
    let (running, _dir) = start(|c| {
        c.max_in_flight = 2;
        c.cpu_threads = 1;
    })
    .await;
    let ch = channel(running.addr).await;
    let big = common::generated_png(1600, 1200, 11);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut c = ScanServiceClient::new(ch.clone());
        let req = slow_request(&big);
        tasks.push(tokio::spawn(async move { c.hash_image(req).await }));
    }
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("server busy"), "{}", e.message());
                assert_eq!(kind(&e), "busy");
                busy += 1;
            }
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
    assert!(ok <= 10 - busy);
    // Recovered: nothing in flight, the next request goes through.
    assert_eq!(running.state().admission.in_flight(), 0);
    ScanServiceClient::new(ch)
        .hash_image(pb::HashRequest {
            image: common::generated_png(32, 32, 1),
            ..Default::default()
        })
        .await
        .unwrap();
    let text = metrics_text(running.metrics_addr.unwrap()).await;
    assert!(
        text.contains("baken_shed_total{rpc=\"HashImage\"}"),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured() {
    let (running, _dir) = start(|c| c.cpu_threads = 1).await;
    let ch = channel(running.addr).await;
    let big = common::generated_png(1600, 1200, 12);
    // Occupy the single CPU thread…
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = ScanServiceClient::new(ch.clone());
        let req = slow_request(&big);
        slow.push(tokio::spawn(async move { c.hash_image(req).await }));
    }
    wait_in_flight(&running).await;
    // …so a request with a short deadline cannot be done in time.
    let mut c = ScanServiceClient::new(ch.clone());
    let mut req = Request::new(pb::ScanRequest {
        image: common::generated_png(64, 64, 2),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(150));
    let t0 = std::time::Instant::now();
    let e = c.scan(req).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    for t in slow {
        t.await.unwrap().unwrap();
    }
    // With time enough, the same request succeeds.
    let mut req = Request::new(pb::ScanRequest {
        image: common::generated_png(64, 64, 2),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(30));
    c.scan(req).await.unwrap();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_and_closes_the_store() {
    let (running, dir) = start(|c| c.cpu_threads = 1).await;
    let addr = running.addr;
    let ch = channel(addr).await;
    let big = common::generated_png(1600, 1200, 13);
    let mut c = ScanServiceClient::new(ch);
    let req = slow_request(&big);
    let inflight = tokio::spawn(async move { c.hash_image(req).await });
    wait_in_flight(&running).await;
    let left = running.shutdown().await;
    assert_eq!(left, 0);
    let done = inflight.await.unwrap().unwrap().into_inner();
    assert!(done.pdq.is_some(), "the in-flight request completed");
    // Nothing listens any more, and the store is closed (RocksDB's lock is free).
    assert!(refuses_connections(addr).await);
    baken::store::Store::open(&dir.path().join("data")).unwrap();
}

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
        "ScanUpload" => scan
            .scan_upload(authed(
                tokio_stream::iter(vec![pb::ScanRequest {
                    image: img.to_vec(),
                    ..Default::default()
                }]),
                token,
            ))
            .await
            .map(|_| ()),
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
const MATRIX: [(&str, &[&str]); 27] = [
    ("HashImage", &["scanner"]),
    ("Scan", &["scanner"]),
    ("MatchHashes", &["scanner"]),
    ("ScanStream", &["scanner"]),
    ("ScanUpload", &["scanner"]),
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
    assert!(refuses_connections(health_addr).await);
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
