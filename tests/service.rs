//! The gRPC service as a client sees it: the real server on 127.0.0.1 (ephemeral port), driven
//! through the generated tonic clients. Images are generated here (benign, synthetic).

mod common;

use std::path::Path;
use std::time::Duration;

use baken::service::pb;
use pb::list_service_client::ListServiceClient;
use pb::scan_service_client::ScanServiceClient;
use tonic::transport::Endpoint;
use tonic::{Code, Request};

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
    let h = scan
        .hash_image(pb::HashRequest {
            image: known.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
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
        .scan(pb::ScanRequest {
            image: known.clone(),
            context: Some(pb::ReportContext {
                content_reference: "upload-123".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
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
        "baken_scans_total{outcome=\"match\"}",
        "baken_scans_total{outcome=\"no_match\"}",
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
    let t0 = std::time::Instant::now();
    while running.state().admission.in_flight() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no slow request arrived"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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
    let t0 = std::time::Instant::now();
    while running.state().admission.in_flight() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let left = running.shutdown().await;
    assert_eq!(left, 0);
    let done = inflight.await.unwrap().unwrap().into_inner();
    assert!(done.pdq.is_some(), "the in-flight request completed");
    // Nothing listens any more, and the store is closed (RocksDB's lock is free).
    assert!(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .is_err()
    );
    baken::store::Store::open(&dir.path().join("data")).unwrap();
}
