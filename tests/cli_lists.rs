//! `baken list …` and `baken match` as a user runs them.

mod common;

use common::{baken_at as baken, json_lines, save_png};

#[test]
fn build_a_list_from_hashes_and_match_files_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (w, h) = (400u32, 300u32);
    let known_px = common::generated_image(w, h, 3, 21);
    let known = dir.path().join("known.png");
    save_png(&known, &known_px, w, h);
    // The same picture rotated 90° clockwise.
    let mut rot = vec![0u8; known_px.len()];
    for y in 0..h {
        for x in 0..w {
            let (nx, ny) = (h - 1 - y, x);
            let s = ((y * w + x) * 3) as usize;
            let d = ((ny * h + nx) * 3) as usize;
            rot[d..d + 3].copy_from_slice(&known_px[s..s + 3]);
        }
    }
    let rotated = dir.path().join("rotated.png");
    save_png(&rotated, &rot, h, w);
    let other = dir.path().join("other.png");
    save_png(&other, &common::generated_image(w, h, 3, 22), w, h);
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xFF\xD8\xFF\xE0 truncated").unwrap();

    // Hash the known image and turn it into a list file.
    let out = baken(&data)
        .args(["hash", "--algo", "pdq,md5"])
        .arg(&known)
        .output()
        .unwrap();
    let v = &json_lines(&out.stdout)[0];
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, common::pdq_md5_csv(v, "A1", "item-1")).unwrap();

    let imp = common::cli_list_from_csv(&data, "known", &["--source", "test"], &csv);
    let report = &json_lines(&imp.stdout)[0];
    assert_eq!(report["counts"]["added"], 2);
    assert_eq!(report["version_to"], 1);

    let m = baken(&data)
        .arg("match")
        .arg(&known)
        .arg(&rotated)
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(m.status.code(), Some(1), "matches found");
    let lines = json_lines(&m.stdout);
    let exact: Vec<_> = lines[0]["matches"].as_array().unwrap().iter().collect();
    assert!(
        exact
            .iter()
            .any(|x| x["hash_type"] == "md5" && x["distance"] == 0)
    );
    let pdq = exact.iter().find(|x| x["hash_type"] == "pdq").unwrap();
    assert_eq!(pdq["distance"], 0);
    assert_eq!(pdq["entry"], "item-1");
    assert_eq!(pdq["classification"], "A1");
    assert_eq!(pdq["list_version"], 1);

    let rot_hits = lines[1]["matches"].as_array().unwrap();
    assert_eq!(rot_hits.len(), 1, "the rotation matches by PDQ only");
    assert!(rot_hits[0]["distance"].as_u64().unwrap() <= 31);
    assert_ne!(rot_hits[0]["transform"], "orig");
    assert!(lines[2]["matches"].as_array().unwrap().is_empty());
    // No hashes of the non-matching file are printed.
    assert!(lines[2].get("pdq").is_none() && lines[2].get("md5").is_none());

    let none = baken(&data).arg("match").arg(&other).output().unwrap();
    assert_eq!(none.status.code(), Some(0));
    let err = baken(&data).arg("match").arg(&broken).output().unwrap();
    assert_eq!(err.status.code(), Some(2));

    // Remove, and the exact match is gone; stats and audit reflect it.
    let rm = baken(&data)
        .args(["list", "remove", "known", "--hash"])
        .arg(format!("md5:{}", v["md5"].as_str().unwrap()))
        .output()
        .unwrap();
    assert!(rm.status.success());
    let m = baken(&data).arg("match").arg(&known).output().unwrap();
    let hits = json_lines(&m.stdout)[0]["matches"]
        .as_array()
        .unwrap()
        .clone();
    assert!(hits.iter().all(|x| x["hash_type"] != "md5"));
    assert_eq!(hits[0]["list_version"], 2);
    let stats = json_lines(
        &baken(&data)
            .args(["list", "stats"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(stats[0]["live_entries"], 1);
    assert_eq!(stats[0]["tombstones"], 1);
    let audit = json_lines(
        &baken(&data)
            .args(["list", "audit"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[2]["actor"], "ci");
    assert_eq!(audit[2]["action"], "list.remove");

    let exported = baken(&data)
        .args([
            "list",
            "export",
            "known",
            "--format",
            "jsonl",
            "--include-deleted",
        ])
        .output()
        .unwrap();
    assert_eq!(json_lines(&exported.stdout).len(), 2);
    // Unknown lists are named in the error.
    let bad = baken(&data)
        .args(["list", "show", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
}

/// `match` and `scan` compute a perceptual type beyond PDQ only when a list holds it; a list of
/// pHash values must still be matched.
#[test]
fn lists_of_other_perceptual_types_are_matched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (w, h) = (320u32, 240u32);
    let known = dir.path().join("known.png");
    save_png(&known, &common::generated_image(w, h, 3, 31), w, h);
    let out = baken(&data)
        .args(["hash", "--algo", "phash"])
        .arg(&known)
        .output()
        .unwrap();
    assert!(out.status.success());
    let phash = json_lines(&out.stdout)[0]["phash"]
        .as_str()
        .unwrap()
        .to_string();
    let csv = dir.path().join("p.csv");
    std::fs::write(
        &csv,
        format!("hash_type,hash,classification,external_id\nphash,{phash},A1,p-1\n"),
    )
    .unwrap();
    common::cli_list_from_csv(&data, "p", &[], &csv);
    for cmd in ["match", "scan"] {
        let o = baken(&data).arg(cmd).arg(&known).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd}: a match");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("\"phash\"") && text.contains("p-1"),
            "{cmd}: {text}"
        );
    }
}
