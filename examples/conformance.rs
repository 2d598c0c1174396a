//! End-to-end PDQ conformance: decode the original files (JPEG/PNG/WebP/...) with Baken's
//! decoders, hash in both pipelines, and compare with the reference C++ outputs
//! (`vectors/pdq/generated/cpp-reference-outputs.csv`) and the corpus manifest.
//! Prints the Markdown tables of docs/conformance.md.
//!
//! cargo run --release --example conformance [-- --fast]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baken::decode::{self, DecodeLimits, DecodeOptions};
use baken::hashing::pdq::{Hash256, PdqMode, pdq_hash};

#[path = "../tests/common/mod.rs"]
mod common;

#[derive(Default)]
struct Stats {
    n: usize,
    exact: usize,
    dists: Vec<u32>,
    qual_equal: usize,
    errors: usize,
}

impl Stats {
    fn add(&mut self, d: u32, q_equal: bool) {
        self.n += 1;
        if d == 0 {
            self.exact += 1;
        }
        if q_equal {
            self.qual_equal += 1;
        }
        self.dists.push(d);
    }
    fn row(&mut self, label: &str) -> String {
        self.dists.sort();
        let pct = |p: f64| -> u32 {
            if self.dists.is_empty() {
                0
            } else {
                self.dists[((self.dists.len() - 1) as f64 * p).round() as usize]
            }
        };
        let mean = if self.n == 0 {
            0.0
        } else {
            self.dists.iter().map(|&d| f64::from(d)).sum::<f64>() / self.n as f64
        };
        format!(
            "| {label} | {} | {} ({:.1}%) | {:.2} | {} | {} | {} | {} | {} |",
            self.n,
            self.exact,
            100.0 * self.exact as f64 / self.n.max(1) as f64,
            mean,
            pct(0.5),
            pct(0.95),
            self.dists.last().copied().unwrap_or(0),
            self.qual_equal,
            self.errors
        )
    }
}

fn hash(path: &Path, mode: PdqMode, fast: bool) -> Result<(Hash256, u8), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let opts = DecodeOptions {
        jpeg_scale_min_side: fast.then_some(baken::hashing::FAST_MIN_SIDE),
        ..DecodeOptions::default()
    };
    let img = decode::decode(&bytes, &DecodeLimits::default(), opts).map_err(|e| e.to_string())?;
    let h = pdq_hash(img.view(), mode);
    Ok((h.hash, h.quality))
}

const HEADER: &str = "| set | files | identical | mean bits | median | p95 | max | quality equal | errors |\n|---|---|---|---|---|---|---|---|---|";

fn main() {
    let fast = std::env::args().any(|a| a == "--fast");
    let Some(shared) = common::shared_dir() else {
        std::process::exit(1)
    };
    // Reference vectors: originals next to the CSV.
    let base = shared.join("vectors/pdq");
    let mut by: BTreeMap<String, Stats> = BTreeMap::new();
    for row in common::read_csv(&base.join("generated/cpp-reference-outputs.csv")) {
        let path = base.join(&row["image"]);
        let mode: PdqMode = row["mode"].parse().unwrap();
        let ext = ext_of(&path);
        let key = format!("{mode} · {ext}");
        let want = Hash256::from_hex(&row["orig"]).unwrap();
        let q: u8 = row["quality"].parse().unwrap();
        let st = by.entry(key).or_default();
        match hash(&path, mode, fast) {
            Ok((h, hq)) => {
                let d = h.hamming(&want);
                if d > 0 {
                    eprintln!(
                        "reference vector differs: {d:3} bits {mode} {}",
                        row["image"]
                    );
                }
                st.add(d, hq == q)
            }
            Err(e) => {
                eprintln!("reference vector failed: {} {e}", row["image"]);
                st.errors += 1
            }
        }
    }
    println!(
        "### Meta's test images vs `cpp-reference-outputs.csv`{}\n",
        if fast { " (fast mode)" } else { "" }
    );
    println!("{HEADER}");
    for (k, st) in by.iter_mut() {
        println!("{}", st.row(k));
    }

    let corpus = shared.join("corpus");
    let mut by: BTreeMap<String, Stats> = BTreeMap::new();
    let mut worst: Vec<(u32, String)> = Vec::new();
    for row in common::read_csv(&corpus.join("manifest.csv")) {
        let path: PathBuf = corpus.join(&row["file"]);
        for (mode, col, qcol) in [
            (PdqMode::Full, "pdq_full_hex", "pdq_full_quality"),
            (PdqMode::Ref512, "pdq_ref512_hex", "pdq_ref512_quality"),
        ] {
            let key = format!("{mode} · {} {}", row["format"], row["mode"]);
            let want = Hash256::from_hex(&row[col]).unwrap();
            let q: u8 = row[qcol].parse().unwrap();
            let st = by.entry(key).or_default();
            match hash(&path, mode, fast) {
                Ok((h, hq)) => {
                    let d = h.hamming(&want);
                    if d > 0 {
                        worst.push((d, format!("{mode} {}", row["file"])));
                    }
                    st.add(d, hq == q)
                }
                Err(_) => st.errors += 1,
            }
        }
    }
    println!(
        "\n### Corpus (`../shared/corpus`, 322 photos) vs manifest{}\n",
        if fast { " (fast mode)" } else { "" }
    );
    println!("{HEADER}");
    for (k, st) in by.iter_mut() {
        println!("{}", st.row(k));
    }
    worst.sort_by(|a, b| b.cmp(a));
    eprintln!("largest differences:");
    for (d, f) in worst.iter().take(15) {
        eprintln!("  {d:3} {f}");
    }
}

fn ext_of(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}
