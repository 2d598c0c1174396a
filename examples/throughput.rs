//! Single-core hashing throughput with decoding included, for the side-by-side run against
//! PyPI `pdqhash` (bench/pdq_side_by_side.sh). Inputs are read into memory first; each pass
//! decodes and hashes every file. Prints one JSON line.
//!
//! cargo run --release --example throughput -- --algo pdq --mode full [--fast] [--passes 5] FILES...

use std::time::Instant;

use baken::hashing::{self, HashOptions, Hasher, PdqMode};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut algo = "pdq".to_string();
    let mut mode = PdqMode::Full;
    let mut fast = false;
    let mut passes = 5usize;
    let mut files = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--algo" => algo = args.next().expect("--algo value"),
            "--mode" => mode = args.next().expect("--mode value").parse().expect("mode"),
            "--fast" => fast = true,
            "--passes" => passes = args.next().expect("--passes value").parse().expect("n"),
            f => files.push(std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"))),
        }
    }
    let hasher = Hasher::new(HashOptions {
        algorithms: hashing::parse_algorithms(&algo).expect("algorithms"),
        pdq_mode: mode,
        fast_min_side: fast.then_some(hashing::FAST_MIN_SIDE),
        ..HashOptions::default()
    });
    // Warm-up pass (page cache, allocator, DCT tables).
    for f in &files {
        hasher.hash_bytes(f).expect("hash");
    }
    let mut per_pass = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        for f in &files {
            std::hint::black_box(hasher.hash_bytes(f).expect("hash"));
        }
        per_pass.push(t.elapsed().as_secs_f64());
    }
    per_pass.sort_by(f64::total_cmp);
    let median = per_pass[per_pass.len() / 2];
    println!(
        "{{\"impl\":\"baken\",\"algo\":\"{algo}\",\"mode\":\"{mode}\",\"fast\":{fast},\"files\":{},\"median_pass_s\":{median:.4},\"images_per_s\":{:.2}}}",
        files.len(),
        files.len() as f64 / median
    );
}
