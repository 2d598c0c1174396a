//! Lists in the store: every importer on small sample files (with malformed records),
//! tombstones, version bumps, export round trips, the audit log.

use std::path::PathBuf;

use baken::store::export::{self, ExportFormat};
use baken::store::import::{self, Format, ImportError};
use baken::store::{HashType, NewList, Store, entry_prefix};

fn sample(name: &str) -> std::io::BufReader<std::fs::File> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lists")
        .join(name);
    std::io::BufReader::new(
        std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
}

fn store_with(list: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .create_list(
            NewList {
                name: list.into(),
                source: "test".into(),
                ..NewList::default()
            },
            "tester",
        )
        .unwrap();
    (dir, store)
}

fn import_sample(store: &Store, list: &str, format: Format, file: &str) -> import::ImportReport {
    import::import(store, list, format, sample(file), file, "tester")
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .0
}

fn live(store: &Store, list: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    let meta = store.list(list).unwrap();
    let mut out = Vec::new();
    store
        .scan_list(&meta, |_, r| {
            if !r.is_deleted() {
                out.push((
                    r.hash_type.to_string(),
                    r.hash.clone(),
                    r.classification.clone(),
                    r.external_id.clone(),
                ));
            }
            Ok(())
        })
        .unwrap();
    out.sort();
    out
}

#[test]
fn csv_import_counts_good_bad_and_withdrawn_records() {
    let (_d, store) = store_with("l");
    let r = import_sample(&store, "l", Format::Csv, "generic.csv");
    assert_eq!(r.records, 8);
    assert_eq!(r.counts.added, 4);
    assert_eq!(r.counts.errors, 3, "{:?}", r.errors);
    assert_eq!(r.counts.tombstone_unknown, 1);
    assert_eq!(r.errors.len(), 3);
    assert!(r.errors[0].message.contains("hex"), "{:?}", r.errors[0]);
    assert!(r.errors[0].at.starts_with("line "), "{:?}", r.errors[0]);
    assert!(
        r.errors[1].message.contains("32 bytes"),
        "{:?}",
        r.errors[1]
    );
    assert_eq!((r.version_from, r.version_to), (0, 1));
    let meta = store.list("l").unwrap();
    assert_eq!(meta.version, 1);
    assert_eq!(meta.live_entries, 4);
    let types: Vec<_> = meta.hash_types.iter().map(|t| t.to_string()).collect();
    assert_eq!(types, ["md5", "pdq", "photodna", "sha1"]);
    let entries = live(&store, "l");
    assert!(entries.contains(&(
        "md5".into(),
        "0123456789abcdef0123456789abcdef".into(),
        Some("A1".into()),
        Some("case-1".into())
    )));
    // Tags and provenance are kept.
    let md5 = HashType::new("md5").unwrap();
    let rec = store
        .entry_at(
            &entry_prefix(
                meta.id,
                &md5,
                &hex::decode("0123456789abcdef0123456789abcdef").unwrap(),
            ),
            meta.version,
        )
        .unwrap()
        .unwrap();
    assert_eq!(rec.tags, ["alpha", "beta"]);
    assert!(rec.provenance.unwrap().contains("generic.csv"));
}

#[test]
fn tsv_import() {
    let (_d, store) = store_with("l");
    let r = import_sample(&store, "l", Format::Tsv, "generic.tsv");
    assert_eq!((r.counts.added, r.counts.errors), (1, 1));
}

#[test]
fn threatexchange_import_with_should_delete() {
    let (_d, store) = store_with("te");
    let r = import_sample(&store, "te", Format::ThreatExchange, "threatexchange.jsonl");
    assert_eq!(r.records, 5);
    assert_eq!(r.counts.added, 2);
    assert_eq!(r.counts.errors, 2, "{:?}", r.errors);
    assert_eq!(r.counts.tombstoned, 1, "should_delete withdrew 3002");
    let entries = live(&store, "te");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "pdq");
    assert_eq!(entries[0].3.as_deref(), Some("3001"));
}

#[test]
fn stopncii_import_streams_hash_records_and_withdrawals() {
    let (_d, store) = store_with("s");
    let r = import_sample(&store, "s", Format::Stopncii, "stopncii.json");
    assert_eq!(r.records, 5);
    assert_eq!(
        (r.counts.added, r.counts.errors, r.counts.tombstoned),
        (2, 2, 1)
    );
    let entries = live(&store, "s");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "pdq");
    assert_eq!(entries[0].2.as_deref(), Some("ncii"));
}

