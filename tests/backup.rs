//! Backups of a data directory: `baken backup --to DIR` of a stopped directory with lists and
//! reports, restored by pointing `--data` at the copy (lists, entries, reports identical and
//! verified), `baken backup verify` catching a copy that disagrees with its manifest, refused
//! destinations, and no image bytes anywhere in a backup.

mod common;

use common::mode;

use common::{contains, files_under};

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn run(data: &Path, args: &[&str]) -> Output {
    common::baken_at(data).args(args).output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn lines(o: &Output) -> Vec<Value> {
    common::json_lines(&o.stdout)
}

fn png(path: &Path, px: &[u8], w: u32, h: u32) -> Vec<u8> {
    image::save_buffer_with_format(
        path,
        px,
        w,
        h,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .unwrap();
    std::fs::read(path).unwrap()
}

/// Two lists (one with a tombstone) and two reports, one of them reviewed.
fn populated(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let data = dir.join("data");
    let (w, h) = (220u32, 160u32);
    let mut images = Vec::new();
    let mut csv = String::from("hash_type,hash,classification,external_id\n");
    for seed in [81u64, 82] {
        let px = common::generated_image(w, h, 3, seed);
        let f = dir.join(format!("img-{seed}.png"));
        images.push(png(&f, &px, w, h));
        images.push(px);
        let hk = &lines(&ok(run(
            &data,
            &["hash", "--algo", "pdq,md5", f.to_str().unwrap()],
        )))[0];
        csv.push_str(&format!(
            "pdq,{},A1,case-{seed}\nmd5,{},A1,case-{seed}\n",
            hk["pdq"]["hash"].as_str().unwrap(),
            hk["md5"].as_str().unwrap()
        ));
    }
    let list = dir.join("list.csv");
    std::fs::write(&list, csv).unwrap();
    common::cli_list_from_csv(&data, "known", &["--source", "test"], &list);
    let other = dir.join("other.csv");
    std::fs::write(
        &other,
        "hash_type,hash,external_id\nmd5,00000000000000000000000000000001,x1\nmd5,00000000000000000000000000000002,x2\n",
    )
    .unwrap();
    common::cli_list_from_csv(&data, "other", &["--source", "test"], &other);
    ok(run(
        &data,
        &["list", "remove", "other", "--external-id", "x2"],
    ));
    let context = dir.join("context.json");
    common::write_context(
        &context,
        serde_json::json!({
            "reported_user": {"screen_name": "backup_sentinel"}
        }),
    );
    let m = run(
        &data,
        &[
            "match",
            "--report",
            "--context",
            context.to_str().unwrap(),
            dir.join("img-81.png").to_str().unwrap(),
            dir.join("img-82.png").to_str().unwrap(),
        ],
    );
    common::assert_exit(&m, 1);
    let id = lines(&m)[0]["report"]["report_id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(run(
        &data,
        &[
            "report",
            "review",
            &id,
            "--decision",
            "confirm",
            "--reviewer",
            "rev-1",
        ],
    ));
    (data, images)
}

/// What a restore must reproduce: lists, every entry, every report, the verified ledger.
fn contents(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines(&ok(run(data, &["list", "ls"]))) {
        out.push(format!(
            "{} v{} {}",
            l["name"], l["version"], l["live_entries"]
        ));
        let name = l["name"].as_str().unwrap();
        let export = ok(run(
            data,
            &[
                "list",
                "export",
                name,
                "--format",
                "csv",
                "--include-deleted",
            ],
        ));
        out.push(String::from_utf8_lossy(&export.stdout).into_owned());
    }
    for r in lines(&ok(run(data, &["report", "ls"]))) {
        out.push(r.to_string());
        let show = &lines(&ok(run(
            data,
            &["report", "show", r["report_id"].as_str().unwrap()],
        )))[0];
        out.push(show["body"].to_string());
    }
    let v = &lines(&ok(run(data, &["report", "verify"])))[0];
    out.push(format!(
        "{} {} {}",
        v["entries"], v["head_seq"], v["active_key_id"]
    ));
    out
}

#[test]
fn a_backup_restores_lists_entries_and_reports_and_holds_no_image_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, images) = populated(dir.path());
    let before = contents(&data);

    let backup = dir.path().join("backups/monday");
    // The parent must exist; the destination may not lie inside the data directory.
    assert_eq!(
        run(&data, &["backup", "--to", backup.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    std::fs::create_dir(dir.path().join("backups")).unwrap();
    let inside = run(&data, &["backup", "--to", data.join("b").to_str().unwrap()]);
    assert_eq!(inside.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&inside.stderr).contains("inside the data directory"));
    let manifest = &lines(&ok(run(
        &data,
        &["backup", "--to", backup.to_str().unwrap()],
    )))[0];
    assert_eq!(manifest["format"], "baken.backup/v1");
    assert_eq!(manifest["mode"], "offline");
    assert_eq!(manifest["lists"].as_array().unwrap().len(), 2);
    assert!(manifest["ledger"]["head_seq"].as_u64().unwrap() >= 3);
    assert_eq!(manifest["keys"], serde_json::json!(["report-signing.key"]));
    assert_eq!(manifest["skipped"].as_array().unwrap().len(), 2);
    assert!(backup.join("baken-backup.json").is_file());
    assert_eq!(mode(&backup), 0o700);
    assert_eq!(mode(&backup.join("keys")), 0o700);
    assert_eq!(mode(&backup.join("keys/report-signing.key")), 0o600);
    assert!(!backup.join("index").exists() && !backup.join("scan-checkpoints").exists());
    // No half-built sibling is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .collect();
    assert_eq!(left.len(), 1);
    // A non-empty destination is refused; an empty one is used.
    assert_eq!(
        run(&data, &["backup", "--to", backup.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    let empty = dir.path().join("backups/empty");
    std::fs::create_dir(&empty).unwrap();
    ok(run(&data, &["backup", "--to", empty.to_str().unwrap()]));

    // The check opens the copy read-only: nothing in it changes (RocksDB's own info LOG aside).
    let sizes = |d: &Path| {
        let mut v: Vec<(PathBuf, u64)> = files_under(d)
            .into_iter()
            .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with("LOG"))
            .map(|f| {
                let n = std::fs::metadata(&f).unwrap().len();
                (f, n)
            })
            .collect();
        v.sort();
        v
    };
    let snapshot = sizes(&backup);
    let check = &lines(&ok(run(
        &data,
        &["backup", "verify", backup.to_str().unwrap()],
    )))[0];
    assert_eq!(check["ok"], true);
    assert_eq!(check["reports"]["reports"], 2);
    assert_eq!(sizes(&backup), snapshot);

    // No image bytes (file or pixels) anywhere in the backup; the reports are there.
    let stored: Vec<(PathBuf, Vec<u8>)> = files_under(&backup)
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect();
    for img in &images {
        let n = img.len();
        for s in [0, n / 3, n / 2, n - 64] {
            for (f, c) in &stored {
                assert!(
                    !contains(c, &img[s..s + 64]),
                    "image bytes in {}",
                    f.display()
                );
            }
        }
    }
    assert!(stored.iter().any(|(_, c)| contains(c, b"backup_sentinel")));

    // Restore: the copy is a data directory. Same lists, entries, reports; verify is green.
    let restored = dir.path().join("restored");
    std::fs::rename(&backup, &restored).unwrap();
    assert_eq!(contents(&restored), before);

    // A copy that disagrees with its manifest (here: a list changed after the backup) fails.
    let other = dir.path().join("backups/tuesday");
    ok(run(&data, &["backup", "--to", other.to_str().unwrap()]));
    let mf = other.join("baken-backup.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mf).unwrap()).unwrap();
    m["lists"][0]["version"] = 99.into();
    std::fs::write(&mf, serde_json::to_vec(&m).unwrap()).unwrap();
    let bad = run(&data, &["backup", "verify", other.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the manifest says version 99"));
    // Not a backup at all.
    assert_eq!(
        run(&data, &["backup", "verify", data.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn a_backup_of_a_rotated_ledger_verifies_with_the_first_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = populated(dir.path());
    let first = dir.path().join("first.pub");
    std::fs::write(&first, ok(run(&data, &["report", "public-key"])).stdout).unwrap();
    ok(run(&data, &["report", "rotate-key"]));
    let backup = dir.path().join("b");
    ok(run(&data, &["backup", "--to", backup.to_str().unwrap()]));
    for args in [
        vec!["backup", "verify", backup.to_str().unwrap()],
        vec![
            "backup",
            "verify",
            backup.to_str().unwrap(),
            "--public-key",
            first.to_str().unwrap(),
        ],
    ] {
        let c = &lines(&ok(run(&data, &args)))[0];
        assert_eq!(c["reports"]["keys"].as_array().unwrap().len(), 2);
    }
}
