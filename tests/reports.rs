//! Reports, library level: schema round trip, signatures and the chain (tampering and deletion
//! named), the review workflow, retention with a fake clock, statistics on known reviews, the
//! NCMEC XML, and no image bytes (nor anything of non-matching content) in the data directory.

mod common;

use common::{contains, files_under};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baken::hashing::{HashOptions, HashOutput, Hasher};
use baken::index::{Match, MatchConfig, Matcher};
use baken::reports::export::{self, ReportDocument};
use baken::reports::sign::digest;
use baken::reports::{
    CallerContext, Decision, FileHashes, PublicKey, Report, ReportConfig, ReportError,
    ReportStatus, ReportStore, Retention, ReviewPolicy, ScanCounts, Signer, stats,
};
use baken::store::import::{self, Format};
use baken::store::{HashType, NewList, Store};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

/// A personal-data sentinel: must vanish from the data directory once its report is purged.
const SCREEN_NAME: &str = "sentinel_user_4711";

fn ctx() -> CallerContext {
    serde_json::from_value(serde_json::json!({
        "provider": {
            "name": "Example Photos Ltd",
            "legal_representative": "Example Legal Rep",
            "contact_point": {"first_name": "Pat", "last_name": "Contact", "email": "abuse@example.invalid"}
        },
        "legal_basis": "Regulation (EU) 2021/1232, Art. 3",
        "recipient": {"organisation": "NCMEC", "country_code": "US"},
        "content_reference": "evidence://vault/item/1",
        "urgency": {"urgent": true, "reason": "ongoing abuse suspected"},
        "report_tags": ["sextortion", "internal-tag"],
        "original_file_name": "holiday.png",
        "file_viewed_by_provider": false,
        "publicly_available": false,
        "exif": {"Model": "TestCam"},
        "file_annotations": ["viral"],
        "reported_user": {
            "esp_id": "user-123",
            "screen_name": SCREEN_NAME,
            "display_names": ["Sentinel"],
            "profile_urls": ["https://photos.example.invalid/u/123"],
            "esp_service": "Photos"
        },
        "ip_events": [{"ip": "192.0.2.7", "port": 443, "at": "2025-02-28T23:00:00Z", "event": "upload", "possible_proxy": false}],
        "estimated_location": {"city": "Exampleton", "country_code": "NL"},
        "removal_status": "removed",
        "also_reported_to": ["National hotline"],
        "user_notified": {"notified": false, "redress_information": "https://photos.example.invalid/appeal"},
        "other_data": "none"
    }))
    .unwrap()
}

fn pdq() -> HashType {
    HashType::new("pdq").unwrap()
}

fn md5() -> HashType {
    HashType::new("md5").unwrap()
}

/// A hand-made match, for tests that need known matches rather than real hashing.
fn m(list: &str, ty: HashType, entry: &str, distance: u32, threshold: u32) -> Match {
    Match {
        list: list.into(),
        list_version: 1,
        hash: "00".into(),
        hash_type: ty,
        entry: entry.into(),
        distance,
        threshold,
        transform: None,
        classification: Some("A1".into()),
        media_type: None,
        video: None,
        candidate: None,
    }
}