#[test]
fn ncmec_xml_import_with_deleted_image() {
    let (_d, store) = store_with("n");
    let r = import_sample(&store, "n", Format::Ncmec, "ncmec.xml");
    assert_eq!(r.counts.added, 5, "{r:?}");
    assert_eq!(r.counts.errors, 1, "{:?}", r.errors);
    assert_eq!(
        r.counts.tombstoned, 2,
        "deletedImage n-1 removes its md5 and sha1"
    );
    let entries = live(&store, "n");
    let ids: Vec<_> = entries.iter().filter_map(|e| e.3.clone()).collect();
    assert!(!ids.contains(&"n-1".to_string()));
    assert_eq!(ids.iter().filter(|i| *i == "n-2").count(), 2);
    let pdna = entries.iter().find(|e| e.0 == "photodna").unwrap();
    assert_eq!(pdna.2.as_deref(), Some("B1"));
    assert!(pdna.1.starts_with("0,1,2,3,"));
    let meta = store.list("n").unwrap();
    let md5 = HashType::new("md5").unwrap();
    let v = store
        .entry_at(&entry_prefix(meta.id, &md5, &[0x44; 16]), meta.version)
        .unwrap()
        .unwrap();
    assert_eq!(v.media_type.as_deref(), Some("video"));
    // The tombstone keeps the time and reason.
    let gone = store
        .entry_at(&entry_prefix(meta.id, &md5, &[0x11; 16]), meta.version)
        .unwrap()
        .unwrap();
    assert!(gone.deleted_at.is_some());
    assert_eq!(gone.deleted_reason.as_deref(), Some("withdrawn by source"));
}

#[test]
fn vics_import() {
    let (_d, store) = store_with("v");
    let r = import_sample(&store, "v", Format::Vics, "vics.json");
    assert_eq!(r.records, 6, "4 media, one with 2 errors-or-hashes each");
    assert_eq!((r.counts.added, r.counts.errors), (4, 2), "{:?}", r.errors);
    let entries = live(&store, "v");
    assert!(entries.iter().any(|e| e.2.as_deref() == Some("vics:2")));
}

#[test]
fn malformed_files_are_refused_whole_and_leave_the_list_as_it_was() {
    let (_d, store) = store_with("l");
    import_sample(&store, "l", Format::Csv, "generic.csv");
    let before = live(&store, "l");
    let truncated = r#"{"hashRecords": [{"signalType": "ImagePDQ", "hashValue": "00000000000000000000000000000000000000000000000000000000000000ff", "hashStatus": "Active"}, {"signalType": "#;
    let err = import::import(
        &store,
        "l",
        Format::Stopncii,
        truncated.as_bytes(),
        "t",
        "x",
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("nothing was imported"));
    let bad_xml = "<queryResult><images><image><id>x</id><fingerprints><md5>11111111111111111111111111111111</md5></fingerprints></image><image>";
    let err = import::import(&store, "l", Format::Ncmec, bad_xml.as_bytes(), "t", "x").unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err}");
    assert_eq!(store.list("l").unwrap().version, 1);
    assert_eq!(live(&store, "l"), before);
    // And after a reopen nothing staged survives.
    drop(store);
}

#[test]
fn versions_tombstones_and_restores() {
    let (dir, store) = store_with("l");
    import_sample(&store, "l", Format::Csv, "generic.csv");
    // Re-importing the same file changes nothing and keeps the version.
    let again = import_sample(&store, "l", Format::Csv, "generic.csv");
    assert_eq!(again.counts.unchanged, 4);
    assert_eq!((again.version_from, again.version_to), (1, 1));

    let md5 = HashType::new("md5").unwrap();
    let h = hex::decode("0123456789abcdef0123456789abcdef").unwrap();
    let mut c = store.begin("l", "op", "list.remove").unwrap();
    c.tombstone(&md5, &h, "false positive").unwrap();
    let (meta, audit) = c.commit(None).unwrap();
    assert_eq!((audit.version_from, audit.version_to), (1, 2));
    assert_eq!(meta.live_entries, 3);
    let rec = store
        .entry_at(&entry_prefix(meta.id, &md5, &h), 2)
        .unwrap()
        .unwrap();
    assert_eq!(rec.deleted_reason.as_deref(), Some("false positive"));
    // The previous version still shows it live: versions are snapshots.
    let old = store
        .entry_at(&entry_prefix(meta.id, &md5, &h), 1)
        .unwrap()
        .unwrap();
    assert!(!old.is_deleted());

    // Re-adding restores it at version 3, with a fresh `added`.
    let r = import_sample(&store, "l", Format::Csv, "generic.csv");
    assert_eq!((r.counts.added, r.counts.unchanged), (1, 3));
    assert_eq!(r.counts.restored, 1);
    assert_eq!(r.version_to, 3);
    let meta = store.list("l").unwrap();
    assert_eq!((meta.live_entries, meta.tombstones), (4, 0));

    // Everything persists across a reopen.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list("l").unwrap().version, 3);
    assert_eq!(live(&store, "l").len(), 4);
    let actions: Vec<_> = store
        .audit()
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.actor, a.version_to))
        .collect();
    assert_eq!(
        actions,
        [
            ("list.create".into(), "tester".into(), 0),
            ("list.import".into(), "tester".into(), 1),
            ("list.import".into(), "tester".into(), 1),
            ("list.remove".into(), "op".into(), 2),
            ("list.import".into(), "tester".into(), 3),
        ]
    );
}

