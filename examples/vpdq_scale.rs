//! vPDQ matching at scale, for docs/benchmarks.md.
//!
//! cargo run --release --example vpdq_scale -- --videos 1000000 [--frames 30] [--queries 100]
//!
//! Lists `videos` videos of `frames` random frame hashes each in one `vpdq` table (the index
//! the matcher builds: frame rows = frame PDQ ‖ video id), then answers `queries` query videos
//! of `frames` frames on one thread — half are a listed video with every frame moved by 8
//! random bits, half unrelated — the way `Matcher::match_query` does: every query frame
//! searched at radius 31, hits grouped by video, python-threatexchange's shares computed and
//! checked against the rule (80 % / 0 %). Reported: build time, RAM, query videos/s and query
//! frames/s for the scan and the multi-index. Random frames are the hard case for neither
//! structure; real videos' neighbouring frames are closer to each other, which gives more hits
//! per query frame (more grouping work) on the same search.

use std::collections::HashMap;
use std::time::Instant;

use baken::index::{BitIndex, IndexKind, pack};
use baken::store::HashType;

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut videos, mut frames, mut nq) = (10_000usize, 30usize, 100usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--videos" => videos = args.next().unwrap_or_default().parse()?,
            "--frames" => frames = args.next().unwrap_or_default().parse()?,
            "--queries" => nq = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let mut rng = common::XorShift(0x5DEE_CE66_D1CE_4E5B);
    let rss0 = common::rss_mb();
    // Packed rows as the store hands them to the index: 8 words, frame then video id.
    let mut rows: Vec<u64> = Vec::with_capacity(videos * frames * 8);
    let mut listed: Vec<Vec<[u8; 32]>> = Vec::new();
    for v in 0..videos {
        let id = common::random_hash32(&mut rng);
        let fs: Vec<[u8; 32]> = (0..frames)
            .map(|_| common::random_hash32(&mut rng))
            .collect();
        for f in &fs {
            rows.extend(pack(f, 4));
            rows.extend(pack(&id, 4));
        }
        if v < nq / 2 {
            listed.push(fs);
        }
    }
    let queries: Vec<(Option<usize>, Vec<[u8; 32]>)> = (0..nq)
        .map(|i| {
            if i % 2 == 0 && i / 2 < listed.len() {
                let fs = listed[i / 2]
                    .iter()
                    .map(|f| {
                        let mut g = *f;
                        for _ in 0..8 {
                            let b = (rng.next() % 256) as usize;
                            g[b / 8] ^= 1 << (b % 8);
                        }
                        g
                    })
                    .collect();
                (Some(i / 2), fs)
            } else {
                (
                    None,
                    (0..frames)
                        .map(|_| common::random_hash32(&mut rng))
                        .collect(),
                )
            }
        })
        .collect();
    let ty = HashType::new("vpdq")?;
    let mut out = serde_json::json!({
        "videos": videos, "frames_per_video": frames, "listed_frames": videos * frames,
        "query_videos": nq, "cpu_avx512": cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("avx512vpopcntdq"),
    });
    for kind in [IndexKind::Scan, IndexKind::MultiIndex] {
        let r0 = common::rss_mb();
        let t = Instant::now();
        let idx = BitIndex::build_for(&ty, kind, 64, &rows);
        let build = t.elapsed().as_secs_f64();
        let ram = common::rss_mb() - r0;
        let table = idx
            .video()
            .ok_or_else(|| anyhow::anyhow!("not a video table"))?;
        let t = Instant::now();
        let (mut right, mut frames_searched) = (0usize, 0usize);
        for (want, q) in &queries {
            let packed: Vec<Vec<u64>> = q.iter().map(|f| pack(f, 8)).collect();
            frames_searched += packed.len();
            let hits = idx.search(&packed, 31);
            // Per listed video: query frames matched, listed frames matched.
            let mut by: HashMap<u32, (Vec<bool>, std::collections::HashSet<usize>)> =
                HashMap::new();
            for h in hits {
                let v = table.video_of(h.index);
                let e = by
                    .entry(v)
                    .or_insert_with(|| (vec![false; q.len()], Default::default()));
                e.0[h.variant] = true;
                e.1.insert(h.index);
            }
            let matched: Vec<u32> = by
                .into_iter()
                .filter(|(v, (qf, lf))| {
                    let qp = qf.iter().filter(|x| **x).count() as f64 * 100.0 / q.len() as f64;
                    let cp = lf.len() as f64 * 100.0 / f64::from(table.frames_per(*v).max(1));
                    qp >= 80.0 && cp >= 0.0
                })
                .map(|(v, _)| v)
                .collect();
            let ok = match want {
                Some(w) => matched == [*w as u32],
                None => matched.is_empty(),
            };
            right += usize::from(ok);
        }
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            right == queries.len(),
            "{kind:?}: {right}/{} answers right",
            queries.len()
        );
        out[baken::names::name(&kind)] = serde_json::json!({
            "build_s": build, "ram_mb": ram, "index_mb": idx.memory_bytes() as f64 / 1048576.0,
            "query_videos_per_s": queries.len() as f64 / secs,
            "query_frames_per_s": frames_searched as f64 / secs,
        });
        drop(idx);
    }
    out["rss_rows_mb"] = serde_json::json!(common::rss_mb() - rss0);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