fn file_hashes() -> FileHashes {
    FileHashes {
        md5: Some("0123456789abcdef0123456789abcdef".into()),
        sha1: None,
        sha256: None,
        perceptual: Vec::new(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    rs: Arc<ReportStore>,
    key: PublicKey,
}

fn seed() -> [u8; 32] {
    [7u8; 32]
}

fn open(dir: &Path, config: ReportConfig) -> Arc<ReportStore> {
    let store = Arc::new(Store::open(dir).unwrap());
    Arc::new(ReportStore::new(store, Some(Signer::from_seed(seed())), config).unwrap())
}

fn fixture(config: ReportConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rs = open(dir.path(), config);
    let key = Signer::from_seed(seed()).public();
    Fixture { dir, rs, key }
}

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

fn create(rs: &ReportStore, matches: &[Match], now: OffsetDateTime) -> Report {
    rs.create(&ctx(), &file_hashes(), matches, now, "tester")
        .unwrap()
}

fn kinds(rs: &ReportStore, key: &PublicKey) -> Vec<(&'static str, Option<String>)> {
    let v = rs.verify(key, "tester", T0).unwrap();
    v.problems
        .iter()
        .map(|p| (p.kind, p.report_id.clone()))
        .collect()
}

/// Validate `v` against the schema file (draft 2020-12) with a real JSON Schema validator.
fn validate(schema: &Value, v: &Value, errs: &mut Vec<String>) {
    let validator = jsonschema::validator_for(schema).expect("the schema file is a valid schema");
    errs.extend(validator.iter_errors(v).map(|e| e.to_string()));
}

fn schema() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report-v1.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn schema_round_trip_and_the_export_validates() {
    let f = fixture(ReportConfig::default());
    let r = create(
        &f.rs,
        &[
            m("ncmec", pdq(), "item-1", 3, 31),
            m("ncmec", md5(), "item-1", 0, 0),
        ],
        T0,
    );
    let body = r.body.clone().unwrap();
    // Body round trip, and the stored body is the canonical one.
    let text = serde_json::to_string(&body).unwrap();
    assert_eq!(
        serde_json::from_str::<baken::reports::ReportBody>(&text).unwrap(),
        body
    );
    let read = f.rs.get(&body.report_id, "tester", T0).unwrap();
    assert_eq!(read.body.as_ref(), Some(&body));
    assert_eq!(read.state.status, ReportStatus::PendingReview);

    let (rep, entry) =
        f.rs.get_for_export(&body.report_id, "csar-json", true, "tester", T0)
            .unwrap();
    let json = export::csar_json(&rep, &entry, Some(&f.key), true).unwrap();
    let doc: ReportDocument = serde_json::from_str(&json).unwrap();
    assert_eq!(doc.report, body);
    assert!(doc.draft);
    assert_eq!(serde_json::to_string_pretty(&doc).unwrap(), json);

    // Every field validates against the schema file; nothing the schema lacks is present.
    let s = schema();
    let v: Value = serde_json::from_str(&json).unwrap();
    let mut errs = Vec::new();
    validate(&s, &v, &mut errs);
    assert!(errs.is_empty(), "{errs:#?}");
    // A confirmed report's export (with its human review) validates too.
    f.rs.review(&body.report_id, Decision::Confirmed, "rev-1", "tester", T0)
        .unwrap();
    let (rep2, entry2) =
        f.rs.get_for_export(&body.report_id, "csar-json", false, "tester", T0)
            .unwrap();
    let confirmed: Value =
        serde_json::to_value(export::csar_document(&rep2, &entry2, Some(&f.key), false).unwrap())
            .unwrap();
    assert_eq!(confirmed["human_review"]["decision"], "confirmed");
    let mut errs = Vec::new();
    validate(&s, &confirmed, &mut errs);
    assert!(errs.is_empty(), "{errs:#?}");
    // And the check has teeth: a missing required field and an unknown one are caught.
    let mut bad = v.clone();
    bad["report"].as_object_mut().unwrap().remove("legal_basis");
    bad["report"]["files"][0]["image_bytes"] = Value::String("AAAA".into());
    let mut errs = Vec::new();
    validate(&s, &bad, &mut errs);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    // The JSON Schema's required list says what a report cannot go without.
    let req: Vec<&str> = s["$defs"]["ReportBody"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for f in [
        "provider",
        "legal_basis",
        "recipient",
        "files",
        "retention_deadline",
    ] {
        assert!(req.contains(&f), "{f}");
    }

    // A recipient can check the signature and the body digest from the export alone.
    let canonical = serde_json::to_vec(&doc.report).unwrap();
    assert_eq!(hex::encode(digest(&canonical)), doc.integrity.body_digest);
    let signed: Value = serde_json::from_str(&doc.integrity.signed_entry).unwrap();
    assert_eq!(signed["body_digest"], doc.integrity.body_digest.as_str());
    let key = PublicKey::parse(doc.integrity.public_key.as_deref().unwrap()).unwrap();
    let sig = hex::decode(&doc.integrity.signature).unwrap();
    assert!(key.verify(doc.integrity.signed_entry.as_bytes(), &sig));

    // What the caller must supply is enforced.
    let mut c = ctx();
    c.content_reference = None;
    assert!(matches!(
        f.rs.create(&c, &file_hashes(), &[m("l", pdq(), "e", 0, 31)], T0, "t"),
        Err(ReportError::Invalid(_))
    ));
    let mut c = ctx();
    c.provider.contact_point.email = " ".into();
    assert!(
        f.rs.create(&c, &file_hashes(), &[m("l", pdq(), "e", 0, 31)], T0, "t")
            .is_err()
    );
    assert!(f.rs.create(&ctx(), &file_hashes(), &[], T0, "t").is_err());
    // Unknown fields in a context are refused, not silently dropped.
    assert!(
        serde_json::from_str::<CallerContext>(
            r#"{"provider":{"name":"x","contact_point":{"email":"a@b"}},"legal_basis":"x","recipient":{"organisation":"x"},"image":"AAAA"}"#
        )
        .is_err()
    );
}

/// Reopen the data directory as raw RocksDB (the store closed), let `f` tamper, reopen.
fn tamper(fx: &mut Fixture, f: impl FnOnce(&rocksdb::DB)) {
    let path = fx.dir.path().to_path_buf();
    // Swap in a placeholder store so the real one is dropped (and its lock released).
    let placeholder = tempfile::tempdir().unwrap();
    fx.rs = open(placeholder.path(), ReportConfig::default());
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &names).unwrap();
        f(&db);
    }
    fx.rs = open(&path, ReportConfig::default());
}

fn seq_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

#[test]
fn signatures_and_chain_verify_and_every_tampering_is_named() {
    type Tamper = Box<dyn Fn(&rocksdb::DB)>;
    // (what, the tampering, the problem kind expected, which report it names (1-based; 0: none))
    let scenarios: Vec<(&str, Tamper, &str, usize)> = vec![
        (
            "a body altered",
            Box::new(|db| {
                let cf = db.cf_handle("report_bodies").unwrap();
                let v = db.get_cf(cf, seq_key(2)).unwrap().unwrap();
                let t = String::from_utf8(v)
                    .unwrap()
                    .replace("user-123", "user-999");
                db.put_cf(cf, seq_key(2), t).unwrap();
            }),
            "body_altered",
            2,
        ),
        (
            "a ledger entry altered",
            Box::new(|db| {
                let cf = db.cf_handle("report_ledger").unwrap();
                let v = db.get_cf(cf, seq_key(1)).unwrap().unwrap();
                let (sig, body) = v.split_at(64);
                let t = String::from_utf8(body.to_vec())
                    .unwrap()
                    .replace("2026-03-01", "2025-04-01");
                let mut nv = sig.to_vec();
                nv.extend_from_slice(t.as_bytes());
                db.put_cf(cf, seq_key(1), nv).unwrap();
            }),
            "bad_signature",
            1,
        ),
        (
            "a whole report deleted",
            Box::new(|db| {
                for cf in ["report_ledger", "report_bodies", "report_state"] {
                    db.delete_cf(db.cf_handle(cf).unwrap(), seq_key(2)).unwrap();
                }
            }),
            "missing_entry",
            2,
        ),
        (
            "a body deleted without a purge",
            Box::new(|db| {
                db.delete_cf(db.cf_handle("report_bodies").unwrap(), seq_key(3))
                    .unwrap();
            }),
            "body_missing",
            3,
        ),
        (
            "the last report cut off",
            Box::new(|db| {
                for cf in ["report_ledger", "report_bodies", "report_state"] {
                    db.delete_cf(db.cf_handle(cf).unwrap(), seq_key(3)).unwrap();
                }
            }),
            "truncated",
            3,
        ),
        (
            "a state changed to ready",
            Box::new(|db| {
                let cf = db.cf_handle("report_state").unwrap();
                let v = db.get_cf(cf, seq_key(1)).unwrap().unwrap();
                let t = String::from_utf8(v)
                    .unwrap()
                    .replace("pending_review", "ready_to_send");
                db.put_cf(cf, seq_key(1), t).unwrap();
            }),
            "state_mismatch",
            1,
        ),
        (
            "an audit record deleted",
            Box::new(|db| {
                db.delete_cf(db.cf_handle("report_audit").unwrap(), seq_key(2))
                    .unwrap();
            }),
            "audit_chain",
            0,
        ),
    ];
    for (what, f, kind, report) in scenarios {
        let mut fx = fixture(ReportConfig::default());
        let ids: Vec<String> = (0..3)
            .map(|i| {
                create(&fx.rs, &[m("l", pdq(), &format!("e{i}"), 0, 31)], T0)
                    .state
                    .report_id
            })
            .collect();
        let ok = fx.rs.verify(&fx.key, "tester", T0).unwrap();
        assert!(ok.ok, "{what}: intact before: {:?}", ok.problems);
        assert_eq!((ok.entries, ok.reports), (3, 3));
        tamper(&mut fx, f);
        let v = fx.rs.verify(&fx.key, "tester", T0).unwrap();
        assert!(!v.ok, "{what}: not detected");
        let first = &v.problems[0];
        assert!(
            v.problems.iter().any(|p| p.kind == kind),
            "{what}: {:#?}",
            v.problems
        );
        if report > 0 {
            let id = &ids[report - 1];
            let p = v.problems.iter().find(|p| p.kind == kind).unwrap();
            assert_eq!(p.report_id.as_ref(), Some(id), "{what}: {first:?}");
            assert!(p.message.contains(id.as_str()), "{what}: {}", p.message);
        }
    }

    // Another key does not verify.
    let fx = fixture(ReportConfig::default());
    create(&fx.rs, &[m("l", pdq(), "e", 0, 31)], T0);
    let other = Signer::from_seed([9; 32]).public();
    assert_eq!(kinds(&fx.rs, &other)[0].0, "wrong_key");
}

#[test]
fn purges_keep_the_chain_verifiable() {
    let f = fixture(ReportConfig {
        retention: Retention::Days(30),
        ..ReportConfig::default()
    });
    let a = create(&f.rs, &[m("l", pdq(), "a", 0, 31)], T0);
    let b = create(&f.rs, &[m("l", pdq(), "b", 0, 31)], T0);
    create(
        &f.rs,
        &[m("l", pdq(), "c", 0, 31)],
        T0 + Duration::from_secs(40 * 86400),
    );
    f.rs.review(
        &b.state.report_id,
        Decision::Rejected,
        "rev-1",
        "tester",
        T0,
    )
    .unwrap();
    let purged =
        f.rs.purge_expired(T0 + Duration::from_secs(31 * 86400), "tester")
            .unwrap();
    assert_eq!(purged.purged, vec![a.state.report_id.clone()]);
    let v = f.rs.verify(&f.key, "tester", T0).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!((v.reports, v.purged, v.entries), (3, 2, 6));
}

#[test]
fn review_workflow_and_policy() {
    let f = fixture(ReportConfig::default());
    let r = create(&f.rs, &[m("ncmec", md5(), "x", 0, 0)], T0);
    let id = r.state.report_id.clone();
    assert_eq!(r.state.status, ReportStatus::PendingReview);
    // Not ready: no export for sending.
    assert!(matches!(
        f.rs.get_for_export(&id, "ncmec-xml", false, "t", T0),
        Err(ReportError::WrongState { .. })
    ));
    // Pseudonyms only.
    assert!(matches!(
        f.rs.review(&id, Decision::Confirmed, "jane@example.org", "t", T0),
        Err(ReportError::Invalid(_))
    ));
    let s =
        f.rs.review(&id, Decision::Confirmed, "rev-07", "t", T0)
            .unwrap();
    assert_eq!(s.status, ReportStatus::ReadyToSend);
    assert_eq!(
        s.human_review.as_ref().unwrap().reviewer_pseudonym,
        "rev-07"
    );
    assert!(
        f.rs.get_for_export(&id, "ncmec-xml", false, "t", T0)
            .is_ok()
    );
    // One decision per report.
    assert!(matches!(
        f.rs.review(&id, Decision::Rejected, "rev-08", "t", T0),
        Err(ReportError::WrongState { .. })
    ));

    // Rejected: a false positive, its personal data gone at once.
    let r2 = create(&f.rs, &[m("ncmec", pdq(), "y", 12, 31)], T0);
    let s =
        f.rs.review(&r2.state.report_id, Decision::Rejected, "rev-07", "t", T0)
            .unwrap();
    assert_eq!(s.status, ReportStatus::Rejected);
    assert!(s.purged.is_some());
    let read = f.rs.get(&r2.state.report_id, "t", T0).unwrap();
    assert!(read.body.is_none());
    assert!(matches!(
        f.rs.get_for_export(&r2.state.report_id, "csar-json", true, "t", T0),
        Err(ReportError::Purged(..))
    ));
    assert!(f.rs.verify(&f.key, "t", T0).unwrap().ok);

    // The audit saw every read, export, review and purge, with who and when.
    let audit = f.rs.audit_log().unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for a in [
        "report.create",
        "report.review",
        "report.export",
        "report.purge",
        "report.read",
        "report.verify",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert!(audit.iter().all(|a| a.actor == "t" || a.actor == "tester"));

    // Policy: confirmed lists skip review only when the operator turned review off, and only
    // for an identical hash of a classified entry.
    let policy = |require_review: bool| ReportConfig {
        review: ReviewPolicy {
            require_review,
            confirmed_lists: ["ncmec".to_string()].into(),
            auto_ready_max_distance: 0,
        },
        ..ReportConfig::default()
    };
    let g = fixture(policy(false));
    let auto = create(&g.rs, &[m("ncmec", md5(), "x", 0, 0)], T0);
    assert_eq!(auto.state.status, ReportStatus::ReadyToSend);
    assert!(auto.state.auto_ready.as_deref().unwrap().contains("ncmec"));
    let near = create(&g.rs, &[m("ncmec", pdq(), "x", 5, 31)], T0);
    assert_eq!(near.state.status, ReportStatus::PendingReview);
    let other = create(&g.rs, &[m("own", md5(), "x", 0, 0)], T0);
    assert_eq!(other.state.status, ReportStatus::PendingReview);
    let mut c = ctx();
    c.abuse_type = Some(baken::reports::AbuseType::NewCsam);
    let new =
        g.rs.create(&c, &file_hashes(), &[m("ncmec", md5(), "x", 0, 0)], T0, "t")
            .unwrap();
    assert_eq!(new.state.status, ReportStatus::PendingReview);
    let h = fixture(policy(true));
    let reviewed = create(&h.rs, &[m("ncmec", md5(), "x", 0, 0)], T0);
    assert_eq!(reviewed.state.status, ReportStatus::PendingReview);
    // An auto-ready report can still be rejected by a human.
    let s =
        g.rs.review(&auto.state.report_id, Decision::Rejected, "rev-1", "t", T0)
            .unwrap();
    assert_eq!(s.status, ReportStatus::Rejected);
    assert!(g.rs.verify(&g.key, "t", T0).unwrap().ok);
}

#[test]
fn retention_purge_with_a_fake_clock() {
    let scratch = tempfile::tempdir().unwrap();
    assert!(
        ReportStore::new(
            Arc::new(Store::open(scratch.path()).unwrap()),
            None,
            ReportConfig {
                retention: Retention::Months(13),
                ..ReportConfig::default()
            },
        )
        .is_err(),
        "no more than 12 months"
    );
    let f = fixture(ReportConfig {
        retention: Retention::Months(3),
        ..ReportConfig::default()
    });
    // Detected two weeks before the report was made: the deadline runs from detection.
    let mut c = ctx();
    c.detected_at = Some("2025-02-15T12:00:00Z".into());
    let r =
        f.rs.create(&c, &file_hashes(), &[m("l", pdq(), "e", 0, 31)], T0, "t")
            .unwrap();
    assert_eq!(r.state.retention_deadline, "2025-05-15T12:00:00Z");
    let kept = create(&f.rs, &[m("l", pdq(), "f", 0, 31)], T0);
    assert_eq!(kept.state.retention_deadline, "2025-06-01T12:00:00Z");
    f.rs.review(&r.state.report_id, Decision::Confirmed, "rev-1", "t", T0)
        .unwrap();

    let before = datetime!(2025-05-15 11:59:59 UTC);
    assert!(f.rs.purge_expired(before, "t").unwrap().purged.is_empty());
    let at = datetime!(2025-05-15 12:00 UTC);
    assert_eq!(
        f.rs.purge_expired(at, "t").unwrap().purged,
        vec![r.state.report_id.clone()]
    );
    // Idempotent.
    assert!(f.rs.purge_expired(at, "t").unwrap().purged.is_empty());
    let gone = f.rs.get(&r.state.report_id, "t", at).unwrap();
    assert!(gone.body.is_none());
    assert_eq!(
        gone.state.purged.as_ref().unwrap().reason,
        baken::reports::PurgeReason::RetentionExpired
    );
    assert!(
        f.rs.get(&kept.state.report_id, "t", at)
            .unwrap()
            .body
            .is_some()
    );
    assert!(f.rs.verify(&f.key, "t", at).unwrap().ok);
    // Aggregate counters survive the purge.
    let s = stats::compute(&f.rs, "2025-01-01", "2025-12-31").unwrap();
    assert_eq!(s.reports.created, 2);
    assert_eq!(s.reviews.confirmed, 1);
    assert_eq!(s.retention.purged_expired, 1);
    assert_eq!(s.retention.applied.get("3m"), Some(&2));

    // The background task purges with the wall clock.
    let g = fixture(ReportConfig::default());
    let mut c = ctx();
    let old = OffsetDateTime::now_utc() - Duration::from_secs(400 * 86400);
    c.detected_at = Some(baken::reports::rfc3339(old));
    let r =
        g.rs.create(
            &c,
            &file_hashes(),
            &[m("l", pdq(), "e", 0, 31)],
            OffsetDateTime::now_utc(),
            "t",
        )
        .unwrap();
    let fresh = create(
        &g.rs,
        &[m("l", pdq(), "f", 0, 31)],
        OffsetDateTime::now_utc(),
    );
    let purger = ReportStore::spawn_purger(&g.rs, Duration::from_millis(20));
    let start = Instant::now();
    while g
        .rs
        .get(&r.state.report_id, "t", T0)
        .unwrap()
        .body
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "background purge"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(purger);
    assert!(
        g.rs.get(&fresh.state.report_id, "t", T0)
            .unwrap()
            .body
            .is_some()
    );
}

#[test]
fn statistics_on_a_known_set_of_reviews() {
    let f = fixture(ReportConfig::default());
    let d1 = datetime!(2025-03-01 10:00 UTC);
    let d2 = datetime!(2025-03-02 10:00 UTC);
    let out = datetime!(2025-04-01 10:00 UTC);
    f.rs.record_scans(
        &ScanCounts {
            matched: 4,
            not_matched: 95,
            suppressed: 2,
            failed: 1,
        },
        d1,
    )
    .unwrap();
    f.rs.record_scans(
        &ScanCounts {
            matched: 1,
            not_matched: 9,
            ..ScanCounts::default()
        },
        out,
    )
    .unwrap();
    // A and B: the same known item (one case, one duplicate); C another; D two lists.
    let a = create(&f.rs, &[m("L1", pdq(), "k1", 4, 31)], d1);
    let b = create(&f.rs, &[m("L1", pdq(), "k1", 20, 31)], d1);
    let c = create(&f.rs, &[m("L2", md5(), "k2", 0, 0)], d1);
    let d = create(
        &f.rs,
        &[m("L1", pdq(), "k3", 30, 31), m("L2", md5(), "k3", 0, 0)],
        d1,
    );
    create(&f.rs, &[m("L1", pdq(), "k9", 0, 31)], out);
    for (r, dec) in [
        (&a, Decision::Confirmed),
        (&b, Decision::Rejected),
        (&c, Decision::Confirmed),
        (&d, Decision::Rejected),
    ] {
        f.rs.review(&r.state.report_id, dec, "rev-1", "t", d2)
            .unwrap();
    }
    let s = stats::compute(&f.rs, "2025-03-01", "2025-03-31").unwrap();
    assert_eq!(s.volume.processed, 100);
    assert_eq!(s.volume.matched, 4);
    assert_eq!(s.volume.not_matched, 95);
    assert_eq!(s.volume.suppressed_by_negative_lists, 2);
    assert_eq!(s.volume.failed, 1);
    assert_eq!(s.reports.created, 4);
    assert_eq!(s.reports.by_abuse_type.get("known_csam"), Some(&4));
    assert_eq!(s.reports.urgent, 4);
    assert_eq!(s.matches.total, 5);
    assert_eq!(s.matches.by_hash_type.get("pdq"), Some(&3));
    assert_eq!(s.matches.by_list.get("L2"), Some(&2));
    assert_eq!((s.cases.unique, s.cases.duplicate), (3, 1));
    assert_eq!(
        (s.reviews.total, s.reviews.confirmed, s.reviews.rejected),
        (4, 2, 2)
    );
    assert_eq!(s.false_positives.total, 2);
    assert_eq!(s.false_positives.error_rate, Some(0.5));
    let pdq_rate = &s.false_positives.by_hash_type["pdq"];
    assert_eq!((pdq_rate.confirmed, pdq_rate.rejected), (1, 2));
    assert_eq!(pdq_rate.error_rate, Some(0.666667));
    let md5_rate = &s.false_positives.by_hash_type["md5"];
    assert_eq!((md5_rate.confirmed, md5_rate.rejected), (1, 1));
    assert_eq!(s.false_positives.by_list["L1"].rejected, 2);
    assert_eq!(s.false_positives.by_list["L2"].confirmed, 1);
    assert_eq!(s.false_positives.by_threshold["pdq@31"].rejected, 2);
    assert_eq!(
        s.false_positives.by_threshold["md5@0"].error_rate,
        Some(0.5)
    );
    assert_eq!(s.retention.purged_false_positive, 2);
    assert_eq!(s.retention.max_months, 12);
    assert_eq!(s.recipients.reports_created.get("NCMEC"), Some(&4));
    assert_eq!(s.reports.by_legal_basis.len(), 1);

    // The first day alone: reports but no reviews yet.
    let day1 = stats::compute(&f.rs, "2025-03-01", "2025-03-01").unwrap();
    assert_eq!(day1.reports.created, 4);
    assert_eq!(day1.reviews.total, 0);
    assert_eq!(day1.false_positives.error_rate, None);
    // The whole year includes April.
    let year = stats::compute(&f.rs, "2025-01-01", "2025-12-31").unwrap();
    assert_eq!((year.reports.created, year.volume.processed), (5, 110));
    assert!(stats::compute(&f.rs, "2025-12-31", "2025-01-01").is_err());
    assert!(stats::compute(&f.rs, "March", "2025-01-01").is_err());
}

// ---------------------------------------------------------------------------------------------
// The real pipeline: generated benign images, hashed, listed, matched, reported.
// ---------------------------------------------------------------------------------------------

struct Pipeline {
    dir: tempfile::TempDir,
    rs: Arc<ReportStore>,
    matcher: Matcher,
    hasher: Hasher,
}

fn pipeline(known: &[&HashOutput], classification: &str) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store
        .create_list(
            NewList {
                name: "known".into(),
                source: "test".into(),
                classification_scheme: Some("ncmec".into()),
                ..NewList::default()
            },
            "tester",
        )
        .unwrap();
    let mut csv = String::from("hash_type,hash,classification,external_id\n");
    for (i, h) in known.iter().enumerate() {
        let p = &h.pdq.as_ref().unwrap().hash;
        let m = h.md5.as_ref().unwrap();
        csv.push_str(&format!(
            "pdq,{p},{classification},item-{i}\nmd5,{m},{classification},item-{i}\n"
        ));
    }
    import::import(&store, "known", Format::Csv, csv.as_bytes(), "t", "tester").unwrap();
    let matcher = Matcher::open(store.clone(), MatchConfig::default()).unwrap();
    let rs = Arc::new(
        ReportStore::new(
            store,
            Some(Signer::load_or_generate(dir.path()).unwrap().0),
            ReportConfig::default(),
        )
        .unwrap(),
    );
    Pipeline {
        dir,
        rs,
        matcher,
        hasher: Hasher::new(HashOptions::default()),
    }
}

/// Scan one file as a provider would: match; report a match; count everything.
fn scan(p: &Pipeline, bytes: &[u8], now: OffsetDateTime) -> Option<Report> {
    let out = p.hasher.hash_bytes(bytes).unwrap();
    let r = p
        .matcher
        .match_query(&baken::engine::query_from(&out), None)
        .unwrap();
    let counts = ScanCounts {
        matched: u64::from(!r.matches.is_empty()),
        not_matched: u64::from(r.matches.is_empty()),
        ..ScanCounts::default()
    };
    p.rs.record_scans(&counts, now).unwrap();
    (!r.matches.is_empty()).then(|| {
        p.rs.create(&ctx(), &FileHashes::from(&out), &r.matches, now, "tester")
            .unwrap()
    })
}

/// A tiny XML tree, to check the export's structure after parsing it back.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, n: &str) -> &Node {
        self.children
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("no <{n}> in <{}>", self.name))
    }
    fn all(&self, n: &str) -> Vec<&Node> {
        self.children.iter().filter(|c| c.name == n).collect()
    }
    fn names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

