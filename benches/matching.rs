//! Hamming radius search at 1M and 10M PDQ hashes: one query = 8 dihedral variants at
//! radius 31, exact recall. Compares multi-index hashing, the SIMD scan kernel picked at run
//! time and the portable scan.
//!
//! cargo bench --bench matching

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use baken::index::mih::MultiIndex;
use baken::index::scan::{hamming_scan, kernel_name, scan_portable};
use baken::index::{BitTable, pack};

fn table(n: usize, seed: u64) -> BitTable {
    let mut s = seed;
    let mut t = BitTable::new(32);
    let mut h = [0u8; 32];
    for _ in 0..n {
        for c in h.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            c.copy_from_slice(&s.to_le_bytes());
        }
        t.push(&h);
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pdq-radius-31");
    g.sample_size(10);
    let queries: Vec<Vec<u64>> = (0..8u8)
        .map(|i| pack(&[i.wrapping_mul(37); 32], 4))
        .collect();
    for n in [1_000_000usize, 10_000_000] {
        let t = table(n, 0x9E37_79B9_7F4A_7C15);
        let rows: Vec<u64> = (0..t.len())
            .flat_map(|i| pack(&t.entry_bytes(i), 4))
            .collect();
        let mih = MultiIndex::build(32, 4, &rows);
        drop(rows);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("multi-index", n), &mih, |b, m| {
            b.iter(|| m.search(&queries, 31))
        });
        g.bench_with_input(BenchmarkId::new(kernel_name(), n), &t, |b, t| {
            b.iter(|| hamming_scan(t, &queries, 31))
        });
        g.bench_with_input(BenchmarkId::new("portable", n), &t, |b, t| {
            b.iter(|| scan_portable(t, &queries, 31))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