#[test]
fn export_round_trips_through_the_csv_importer() {
    let (_d, store) = store_with("a");
    import_sample(&store, "a", Format::Ncmec, "ncmec.xml");
    store
        .create_list(
            NewList {
                name: "b".into(),
                ..NewList::default()
            },
            "tester",
        )
        .unwrap();
    let mut csv = Vec::new();
    let meta = store.list("a").unwrap();
    let n = export::export(&store, &meta, ExportFormat::Csv, false, &mut csv).unwrap();
    assert_eq!(n, 3);
    import::import(&store, "b", Format::Csv, csv.as_slice(), "export", "tester").unwrap();
    assert_eq!(live(&store, "a"), live(&store, "b"));
    // With tombstones, JSON lines carry the deletion time.
    let mut jl = Vec::new();
    let n = export::export(&store, &meta, ExportFormat::Jsonl, true, &mut jl).unwrap();
    assert_eq!(n, 5);
    let text = String::from_utf8(jl).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains("deleted_at")).count(), 2);
}

#[test]
fn list_names_and_duplicates() {
    let (_d, store) = store_with("l");
    assert!(
        store
            .create_list(
                NewList {
                    name: "l".into(),
                    ..NewList::default()
                },
                "x"
            )
            .is_err()
    );
    assert!(
        store
            .create_list(
                NewList {
                    name: "bad name".into(),
                    ..NewList::default()
                },
                "x"
            )
            .is_err()
    );
    assert!(store.begin("nope", "x", "y").is_err());
}

#[test]
fn duplicates_across_flushed_chunks_count_once() {
    // More records than one staging chunk (8192): a value repeated after a flush must be seen
    // as already staged in this change, not as new.
    let (_d, store) = store_with("big");
    let mut csv = String::from("hash_type,hash,classification,external_id\n");
    for i in 0..20_000u32 {
        csv.push_str(&format!("md5,{:032x},A1,e{i}\n", u128::from(i) + 1));
    }
    csv.push_str(&format!("md5,{:032x},B1,again\n", 5u128));
    let (r, meta) = import::import(&store, "big", Format::Csv, csv.as_bytes(), "t", "x").unwrap();
    assert_eq!((r.counts.added, r.counts.updated), (20_000, 1));
    assert_eq!(meta.live_entries, 20_000);
    let md5 = HashType::new("md5").unwrap();
    let rec = store
        .entry_at(
            &entry_prefix(meta.id, &md5, &5u128.to_be_bytes()),
            meta.version,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.classification.as_deref(),
        Some("B1"),
        "the later record wins"
    );
}

#[test]
fn a_refused_file_after_flushed_chunks_leaves_nothing_behind() {
    // 10,000 good records (more than one flushed chunk), then broken JSON: the whole import is
    // refused, the flushed chunk rolled back, and the same records later import as new.
    let (dir, store) = store_with("s");
    let mut json = String::from("[");
    for i in 0..10_000u32 {
        json.push_str(&format!(
            "{{\"signalType\": \"VideoMD5\", \"hashValue\": \"{:032x}\", \"hashStatus\": \"Active\"}},",
            u128::from(i) + 1
        ));
    }
    let broken = format!("{json} {{\"signalType\": ");
    let err =
        import::import(&store, "s", Format::Stopncii, broken.as_bytes(), "t", "x").unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err}");
    assert_eq!(store.list("s").unwrap().version, 0);
    assert!(live(&store, "s").is_empty());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.recovered().is_empty(),
        "rolled back at once, not left for the next open"
    );
    let good = format!("{}]", json.trim_end_matches(','));
    let (r, meta) =
        import::import(&store, "s", Format::Stopncii, good.as_bytes(), "t", "x").unwrap();
    assert_eq!((r.counts.added, meta.version), (10_000, 1));
}
