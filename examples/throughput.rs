//! Hashing throughput with decoding included, for the benchmark suite (bench/suite.py: stages
//! `hashing` and `scaling`). Inputs are read into memory first; each pass decodes and hashes
//! every file. Prints one JSON line.
//!
//! cargo run --release --example throughput -- --algo pdq --mode full [--fast] [--passes 5] FILES...
//!
//! By default the files are hashed one after another on the calling thread (one core: compare
//! with single-threaded peers). `--batch` hashes each pass with `Hasher::hash_batch` on the rayon
//! pool instead, the way `baken scan` and the service do; size the pool with RAYON_NUM_THREADS
//! (and pin it with taskset) to measure scaling.

use std::time::Instant;

use baken::hashing::{self, HashOptions, Hasher, PdqMode};

/// CPU time of this process, all threads, user + system, in seconds (/proc/self/stat; Linux
/// reports it in USER_HZ = 100 ticks a second). On a shared machine the CPU time a parallel pass
/// obtained says how many cores it really had, which wall time alone cannot.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut algo = "pdq".to_string();
    let mut mode = PdqMode::Full;
    let mut fast = false;
    let mut batch = false;
    let mut passes = 5usize;
    let mut files = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--algo" => algo = args.next().expect("--algo value"),
            "--mode" => mode = args.next().expect("--mode value").parse().expect("mode"),
            "--fast" => fast = true,
            "--batch" => batch = true,
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
    let pass = || {
        if batch {
            // `load` copies the bytes, as reading a file into a fresh buffer would.
            let out = hasher.hash_batch(&files, |f| Ok(f.clone()));
            assert!(out.iter().all(Result::is_ok), "an input failed to hash");
            std::hint::black_box(out);
        } else {
            for f in &files {
                std::hint::black_box(hasher.hash_bytes(f).expect("hash"));
            }
        }
    };
    pass(); // warm-up (page cache, allocator, DCT tables, rayon threads)
    let mut per_pass = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..passes {
        let t = Instant::now();
        pass();
        per_pass.push(t.elapsed().as_secs_f64());
    }
    let cpu_per_pass = (cpu_seconds() - cpu0) / passes as f64;
    let wall_per_pass = per_pass.iter().sum::<f64>() / passes as f64;
    per_pass.sort_by(f64::total_cmp);
    let median = per_pass[per_pass.len() / 2];
    let bytes: usize = files.iter().map(Vec::len).sum();
    let threads = if batch {
        rayon::current_num_threads()
    } else {
        1
    };
    println!(
        "{{\"impl\":\"baken\",\"algo\":\"{algo}\",\"mode\":\"{mode}\",\"fast\":{fast},\"batch\":{batch},\"threads\":{threads},\"files\":{},\"bytes\":{bytes},\"passes\":{passes},\"median_pass_s\":{median:.4},\"images_per_s\":{:.2},\"cpu_s_per_pass\":{cpu_per_pass:.3},\"mean_pass_s\":{wall_per_pass:.4}}}",
        files.len(),
        files.len() as f64 / median
    );
}
