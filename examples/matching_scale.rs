//! Matching at scale, for docs/benchmarks.md and bench/matching_side_by_side.py.
//!
//! cargo run --release --example matching_scale -- --n 1000000 [--queries 300] [--store] [--dump DIR]
//!
//! Generates `n` random PDQ hashes and `queries` PDQ queries of 8 dihedral variants each (a
//! third near an entry, the rest random), then measures on one thread:
//! * in-memory index, scan and multi-index: build time, RAM, queries/s at radius 31;
//! * with `--store`: CSV import into RocksDB (entries/s), cold start of the matcher from the
//!   store alone and from its index snapshot, queries/s through the matcher (metadata read from
//!   RocksDB on hits).
//!
//! `--dump DIR` writes entries.bin (n×32 bytes), queries.bin (q×8×32) and hits.txt (per query:
//! sorted `index:distance` pairs) for the faiss side.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use baken::index::scan;
use baken::index::{BitIndex, IndexKind, MatchConfig, Matcher, QueryHash, pack};
use baken::store::import::{self, Format};
use baken::store::{HashType, NewList, Store};

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut nq, mut with_store, mut dump) = (1_000_000usize, 300usize, false, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--n" => n = args.next().unwrap_or_default().parse()?,
            "--queries" => nq = args.next().unwrap_or_default().parse()?,
            "--store" => with_store = true,
            "--dump" => dump = args.next(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let mut rng = common::XorShift(0x9E37_79B9_7F4A_7C15);
    let entries: Vec<[u8; 32]> = (0..n).map(|_| common::random_hash32(&mut rng)).collect();
    let queries: Vec<Vec<[u8; 32]>> = (0..nq)
        .map(|i| {
            let mut v: Vec<[u8; 32]> = (0..8).map(|_| common::random_hash32(&mut rng)).collect();
            if i % 3 == 0 {
                let mut near = entries[(rng.next() as usize) % n];
                for _ in 0..(rng.next() % 40) {
                    let b = (rng.next() % 256) as usize;
                    near[b / 8] ^= 1 << (b % 8);
                }
                v[(rng.next() % 8) as usize] = near;
            }
            v
        })
        .collect();

    let rows: Vec<u64> = entries.iter().flat_map(|e| pack(e, 4)).collect();
    let packed: Vec<Vec<Vec<u64>>> = queries
        .iter()
        .map(|q| q.iter().map(|v| pack(v, 4)).collect())
        .collect();
    let mut out = serde_json::json!({
        "n": n,
        "queries": nq,
        "variants_per_query": 8,
        "radius": 31,
        "kernel": scan::kernel_name(),
        "raw_hash_mb": (n * 32) as f64 / 1e6,
    });
    // Both search structures over the same hashes and queries; they must agree hit for hit.
    let mut results: Vec<Vec<scan::Hit>> = Vec::new();
    for kind in [IndexKind::Scan, IndexKind::MultiIndex] {
        let rss0 = common::rss_mb();
        let t = Instant::now();
        let index = BitIndex::build(kind, 32, &rows);
        let build_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut res = Vec::with_capacity(nq);
        for q in &packed {
            res.push(index.search(q, 31));
        }
        let search_s = t.elapsed().as_secs_f64();
        if results.is_empty() {
            results = res;
        } else {
            assert_eq!(results, res, "scan and multi-index disagree");
        }
        out[index.kind_name()] = serde_json::json!({
            "index_build_s": build_s,
            "index_mb": index.memory_bytes() as f64 / 1e6,
            "rss_growth_mb": common::rss_mb() - rss0,
            "queries_per_s": nq as f64 / search_s,
            "ms_per_query": search_s * 1000.0 / nq as f64,
        });
    }
    drop(rows);
    let hits: usize = results.iter().map(Vec::len).sum();
    out["hits"] = hits.into();

    if let Some(dir) = &dump {
        std::fs::create_dir_all(dir)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{dir}/entries.bin"))?);
        for e in &entries {
            f.write_all(e)?;
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{dir}/queries.bin"))?);
        for q in &queries {
            for v in q {
                f.write_all(v)?;
            }
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{dir}/hits.txt"))?);
        for r in &results {
            let line: Vec<String> = r
                .iter()
                .map(|h| format!("{}:{}", h.index, h.distance))
                .collect();
            writeln!(f, "{}", line.join(" "))?;
        }
    }

    if with_store {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        store.create_list(
            NewList {
                name: "scale".into(),
                ..NewList::default()
            },
            "bench",
        )?;
        let mut csv = Vec::with_capacity(n * 90);
        writeln!(csv, "hash_type,hash,classification,external_id")?;
        for (i, e) in entries.iter().enumerate() {
            writeln!(csv, "pdq,{},A1,e{i}", hex::encode(e))?;
        }
        let t = Instant::now();
        let (report, _) =
            import::import(&store, "scale", Format::Csv, csv.as_slice(), "gen", "bench")?;
        let import_s = t.elapsed().as_secs_f64();
        drop(csv);
        drop(store);
        // Cold start from the store alone (no snapshot yet), then from the index snapshot the
        // first start wrote.
        let t = Instant::now();
        let store = Arc::new(Store::open(dir.path())?);
        let matcher = Matcher::open(store.clone(), MatchConfig::default())?;
        let cold_store_s = t.elapsed().as_secs_f64();
        matcher.write_snapshots()?;
        drop(matcher);
        drop(store);
        let t = Instant::now();
        let store = Arc::new(Store::open(dir.path())?);
        let rss1 = common::rss_mb();
        let matcher = Matcher::open(store, MatchConfig::default())?; // auto: multi-index
        let cold_s = t.elapsed().as_secs_f64();
        let rss_index = common::rss_mb() - rss1;
        let ty = HashType::new("pdq")?;
        let t = Instant::now();
        let mut found = 0;
        for q in &queries {
            let qh = [QueryHash::new(
                ty.clone(),
                q.iter().map(|v| v.to_vec()).collect(),
                Some(100),
            )];
            found += matcher.match_query(&qh, None)?.matches.len();
        }
        let mq = t.elapsed().as_secs_f64();
        assert_eq!(found, hits, "the matcher finds what the scan finds");
        out["store"] = serde_json::json!({
            "imported": report.counts.added,
            "import_s": import_s,
            "import_entries_per_s": n as f64 / import_s,
            "cold_start_from_store_s": cold_store_s,
            "cold_start_s": cold_s,
            "matcher_rss_growth_mb": rss_index,
            "matcher_queries_per_s": nq as f64 / mq,
        });
    }
    println!("{out}");
    Ok(())
}
