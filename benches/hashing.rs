//! Hashing throughput per algorithm on a small and a large photo (decode included).
//! Uses ../shared/corpus when present, generated images otherwise.
//!
//! cargo bench --bench hashing

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use baken::decode::{self, DecodeLimits, DecodeOptions};
use baken::hashing::{self, HashOptions, Hasher, PdqMode};

#[path = "../tests/common/mod.rs"]
mod common;

/// (label, bytes): the corpus's smallest and largest JPEG, or generated stand-ins.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let manifest = corpus.join("manifest.csv");
    if manifest.exists() {
        let rows = common::read_csv(&manifest);
        let mut jpegs: Vec<_> = rows
            .iter()
            .filter(|r| r["format"] == "JPEG")
            .map(|r| {
                let px: u64 =
                    r["width"].parse::<u64>().unwrap() * r["height"].parse::<u64>().unwrap();
                (
                    px,
                    r["file"].clone(),
                    r["width"].clone(),
                    r["height"].clone(),
                )
            })
            .collect();
        jpegs.sort();
        let pick = |i: usize| {
            let (_, f, w, h) = &jpegs[i];
            (
                format!("jpeg-{w}x{h}"),
                std::fs::read(corpus.join(f)).unwrap(),
            )
        };
        return vec![pick(0), pick(jpegs.len() / 2), pick(jpegs.len() - 1)];
    }
    eprintln!("../shared/corpus absent: benchmarking generated images");
    [(320u32, 240u32), (4000, 3000)]
        .iter()
        .map(|&(w, h)| {
            let px = common::generated_image(w, h, 3, 1);
            let j = decode::jpeg::encode(&px, w, h, 3, 90, false).unwrap();
            (format!("generated-{w}x{h}"), j)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    let mut g = c.benchmark_group("hash");
    g.sample_size(10);
    let configs: Vec<(&str, HashOptions)> = vec![
        ("pdq-full", opts("pdq", PdqMode::Full, false)),
        ("pdq-ref512", opts("pdq", PdqMode::Ref512, false)),
        ("pdq-fast", opts("pdq", PdqMode::Full, true)),
        ("phash", opts("phash", PdqMode::Full, false)),
        ("dhash", opts("dhash", PdqMode::Full, false)),
        ("ahash", opts("ahash", PdqMode::Full, false)),
        ("blockhash", opts("blockhash", PdqMode::Full, false)),
        (
            "md5+sha1+sha256",
            opts("md5,sha1,sha256", PdqMode::Full, false),
        ),
    ];
    for (label, bytes) in &inputs {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("decode-only", label), bytes, |b, bytes| {
            b.iter(|| {
                decode::decode(bytes, &DecodeLimits::default(), DecodeOptions::default()).unwrap()
            })
        });
        for (name, o) in &configs {
            let h = Hasher::new(o.clone());
            g.bench_with_input(BenchmarkId::new(*name, label), bytes, |b, bytes| {
                b.iter(|| h.hash_bytes(bytes).unwrap())
            });
        }
    }
    g.finish();
}

fn opts(algo: &str, mode: PdqMode, fast: bool) -> HashOptions {
    HashOptions {
        algorithms: hashing::parse_algorithms(algo).unwrap(),
        pdq_mode: mode,
        fast_min_side: fast.then_some(hashing::FAST_MIN_SIDE),
        ..HashOptions::default()
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
