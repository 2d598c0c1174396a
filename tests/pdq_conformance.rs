//! PDQ bit-exactness against Meta's reference on lossless pixels, in both pipelines.
//! Needs ../shared (skips with a message when absent; fails under CI, which always has it).

mod common;

use baken::decode::{self, DecodeLimits, DecodeOptions};
use baken::hashing::pdq::{PdqMode, pdq_hash};

fn hash_file(path: &std::path::Path, mode: PdqMode) -> baken::hashing::PdqHash {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let img = decode::decode(&bytes, &DecodeLimits::default(), DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pdq_hash(img.view(), mode)
}

#[test]
fn pdq_pixels_are_bit_exact() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("vectors/pdq-pixels");
    let rows = common::read_csv(&dir.join("expected.csv"));
    assert!(rows.len() >= 40, "expected.csv has {} rows", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let h = hash_file(&dir.join(&row["file"]), PdqMode::Full);
        let dih: Vec<String> = h.dihedral.iter().map(|d| d.to_hex()).collect();
        let want_dih: Vec<&str> = row["dihedral_hex"].split(';').collect();
        let q: u8 = row["quality"].parse().unwrap();
        if h.hash.to_hex() != row["pdq_hex"] || h.quality != q || dih != want_dih {
            let bits = h
                .hash
                .hamming(&baken::hashing::Hash256::from_hex(&row["pdq_hex"]).unwrap());
            failures.push(format!(
                "{}: {} bits off, quality {} vs {}, dihedrals equal: {}",
                row["file"],
                bits,
                h.quality,
                q,
                dih == want_dih
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn decoded_rgb_matches_cpp_reference_in_both_pipelines() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let base = shared.join("vectors/pdq");
    let rows = common::read_csv(&base.join("generated/cpp-reference-outputs.csv"));
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in &rows {
        let png = base
            .join("generated/decoded-rgb")
            .join(format!("{}.png", row["image"]));
        if !png.exists() {
            continue;
        }
        let mode: PdqMode = row["mode"].parse().unwrap();
        let h = hash_file(&png, mode);
        checked += 1;
        let names = baken::hashing::pdq::DIHEDRAL_NAMES;
        let q: u8 = row["quality"].parse().unwrap();
        let mut bad = Vec::new();
        if h.quality != q {
            bad.push(format!("quality {} vs {q}", h.quality));
        }
        for (i, n) in names.iter().enumerate() {
            let want = baken::hashing::Hash256::from_hex(&row[*n]).unwrap();
            let d = h.dihedral[i].hamming(&want);
            if d != 0 {
                bad.push(format!("{n} {d} bits"));
            }
        }
        if !bad.is_empty() {
            failures.push(format!(
                "{} [{}]: {}",
                row["image"],
                row["mode"],
                bad.join(", ")
            ));
        }
    }
    assert!(checked >= 48, "only {checked} decoded-rgb rows found");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn dihedral_hashes_predict_transformed_photos() {
    // Meta's regression set: one photo saved in all 8 orientations. Hashing each file must land
    // next to the matching dihedral hash of the original (well inside the match threshold of
    // 31; re-encoding and the ref512 squash cost a few bits), and far from the other seven.
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("vectors/pdq/pdq/data/reg-test-input/dih");
    let files = [
        "bridge-1-original.jpg",
        "bridge-2-rotate-90.jpg",
        "bridge-3-rotate-180.jpg",
        "bridge-4-rotate-270.jpg",
        "bridge-5-flipx.jpg",
        "bridge-6-flipy.jpg",
        "bridge-7-flip-plus-1.jpg",
        "bridge-8-flip-minus-1.jpg",
    ];
    for mode in [PdqMode::Full, PdqMode::Ref512] {
        let orig = hash_file(&dir.join(files[0]), mode);
        for (k, f) in files.iter().enumerate() {
            let h = hash_file(&dir.join(f), mode).hash;
            for (j, d) in orig.dihedral.iter().enumerate() {
                let dist = h.hamming(d);
                if j == k {
                    assert!(dist <= 24, "{f} [{mode}] vs dihedral {j}: {dist} bits");
                } else {
                    assert!(
                        dist > 64,
                        "{f} [{mode}] too close to dihedral {j}: {dist} bits"
                    );
                }
            }
        }
    }
}

#[test]
fn alpha_ignore_reproduces_references_that_drop_alpha() {
    // python-threatexchange's LA.png has real transparency. The C++ reference (and HMA via
    // Pillow) drop alpha; Baken flattens onto white by default and drops it on request.
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let base = shared.join("vectors/pdq");
    let file = "python-threatexchange/threatexchange/tests/hashing/resources/LA.png";
    let row = common::read_csv(&base.join("generated/cpp-reference-outputs.csv"))
        .into_iter()
        .find(|r| r["image"] == file && r["mode"] == "full")
        .expect("LA.png row");
    let bytes = std::fs::read(base.join(file)).unwrap();
    let hash = |alpha| {
        let opts = DecodeOptions {
            alpha,
            ..DecodeOptions::default()
        };
        let img = decode::decode(&bytes, &DecodeLimits::default(), opts).unwrap();
        pdq_hash(img.view(), PdqMode::Full)
    };
    let ignored = hash(decode::Alpha::Ignore);
    assert_eq!(ignored.hash.to_hex(), row["orig"]);
    assert_eq!(ignored.quality.to_string(), row["quality"]);
    let white = hash(decode::Alpha::White);
    assert!(
        white.hash.hamming(&ignored.hash) > 16,
        "transparency must matter here"
    );
}
