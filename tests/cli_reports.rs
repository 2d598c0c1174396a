//! `baken match --report` and `baken report …` as an operator runs them: reports from real
//! matches, review, exports, stats, retention, verification (with a deleted record named), the
//! audit, keys — and a scan of the data directory for image bytes and non-matching content.

mod common;

use common::{baken_at as baken, json_lines, mode, save_png as png};

use common::{contains, files_under};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn run(data: &Path, args: &[&str]) -> Output {
    baken(data).args(args).output().unwrap()
}

fn ok(o: &Output) -> &Output {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn reports_from_matches_through_review_export_stats_retention_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (w, h) = (360u32, 270u32);
    let known_px = common::generated_image(w, h, 3, 61);
    let other_px = common::generated_image(w, h, 3, 62);
    let known = dir.path().join("known.png");
    let other = dir.path().join("other.png");
    let copy = dir.path().join("copy.jpg");
    let known_bytes = png(&known, &known_px, w, h);
    let other_bytes = png(&other, &other_px, w, h);
    let copy_bytes = baken::decode::jpeg::encode(&known_px, w, h, 3, 90, false).unwrap();
    std::fs::write(&copy, &copy_bytes).unwrap();

    // A list from the known image's hashes.
    let hk = &json_lines(
        &ok(&run(
            &data,
            &["hash", "--algo", "pdq,md5", known.to_str().unwrap()],
        ))
        .stdout,
    )[0];
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, common::pdq_md5_csv(hk, "B1", "case-7")).unwrap();
    common::cli_list_from_csv(&data, "known", &["--source", "test"], &csv);

    let context = dir.path().join("context.json");
    common::write_context(
        &context,
        serde_json::json!({
            "reported_user": {"esp_id": "acct-42", "screen_name": "cli_sentinel_user"},
            "ip_events": [{"ip": "198.51.100.4", "at": "2025-06-01T10:00:00Z", "event": "upload"}]
        }),
    );

    // --report needs the provider's fields.
    let no_ctx = run(&data, &["match", "--report", known.to_str().unwrap()]);
    assert_eq!(no_ctx.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_ctx.stderr).contains("--context"));
    // Retention can only be shorter than 12 months.
    let long = run(
        &data,
        &[
            "match",
            "--report",
            "--context",
            context.to_str().unwrap(),
            "--retention",
            "13m",
            known.to_str().unwrap(),
        ],
    );
    assert_eq!(long.status.code(), Some(2));

    let m = baken(&data)
        .args(["match", "--report", "--context"])
        .arg(&context)
        .arg(&known)
        .arg(&copy)
        .arg(&other)
        .output()
        .unwrap();
    common::assert_exit(&m, 1);
    let lines = json_lines(&m.stdout);
    let id1 = lines[0]["report"]["report_id"]
        .as_str()
        .unwrap()
        .to_string();
    let id2 = lines[1]["report"]["report_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(lines[0]["report"]["status"], "pending_review");
    assert!(
        lines[2].get("report").is_none(),
        "no report for a non-match"
    );

    // The key: generated at first use, private.
    let key = data.join("keys/report-signing.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);

    let ls = json_lines(&ok(&run(&data, &["report", "ls"])).stdout);
    assert_eq!(ls.len(), 2);
    assert!(ls.iter().all(|s| s["status"] == "pending_review"));
    let today = ls[0]["created_at"].as_str().unwrap()[..10].to_string();

    // Not reviewed: not exportable for sending; a draft is.
    let refused = run(&data, &["report", "export", &id1, "--format", "ncmec-xml"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pending_review"));
    ok(&run(
        &data,
        &["report", "export", &id1, "--format", "csar-json", "--draft"],
    ));

    let bad = run(
        &data,
        &[
            "report",
            "review",
            &id1,
            "--decision",
            "confirm",
            "--reviewer",
            "jane@example.org",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    let rev = &json_lines(
        &ok(&run(
            &data,
            &[
                "report",
                "review",
                &id1,
                "--decision",
                "confirm",
                "--reviewer",
                "rev-1",
            ],
        ))
        .stdout,
    )[0];
    assert_eq!(rev["status"], "ready_to_send");

    let xml = String::from_utf8(
        ok(&run(
            &data,
            &["report", "export", &id1, "--format", "ncmec-xml"],
        ))
        .stdout
        .clone(),
    )
    .unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("malformed XML: {e}"),
        }
    }
    assert!(xml.contains(&format!(
        "<originalFileHash hashType=\"MD5\">{}</originalFileHash>",
        hk["md5"].as_str().unwrap()
    )));
    assert!(xml.contains("<industryClassification>B1</industryClassification>"));
    assert!(xml.contains(hk["pdq"]["hash"].as_str().unwrap()));
    assert!(xml.contains("entry case-7"));
    assert!(xml.contains("<screenName>cli_sentinel_user</screenName>"));

    let out = dir.path().join("report.json");
    ok(&run(
        &data,
        &[
            "report",
            "export",
            &id1,
            "--format",
            "csar-json",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(mode(&out), 0o600, "exports hold personal data");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["document"], "baken.csar-report/v1");
    assert_eq!(doc["report"]["report_id"], id1.as_str());
    assert_eq!(doc["human_review"]["reviewer_pseudonym"], "rev-1");
    assert_eq!(
        doc["report"]["files"][0]["content_reference"],
        format!("file:{}", std::fs::canonicalize(&known).unwrap().display())
    );
    // Never over an existing file.
    assert_eq!(
        run(
            &data,
            &["report", "export", &id1, "--out", out.to_str().unwrap()]
        )
        .status
        .code(),
        Some(2)
    );

    // The copy was a false positive (say): rejected, purged at once.
    let rej = &json_lines(
        &ok(&run(
            &data,
            &[
                "report",
                "review",
                &id2,
                "--decision",
                "reject",
                "--reviewer",
                "rev-2",
            ],
        ))
        .stdout,
    )[0];
    assert_eq!(rej["status"], "rejected");
    assert_eq!(rej["purged"]["reason"], "false_positive");
    let shown = &json_lines(&ok(&run(&data, &["report", "show", &id2])).stdout)[0];
    assert!(shown["body"].is_null());

    let stats = &json_lines(
        &ok(&run(
            &data,
            &["report", "stats", "--from", &today, "--to", &today],
        ))
        .stdout,
    )[0];
    assert_eq!(stats["volume"]["processed"], 3);
    assert_eq!(stats["volume"]["matched"], 2);
    assert_eq!(stats["volume"]["not_matched"], 1);
    assert_eq!(stats["reports"]["created"], 2);
    assert_eq!(stats["reviews"]["confirmed"], 1);
    assert_eq!(stats["reviews"]["rejected"], 1);
    assert_eq!(stats["false_positives"]["error_rate"], 0.5);
    assert_eq!(
        stats["false_positives"]["by_hash_type"]["pdq"]["rejected"],
        1
    );
    assert_eq!(
        stats["false_positives"]["by_hash_type"]["md5"]["confirmed"],
        1
    );
    assert_eq!(stats["cases"]["unique"], 1);
    assert_eq!(stats["cases"]["duplicate"], 1);
    assert_eq!(stats["recipients"]["exported"]["NCMEC"], 2);

    // The public key alone verifies.
    let pk = dir.path().join("report-key.pub");
    std::fs::write(&pk, &ok(&run(&data, &["report", "public-key"])).stdout).unwrap();
    let v = &json_lines(
        &ok(&run(
            &data,
            &["report", "verify", "--public-key", pk.to_str().unwrap()],
        ))
        .stdout,
    )[0];
    assert_eq!(v["ok"], true);
    assert_eq!(v["reports"], 2);

    // Retention, with a clock set past the deadline.
    let purge = &json_lines(
        &ok(&run(
            &data,
            &["report", "purge-expired", "--now", "2099-01-01T00:00:00Z"],
        ))
        .stdout,
    )[0];
    assert_eq!(purge["purged"], serde_json::json!([id1]));
    let v = &json_lines(&ok(&run(&data, &["report", "verify"])).stdout)[0];
    assert_eq!(
        (v["ok"].as_bool(), v["purged"].as_u64()),
        (Some(true), Some(2))
    );
    let stats = &json_lines(
        &ok(&run(
            &data,
            &["report", "stats", "--from", &today, "--to", "2099-12-31"],
        ))
        .stdout,
    )[0];
    assert_eq!(stats["reports"]["created"], 2, "counters survive purges");
    assert_eq!(stats["retention"]["purged_expired"], 1);

    // Every read, export, review and purge is in the audit, with who.
    let audit = json_lines(&ok(&run(&data, &["report", "audit"])).stdout);
    for action in [
        "report.create",
        "report.list",
        "report.read",
        "report.export",
        "report.review",
        "report.purge",
        "report.stats",
        "report.verify",
    ] {
        assert!(
            audit
                .iter()
                .any(|a| a["action"] == action && a["actor"] == "ci"),
            "{action}"
        );
    }

    // Nothing of any image, and nothing of the non-matching file, anywhere in the data directory.
    let other_all = &json_lines(
        &ok(&run(
            &data,
            &["hash", "--algo", "all", other.to_str().unwrap()],
        ))
        .stdout,
    )[0];
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, b) in [
        ("known.png", &known_bytes),
        ("copy.jpg", &copy_bytes),
        ("other.png", &other_bytes),
        ("known pixels", &known_px),
        ("other pixels", &other_px),
    ] {
        for start in [0, b.len() / 2, b.len() - 64] {
            needles.push((format!("{what}@{start}"), b[start..start + 64].to_vec()));
        }
    }
    for k in [
        "md5",
        "sha1",
        "sha256",
        "phash",
        "dhash",
        "ahash",
        "blockhash",
    ] {
        let hx = other_all[k].as_str().unwrap();
        needles.push((format!("other {k} hex"), hx.as_bytes().to_vec()));
        needles.push((format!("other {k} raw"), hex::decode(hx).unwrap()));
    }
    let op = other_all["pdq"]["hash"].as_str().unwrap();
    needles.push(("other pdq hex".into(), op.as_bytes().to_vec()));
    needles.push(("other pdq raw".into(), hex::decode(op).unwrap()));
    // Every report is purged now: no personal data remains either.
    needles.push(("screen name".into(), b"cli_sentinel_user".to_vec()));
    needles.push(("ip".into(), b"198.51.100.4".to_vec()));
    for f in files_under(&data) {
        let c = std::fs::read(&f).unwrap();
        for (what, n) in &needles {
            assert!(!contains(&c, n), "{what} found in {}", f.display());
        }
    }

    // Delete a whole report record behind the engine's back: verify names it.
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &data).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &data, &names).unwrap();
        for cf in ["report_ledger", "report_state"] {
            db.delete_cf(db.cf_handle(cf).unwrap(), 1u64.to_be_bytes())
                .unwrap();
        }
    }
    let broken = run(&data, &["report", "verify"]);
    assert_eq!(broken.status.code(), Some(1));
    let v = &json_lines(&broken.stdout)[0];
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["kind"], "missing_entry");
    assert_eq!(v["problems"][0]["report_id"], id1.as_str());
    assert!(String::from_utf8_lossy(&broken.stderr).contains(&id1));
}