fn parse_xml(xml: &str) -> Node {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut stack = vec![Node::default()];
    let start = |e: &quick_xml::events::BytesStart| Node {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        attrs: e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect(),
        ..Node::default()
    };
    loop {
        match r.read_event().unwrap() {
            Event::Start(e) => stack.push(start(&e)),
            Event::Empty(e) => {
                let n = start(&e);
                stack.last_mut().unwrap().children.push(n);
            }
            Event::Text(t) => {
                let s = t.decode().unwrap();
                stack.last_mut().unwrap().text.push_str(&s);
            }
            Event::GeneralRef(g) => {
                let name = g.decode().unwrap();
                let c = quick_xml::escape::resolve_predefined_entity(&name).unwrap();
                stack.last_mut().unwrap().text.push_str(c);
            }
            Event::End(_) => {
                let n = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(n);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "balanced");
    stack.pop().unwrap().children.pop().unwrap()
}

#[test]
fn ncmec_xml_carries_the_right_hashes_and_classifications() {
    let (w, h) = (320u32, 240u32);
    let img = common::generated_png(w, h, 41);
    let hasher = Hasher::new(HashOptions::default());
    let out = hasher.hash_bytes(&img).unwrap();
    let p = pipeline(&[&out], "A2");
    let r = scan(&p, &img, T0).expect("it matches");
    let id = r.state.report_id.clone();
    p.rs.review(&id, Decision::Confirmed, "rev-1", "t", T0)
        .unwrap();
    let (rep, _) =
        p.rs.get_for_export(&id, "ncmec-xml", false, "t", T0)
            .unwrap();
    let xml = export::ncmec_xml(&rep).unwrap();
    let root = parse_xml(&xml);
    assert_eq!(root.name, "cybertiplineExport");
    assert_eq!(root.attrs["bakenReportId"], id);
    assert_eq!(root.names(), vec!["report", "fileDetails"]);

    let report = root.child("report");
    // The CyberTipline schema's element order.
    assert_eq!(
        report.names(),
        vec![
            "incidentSummary",
            "reporter",
            "personOrUserReported",
            "additionalInfo"
        ]
    );
    let s = report.child("incidentSummary");
    assert_eq!(s.child("incidentType").text, export::NCMEC_CSAM);
    assert_eq!(
        s.child("escalateToHighPriority").text,
        "ongoing abuse suspected"
    );
    assert_eq!(s.child("reportAnnotations").names(), vec!["sextortion"]);
    assert_eq!(s.child("incidentDateTime").text, "2025-03-01T12:00:00Z");
    let rp = report.child("reporter").child("reportingPerson");
    assert_eq!(rp.names(), vec!["firstName", "lastName", "email"]);
    assert_eq!(rp.child("email").text, "abuse@example.invalid");
    let u = report.child("personOrUserReported");
    assert_eq!(u.child("espIdentifier").text, "user-123");
    assert_eq!(u.child("screenName").text, SCREEN_NAME);
    let ip = u.child("ipCaptureEvent");
    assert_eq!(ip.child("ipAddress").text, "192.0.2.7");
    assert_eq!(ip.child("eventName").text, "Upload");
    assert_eq!(ip.child("port").text, "443");
    assert_eq!(u.child("estimatedLocation").child("countryCode").text, "NL");
    let info = &report.child("additionalInfo").text;
    assert!(info.contains("Regulation (EU) 2021/1232, Art. 3"), "{info}");
    assert!(info.contains("removal status: removed"), "{info}");
    assert!(info.contains("internal-tag"), "{info}");

    let fd = root.child("fileDetails");
    assert_eq!(fd.child("industryClassification").text, "A2");
    assert_eq!(fd.child("originalFileName").text, "holiday.png");
    assert_eq!(fd.child("fileViewedByEsp").text, "false");
    assert_eq!(fd.child("fileAnnotations").names(), vec!["viral"]);
    let hashes: BTreeMap<String, String> = fd
        .all("originalFileHash")
        .iter()
        .map(|n| (n.attrs["hashType"].clone(), n.text.clone()))
        .collect();
    assert_eq!(hashes["MD5"], out.md5.clone().unwrap());
    assert_eq!(hashes["SHA1"], out.sha1.clone().unwrap());
    assert_eq!(hashes["SHA256"], out.sha256.clone().unwrap());
    let details = fd.all("details");
    let hash_details = details
        .iter()
        .find(|d| d.attrs.get("type").map(String::as_str) == Some("HASH"))
        .unwrap();
    let pairs: BTreeMap<String, String> = hash_details
        .all("nameValuePair")
        .iter()
        .map(|n| (n.child("name").text.clone(), n.child("value").text.clone()))
        .collect();
    assert_eq!(pairs["PDQ"], out.pdq.as_ref().unwrap().hash);
    assert!(
        details
            .iter()
            .any(|d| d.attrs.get("type").map(String::as_str) == Some("EXIF"))
    );
    let finfo = &fd.child("additionalInfo").text;
    assert!(
        finfo.contains("entry item-0 by pdq at distance 0"),
        "{finfo}"
    );
    assert!(finfo.contains("entry item-0 by md5"), "{finfo}");
    assert!(finfo.contains("classification A2"), "{finfo}");
    assert!(finfo.contains("evidence://vault/item/1"), "{finfo}");
    // Draft exports are separate; the non-draft export was counted for the recipient.
    let st = stats::compute(&p.rs, "2025-03-01", "2025-03-01").unwrap();
    assert_eq!(st.recipients.exported.get("NCMEC"), Some(&1));
}

/// 64-byte windows from the start, middle and end.
fn windows(b: &[u8]) -> Vec<&[u8]> {
    let n = b.len();
    [0, n / 3, n / 2, n.saturating_sub(64)]
        .into_iter()
        .map(|s| &b[s..(s + 64).min(n)])
        .collect()
}

#[test]
fn no_image_bytes_nor_non_matching_content_is_stored() {
    let (w, h) = (256u32, 192u32);
    let known_px = common::generated_image(w, h, 3, 51);
    let other_px = common::generated_image(w, h, 3, 52);
    let known_png = common::rgb_png(&known_px, w, h);
    let known_jpg = baken::decode::jpeg::encode(&known_px, w, h, 3, 90, false).unwrap();
    let other_png = common::rgb_png(&other_px, w, h);
    let hasher = Hasher::new(HashOptions::default());
    let known_out = hasher.hash_bytes(&known_png).unwrap();
    let other_out = hasher.hash_bytes(&other_png).unwrap();
    let p = pipeline(&[&known_out], "A1");
    let a = scan(&p, &known_png, T0).expect("match");
    let b = scan(&p, &known_jpg, T0).expect("the JPEG copy matches by PDQ");
    assert!(scan(&p, &other_png, T0).is_none());
    p.rs.review(&a.state.report_id, Decision::Confirmed, "rev-1", "t", T0)
        .unwrap();
    let (rep, entry) =
        p.rs.get_for_export(&a.state.report_id, "csar-json", false, "t", T0)
            .unwrap();
    export::csar_json(&rep, &entry, None, false).unwrap();
    // A rejected report: its personal data must be physically gone.
    p.rs.review(&b.state.report_id, Decision::Rejected, "rev-1", "t", T0)
        .unwrap();
    let st = stats::compute(&p.rs, "2025-03-01", "2025-03-01").unwrap();
    assert_eq!((st.volume.processed, st.volume.matched), (3, 2));
    let Pipeline {
        dir, rs, matcher, ..
    } = p;
    drop(matcher);
    drop(rs);

    let stored: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(dir.path())
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect();
    assert!(
        stored
            .iter()
            .any(|(f, _)| f.extension().is_some_and(|e| e == "log"))
    );
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, bytes) in [
        ("known PNG", &known_png),
        ("known JPEG", &known_jpg),
        ("other PNG", &other_png),
        ("known pixels", &known_px),
        ("other pixels", &other_px),
    ] {
        for (i, w) in windows(bytes).into_iter().enumerate() {
            needles.push((format!("{what} window {i}"), w.to_vec()));
        }
    }
    // Nothing of the non-matching file: no hash in hex or raw form.
    let mut other_hashes = vec![
        other_out.md5.clone().unwrap(),
        other_out.sha1.clone().unwrap(),
        other_out.sha256.clone().unwrap(),
        other_out.pdq.as_ref().unwrap().hash.clone(),
    ];
    other_hashes.extend(other_out.phash.clone());
    for hx in other_hashes {
        needles.push((format!("non-match hash {hx}"), hx.clone().into_bytes()));
        needles.push((format!("non-match raw {hx}"), hex::decode(&hx).unwrap()));
    }
    for (f, content) in &stored {
        for (what, n) in &needles {
            assert!(!contains(content, n), "{what} found in {}", f.display());
        }
    }
    // The confirmed report is still there (the scan can see stored data at all) …
    let confirmed_hash = known_out.sha256.clone().unwrap();
    assert!(
        stored
            .iter()
            .any(|(_, c)| contains(c, confirmed_hash.as_bytes())
                || contains(c, SCREEN_NAME.as_bytes())),
        "the scan finds what is stored"
    );
    // … and after its purge too, nothing personal remains anywhere.
    let rs = open_keyed(dir.path());
    rs.purge_expired(datetime!(2027-01-01 00:00 UTC), "t")
        .unwrap();
    assert!(rs.verify(&rs.public_key().unwrap(), "t", T0).unwrap().ok);
    drop(rs);
    for f in files_under(dir.path()) {
        let c = std::fs::read(&f).unwrap();
        for n in [
            SCREEN_NAME.as_bytes(),
            b"192.0.2.7",
            confirmed_hash.as_bytes(),
        ] {
            assert!(
                !contains(&c, n),
                "{} still in {} after every report was purged",
                String::from_utf8_lossy(n),
                f.display()
            );
        }
    }
}

fn open_keyed(dir: &Path) -> ReportStore {
    let store = Arc::new(Store::open(dir).unwrap());
    ReportStore::new(
        store,
        Some(Signer::load_or_generate(dir).unwrap().0),
        ReportConfig::default(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Key rotation.
// ---------------------------------------------------------------------------------------------

fn keyed(dir: &Path, signer: Option<Signer>) -> Result<ReportStore, ReportError> {
    ReportStore::new(
        Arc::new(Store::open(dir).unwrap()),
        signer,
        ReportConfig::default(),
    )
}

/// The stored ledger head: (seq, digest).
fn raw_head(db: &rocksdb::DB) -> (u64, [u8; 32]) {
    let v = db
        .get_cf(db.cf_handle("report_meta").unwrap(), b"ledger_head")
        .unwrap()
        .unwrap();
    (
        u64::from_be_bytes(v[..8].try_into().unwrap()),
        v[8..].try_into().unwrap(),
    )
}

/// Append a forged entry to a closed data directory, as someone with write access to the
/// files would: `entry` gets seq and prev_digest, is signed by `signer`, chained, and the head
/// moves on. Returns the entry's seq.
fn forge(dir: &Path, signer: &Signer, mut entry: Value) -> u64 {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &names).unwrap();
    let (seq, prev) = raw_head(&db);
    let seq = seq + 1;
    entry["seq"] = seq.into();
    entry["prev_digest"] = hex::encode(prev).into();
    entry["key_id"] = signer.public().key_id().into();
    if entry["kind"] == "key_rotation" {
        let old = PublicKey::parse(entry["old_public_key"].as_str().unwrap()).unwrap();
        let new_seed: [u8; 32] = [0x5a; 32];
        let new = Signer::from_seed(new_seed);
        let st = baken::reports::sign::rotation_statement(seq, &prev, &old, &new.public());
        entry["new_public_key"] = new.public().to_hex().into();
        entry["new_key_id"] = new.public().key_id().into();
        entry["new_key_proof"] = hex::encode(new.sign_rotation(&st)).into();
    }
    let bytes = serde_json::to_vec(&entry).unwrap();
    let mut value = signer.sign(&bytes).to_vec();
    value.extend_from_slice(&bytes);
    let mut head = seq.to_be_bytes().to_vec();
    head.extend_from_slice(&digest(&value));
    db.put_cf(db.cf_handle("report_ledger").unwrap(), seq_key(seq), &value)
        .unwrap();
    db.put_cf(db.cf_handle("report_meta").unwrap(), b"ledger_head", head)
        .unwrap();
    seq
}

#[test]
fn keys_rotate_twice_between_reports_and_every_key_verifies_the_whole_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, k3) = (
        Signer::from_seed(seed()),
        Signer::from_seed([11; 32]),
        Signer::from_seed([12; 32]),
    );
    let (p1, p2, p3) = (k1.public(), k2.public(), k3.public());
    let rs = keyed(dir.path(), Some(Signer::from_seed(seed()))).unwrap();
    let a = create(&rs, &[m("l", pdq(), "a", 0, 31)], T0);
    rs.review(&a.state.report_id, Decision::Confirmed, "rev-1", "t", T0)
        .unwrap();
    // A ledger without rotations: version-1 entries, verified as before.
    assert_eq!(rs.entry(1).unwrap().entry.v, 1);
    let before = rs.verify(&p1, "t", T0).unwrap();
    assert!(before.ok, "{:?}", before.problems);
    assert_eq!(before.keys.len(), 1);

    let r1 = rs.rotate_key(k2, "ops", T0).unwrap();
    assert_eq!((r1.seq, r1.old_key_id.as_str()), (3, p1.key_id().as_str()));
    assert_eq!(rs.public_key(), Some(p2.clone()));
    let rot = rs.entry(3).unwrap().entry;
    assert_eq!(
        (rot.v, rot.new_key_id.as_deref()),
        (2, Some(p2.key_id().as_str()))
    );
    let b = create(&rs, &[m("l", pdq(), "b", 0, 31)], T0);
    assert_eq!(rs.entry(4).unwrap().entry.key_id, p2.key_id());
    rs.review(&b.state.report_id, Decision::Rejected, "rev-2", "t", T0)
        .unwrap();
    // A key that signed this ledger never comes back, and the current key is no new key.
    assert!(matches!(
        rs.rotate_key(Signer::from_seed(seed()), "ops", T0),
        Err(ReportError::Invalid(_))
    ));
    assert!(matches!(
        rs.rotate_key(Signer::from_seed([11; 32]), "ops", T0),
        Err(ReportError::Invalid(_))
    ));
    let r2 = rs.rotate_key(k3, "ops", T0).unwrap();
    let c = create(&rs, &[m("l", pdq(), "c", 0, 31)], T0);
    rs.review(&c.state.report_id, Decision::Confirmed, "rev-3", "t", T0)
        .unwrap();

    // Any key of the chain is a trust anchor: the first (published long ago), a middle one,
    // the newest.
    for anchor in [&p1, &p2, &p3] {
        let v = rs.verify(anchor, "t", T0).unwrap();
        assert!(v.ok, "anchor {}: {:?}", anchor.key_id(), v.problems);
        assert_eq!(v.active_key_id, p3.key_id());
        assert_eq!((v.reports, v.purged), (3, 1));
        let epochs: Vec<(String, u64, Option<u64>)> = v
            .keys
            .iter()
            .map(|k| (k.key_id.clone(), k.active_from_seq, k.retired_at_seq))
            .collect();
        assert_eq!(
            epochs,
            vec![
                (p1.key_id(), 1, Some(r1.seq)),
                (p2.key_id(), r1.seq + 1, Some(r2.seq)),
                (p3.key_id(), r2.seq + 1, None),
            ]
        );
    }
    // A key outside the chain verifies nothing.
    let stranger = Signer::from_seed([99; 32]).public();
    assert!(!rs.verify(&stranger, "t", T0).unwrap().ok);
    // Exports name the key that signed the entry, which may be a retired one.
    assert_eq!(rs.public_key_for(&p1.key_id()).unwrap(), Some(p1.clone()));
    let (rep, entry) = rs
        .get_for_export(&a.state.report_id, "csar-json", false, "t", T0)
        .unwrap();
    let doc = export::csar_document(
        &rep,
        &entry,
        rs.public_key_for(&entry.entry.key_id).unwrap().as_ref(),
        false,
    )
    .unwrap();
    assert_eq!(doc.integrity.public_key, Some(p1.to_hex()));
    let doc = export::csar_document(&rep, &entry, Some(&p3), false).unwrap();
    assert_eq!(
        doc.integrity.public_key, None,
        "never a key that did not sign the entry"
    );
    assert!(
        rs.audit_log()
            .unwrap()
            .iter()
            .any(|a| a.action == "report.rotate_key" && a.actor == "ops")
    );
    drop(rs);

    // A restart picks the rotated key; retired keys are refused with the active key named.
    let rs = keyed(dir.path(), Some(Signer::from_seed([12; 32]))).unwrap();
    create(&rs, &[m("l", pdq(), "d", 0, 31)], T0);
    assert!(rs.verify(&p1, "t", T0).unwrap().ok);
    drop(rs);
    for old in [seed(), [11; 32]] {
        match keyed(dir.path(), Some(Signer::from_seed(old))) {
            Err(ReportError::NotActiveKey { active, .. }) => assert_eq!(active, p3.key_id()),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a retired key was accepted"),
        }
    }
    // Read-only use (no signer) is always possible.
    assert!(
        keyed(dir.path(), None)
            .unwrap()
            .verify(&p3, "t", T0)
            .unwrap()
            .ok
    );
}

#[test]
fn forged_rotations_and_entries_signed_by_retired_keys_are_named() {
    // A rotation signed by a key the ledger does not know.
    let dir = tempfile::tempdir().unwrap();
    let rs = keyed(dir.path(), Some(Signer::from_seed(seed()))).unwrap();
    create(&rs, &[m("l", pdq(), "a", 0, 31)], T0);
    create(&rs, &[m("l", pdq(), "b", 0, 31)], T0);
    drop(rs);
    let intruder = Signer::from_seed([66; 32]);
    let forged = forge(
        dir.path(),
        &intruder,
        serde_json::json!({
            "v": 2, "seq": 0, "kind": "key_rotation", "report_id": "", "report_seq": 0,
            "at": "2025-03-01T12:00:00Z", "prev_digest": "", "key_id": "",
            "old_public_key": intruder.public().to_hex(),
        }),
    );
    // The start-up check sees the forged head's new key, which is not ours.
    assert!(matches!(
        keyed(dir.path(), Some(Signer::from_seed(seed()))),
        Err(ReportError::NotActiveKey { .. })
    ));
    let rs = keyed(dir.path(), None).unwrap();
    let v = rs
        .verify(&Signer::from_seed(seed()).public(), "t", T0)
        .unwrap();
    assert!(!v.ok);
    let p = v
        .problems
        .iter()
        .find(|p| p.kind == "bad_rotation")
        .unwrap_or_else(|| panic!("{:#?}", v.problems));
    assert_eq!(p.seq, Some(forged));
    assert!(p.message.contains("forged rotation"), "{}", p.message);
    assert!(
        p.message.contains(&intruder.public().key_id()),
        "{}",
        p.message
    );
    assert_eq!(v.keys.len(), 1, "the forged key is not trusted");
    drop(rs);

    // An entry signed by the old key after a genuine rotation.
    let dir = tempfile::tempdir().unwrap();
    let rs = keyed(dir.path(), Some(Signer::from_seed(seed()))).unwrap();
    create(&rs, &[m("l", pdq(), "a", 0, 31)], T0);
    rs.rotate_key(Signer::from_seed([11; 32]), "ops", T0)
        .unwrap();
    let b = create(&rs, &[m("l", pdq(), "b", 0, 31)], T0);
    let review = serde_json::to_value(&rs.entry(b.state.seq).unwrap().entry).unwrap();
    drop(rs);
    let mut e = review;
    e["kind"] = "review".into();
    e["status"] = "ready_to_send".into();
    e["review"] = serde_json::json!({"decision": "confirmed", "reviewer_pseudonym": "rev-x", "at": "2025-03-01T12:00:00Z"});
    for k in [
        "body_digest",
        "auto_ready",
        "retention_deadline",
        "abuse_type",
        "recipient",
    ] {
        e.as_object_mut().unwrap().remove(k);
    }
    let late = forge(dir.path(), &Signer::from_seed(seed()), e);
    let rs = keyed(dir.path(), None).unwrap();
    let new_key = Signer::from_seed([11; 32]).public();
    let v = rs.verify(&new_key, "t", T0).unwrap();
    let p = v
        .problems
        .iter()
        .find(|p| p.kind == "retired_key")
        .unwrap_or_else(|| panic!("{:#?}", v.problems));
    assert_eq!(p.seq, Some(late));
    assert_eq!(p.report_id.as_ref(), Some(&b.state.report_id));
    assert!(p.message.contains("retired at entry 2"), "{}", p.message);
    // The same from the first key's point of view.
    let v = rs
        .verify(&Signer::from_seed(seed()).public(), "t", T0)
        .unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.kind == "retired_key" && p.seq == Some(late))
    );
}

