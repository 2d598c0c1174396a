//! Memory and disk per million hashes of one type, for the sizing table in docs/operations.md.
//!
//! cargo run --release --example sizing -- --type md5 --n 1000000 [--index auto|scan|mih]
//!
//! Imports `n` random values of the type through the real CSV importer into a fresh store,
//! lets a first matcher write the index snapshot (as a server's first start does), then opens
//! the store and the matcher again **in a child process**, so the figures are a cold start's
//! and not blurred by what the allocator kept from the import. Prints one JSON line: RSS of the
//! child with the store open, RSS growth from opening the matcher, the child's peak RSS, the
//! cold-start time, and the data directory's size on disk.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use baken::index::{IndexKind, MatchConfig, Matcher};
use baken::store::import::{self, Format};
use baken::store::{NewList, Store};

#[path = "../tests/common/mod.rs"]
mod common;

/// A line of /proc/self/status in MB (VmRSS: now, VmHWM: peak).
fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes per value of the types measured (Hamming types other than PDQ are 64 bits here).
fn value_len(ty: &str) -> anyhow::Result<usize> {
    Ok(match ty {
        "pdq" | "sha256" => 32,
        "md5" => 16,
        "sha1" => 20,
        "phash" | "dhash" | "ahash" | "blockhash" => 8,
        other => anyhow::bail!("no generator for type {other}"),
    })
}

/// The child: cold start of store and matcher, figures as JSON on stdout.
fn child(dir: &str, index: IndexKind) -> anyhow::Result<()> {
    let rss_start = status_mb("VmRSS:");
    let t = Instant::now();
    let store = Arc::new(Store::open(Path::new(dir))?);
    let rss_store = status_mb("VmRSS:");
    let matcher = Matcher::open(
        store,
        MatchConfig {
            index,
            ..MatchConfig::default()
        },
    )?;
    let cold_s = t.elapsed().as_secs_f64();
    let rss_matcher = status_mb("VmRSS:");
    let snap = matcher.snapshot();
    let hash_bytes: usize = snap.lists.values().map(|l| l.hash_bytes()).sum();
    let from_snapshot = snap.lists.values().all(|l| l.from_snapshot);
    println!(
        "{}",
        serde_json::json!({
            "rss_process_mb": rss_start,
            "rss_store_open_mb": rss_store,
            "rss_matcher_growth_mb": rss_matcher - rss_store,
            "rss_total_mb": rss_matcher,
            "peak_rss_mb": status_mb("VmHWM:"),
            "index_hash_mb": hash_bytes as f64 / 1e6,
            "cold_start_s": cold_s,
            "from_snapshot": from_snapshot,
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut ty, mut index, mut child_dir) =
        (1_000_000usize, "pdq".to_owned(), IndexKind::Auto, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--n" => n = args.next().unwrap_or_default().parse()?,
            "--type" => ty = args.next().unwrap_or_default(),
            "--index" => {
                index = args
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .map_err(anyhow::Error::msg)?
            }
            "--child" => child_dir = args.next(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    if let Some(dir) = child_dir {
        return child(&dir, index);
    }
    let len = value_len(&ty)?;
    let mut rng = common::XorShift(0x9E37_79B9_7F4A_7C15);
    let mut csv = Vec::with_capacity(n * (2 * len + 20));
    writeln!(csv, "hash_type,hash,classification,external_id")?;
    for i in 0..n {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&rng.next().to_le_bytes());
        }
        v.truncate(len);
        writeln!(csv, "{ty},{},A1,e{i}", hex::encode(&v))?;
    }
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    {
        let store = Arc::new(Store::open(dir.path())?);
        store.create_list(
            NewList {
                name: "sizing".into(),
                ..NewList::default()
            },
            "bench",
        )?;
        import::import(
            &store,
            "sizing",
            Format::Csv,
            csv.as_slice(),
            "gen",
            "bench",
        )?;
        drop(csv);
        // The first start writes the snapshot the next ones load, as `baken serve` does.
        Matcher::open(store, MatchConfig::default())?.write_snapshots()?;
    }
    let import_s = t.elapsed().as_secs_f64();
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(dir.path())
        .arg("--index")
        .arg(match index {
            IndexKind::Auto => "auto",
            IndexKind::Scan => "scan",
            IndexKind::MultiIndex => "mih",
        })
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["type"] = ty.into();
    v["n"] = n.into();
    v["raw_hash_mb"] = ((n * len) as f64 / 1e6).into();
    v["import_and_first_start_s"] = import_s.into();
    v["disk_mb"] = (dir_bytes(dir.path()) as f64 / 1e6).into();
    println!("{v}");
    Ok(())
}