#[test]
fn a_supplied_signing_key_is_used_and_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // RFC 8410 §10.3's example key, as `openssl genpkey -algorithm ed25519` would write it.
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ok(&run(
        &data,
        &[
            "report",
            "public-key",
            "--format",
            "hex",
            "--signing-key",
            key.to_str().unwrap(),
        ],
    ))
    .stdout
    .clone();
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
    );
    assert!(
        !data.join("keys").exists(),
        "no key generated when one is supplied"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = run(
        &data,
        &[
            "report",
            "public-key",
            "--signing-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(open.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&open.stderr).contains("chmod 600"));
    // Nothing to verify against without a key.
    let empty = dir.path().join("empty");
    assert_eq!(run(&empty, &["report", "verify"]).status.code(), Some(2));
}

/// A data directory with list `known` and one report (from a match of a generated image).
/// Returns the data directory and the matching image.
fn data_with_a_report(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    let (w, h) = (200u32, 150u32);
    let known = dir.join("known.png");
    png(&known, &common::generated_image(w, h, 3, 71), w, h);
    let hk = &json_lines(
        &ok(&run(
            &data,
            &["hash", "--algo", "pdq", known.to_str().unwrap()],
        ))
        .stdout,
    )[0];
    let csv = dir.join("list.csv");
    std::fs::write(
        &csv,
        format!(
            "hash_type,hash,classification,external_id\npdq,{},A1,case-1\n",
            hk["pdq"]["hash"].as_str().unwrap()
        ),
    )
    .unwrap();
    common::cli_list_from_csv(&data, "known", &["--source", "test"], &csv);
    let context = dir.join("context.json");
    common::write_context(&context, serde_json::json!({}));
    let m = run(
        &data,
        &[
            "match",
            "--report",
            "--context",
            context.to_str().unwrap(),
            known.to_str().unwrap(),
        ],
    );
    common::assert_exit(&m, 1);
    (data, known)
}

#[test]
fn signing_keys_rotate_are_published_and_a_retired_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (data, known) = data_with_a_report(dir.path());
    let k1 = ok(&run(&data, &["report", "public-key"])).stdout.clone();
    let k1_file = dir.path().join("k1.pub");
    std::fs::write(&k1_file, &k1).unwrap();

    // Rotate twice, the second time keeping the retired key; a report in between.
    let r1 = &json_lines(&ok(&run(&data, &["report", "rotate-key"])).stdout)[0];
    assert_eq!(r1["seq"], 2);
    assert!(r1["retired_key_file"].is_null());
    let context = dir.path().join("context.json");
    let m = run(
        &data,
        &[
            "match",
            "--report",
            "--context",
            context.to_str().unwrap(),
            known.to_str().unwrap(),
        ],
    );
    common::assert_exit(&m, 1);
    let r2 = &json_lines(&ok(&run(&data, &["report", "rotate-key", "--keep-old-key"])).stdout)[0];
    assert_eq!(r2["seq"], 4);
    let retired = std::path::PathBuf::from(r2["retired_key_file"].as_str().unwrap());
    assert_eq!(mode(&retired), 0o600);
    assert_eq!(mode(&data.join("keys/report-signing.key")), 0o600);
    assert!(!data.join("keys/report-signing.key.next").exists());

    // The history, for publishing: oldest first, with the entries each key signs.
    let all = json_lines(&ok(&run(&data, &["report", "public-key", "--all"])).stdout);
    let epochs: Vec<(Value, Value, Value)> = all
        .iter()
        .map(|k| {
            (
                k["status"].clone(),
                k["active_from_seq"].clone(),
                k["retired_at_seq"].clone(),
            )
        })
        .collect();
    assert_eq!(
        epochs,
        vec![
            ("retired".into(), 1.into(), 2.into()),
            ("retired".into(), 3.into(), 4.into()),
            ("active".into(), 5.into(), Value::Null),
        ]
    );
    assert_eq!(
        all[0]["public_key_pem"].as_str().unwrap().as_bytes(),
        &k1[..]
    );
    assert_eq!(all[1]["key_id"], r2["old_key_id"]);

    // Verify: with the active key, and with the first key published before any rotation.
    let v = &json_lines(&ok(&run(&data, &["report", "verify"])).stdout)[0];
    assert_eq!(
        (v["entries"].as_u64(), v["reports"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(v["active_key_id"], r2["new_key_id"]);
    ok(&run(
        &data,
        &[
            "report",
            "verify",
            "--public-key",
            k1_file.to_str().unwrap(),
        ],
    ));

    // A retired key is refused, on the command line and by the server, naming the active key.
    let refused = run(
        &data,
        &[
            "report",
            "--signing-key",
            retired.to_str().unwrap(),
            "review",
            "1",
            "--decision",
            "confirm",
            "--reviewer",
            "rev-1",
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not the report ledger's active key"), "{err}");
    assert!(err.contains(r2["new_key_id"].as_str().unwrap()), "{err}");
    let config = dir.path().join("baken.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\ndemo_list = false\n[metrics]\nlisten = \"off\"\n[reports]\nsigning_key = {:?}\n",
            data.to_str().unwrap(),
            retired.to_str().unwrap()
        ),
    )
    .unwrap();
    let serve = Command::new(env!("CARGO_BIN_EXE_baken"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("BAKEN_DATA")
        .env_remove("BAKEN_SIGNING_KEY")
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(2));
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(err.contains("not the report ledger's active key"), "{err}");

    // A configured key is rotated by naming the new one; Baken writes no key file then.
    let external = dir.path().join("current.key");
    std::fs::copy(data.join("keys/report-signing.key"), &external).unwrap();
    std::fs::set_permissions(&external, std::fs::Permissions::from_mode(0o600)).unwrap();
    let needs_new = run(
        &data,
        &[
            "report",
            "--signing-key",
            external.to_str().unwrap(),
            "rotate-key",
        ],
    );
    assert_eq!(needs_new.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&needs_new.stderr).contains("--new-key"));
    let new_key = dir.path().join("new.key");
    std::fs::write(&new_key, hex::encode([42u8; 32])).unwrap();
    std::fs::set_permissions(&new_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r3 = &json_lines(
        &ok(&run(
            &data,
            &[
                "report",
                "--signing-key",
                external.to_str().unwrap(),
                "rotate-key",
                "--new-key",
                new_key.to_str().unwrap(),
            ],
        ))
        .stdout,
    )[0];
    assert_eq!(r3["seq"], 5);
    ok(&run(
        &data,
        &[
            "report",
            "--signing-key",
            new_key.to_str().unwrap(),
            "verify",
        ],
    ));
    ok(&run(
        &data,
        &[
            "report",
            "verify",
            "--public-key",
            k1_file.to_str().unwrap(),
        ],
    ));
}