#[test]
fn an_interrupted_rotation_of_the_data_directory_key_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, _) = Signer::load_or_generate(dir.path()).unwrap();
    let p1 = k1.public();
    let rs = keyed(dir.path(), Some(k1)).unwrap();
    create(&rs, &[m("l", pdq(), "a", 0, 31)], T0);
    // Kept: the retired key stays, 0600, under its key id.
    let r = rs
        .rotate_data_dir_key(Signer::generate().unwrap(), true, "ops", T0)
        .unwrap();
    let retired = r.retired_key_file.clone().unwrap();
    assert_eq!(Signer::load(&retired).unwrap().public(), p1);
    let p2 = Signer::load(&Signer::default_path(dir.path()))
        .unwrap()
        .public();
    assert_eq!(p2.key_id(), r.rotation.new_key_id);
    assert!(!Signer::next_path(dir.path()).exists());
    // Not kept (the default): gone with the rename.
    let r2 = rs
        .rotate_data_dir_key(Signer::generate().unwrap(), false, "ops", T0)
        .unwrap();
    assert!(r2.retired_key_file.is_none());
    let keys: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    drop(rs);

    // Simulate a crash after the rotation entry and before the rename: the ledger names the
    // new key, which still waits in report-signing.key.next.
    let current = Signer::load(&Signer::default_path(dir.path())).unwrap();
    let rs = keyed(dir.path(), Some(current)).unwrap();
    let next = Signer::generate().unwrap();
    let next_id = next.public().key_id();
    next.save(&Signer::next_path(dir.path())).unwrap();
    rs.rotate_key(next, "ops", T0).unwrap();
    drop(rs);
    let (stale, _) = Signer::load_or_generate(dir.path()).unwrap();
    assert_ne!(stale.public().key_id(), next_id);
    let rs = keyed(dir.path(), Some(stale)).unwrap();
    assert_eq!(rs.public_key().unwrap().key_id(), next_id);
    assert!(!Signer::next_path(dir.path()).exists());
    assert_eq!(
        Signer::load(&Signer::default_path(dir.path()))
            .unwrap()
            .public()
            .key_id(),
        next_id
    );
    assert!(rs.verify(&p1, "t", T0).unwrap().ok);
}
