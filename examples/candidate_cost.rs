//! Per-image cost of the query-side candidates (issue 14): for each image, decoded once, the
//! time of the image's own PDQ and of `hash_candidates` for each kind alone and all together
//! (the best of `--reps` runs, one thread), then the median and p99 over the images, in ms.
//! Decoding is excluded: it is paid once whether candidates are on or not.
//!
//! cargo build --release --example candidate_cost
//! candidate_cost [--reps 3] FILE|DIR...

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use baken::decode::{self, DecodeLimits, DecodeOptions};
use baken::hashing::candidates::{CandidateOptions, hash_candidates};
use baken::hashing::pdq::{PdqMode, pdq_hash};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                let e = e?.path();
                if e.is_file() {
                    out.push(e);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let kinds: [(&str, CandidateOptions); 5] = [
        ("pdq (the image itself)", CandidateOptions::default()),
        (
            "border",
            CandidateOptions {
                border: true,
                ..Default::default()
            },
        ),
        (
            "frame",
            CandidateOptions {
                frame: true,
                ..Default::default()
            },
        ),
        (
            "deskew",
            CandidateOptions {
                deskew: true,
                ..Default::default()
            },
        ),
        ("border,frame,deskew", CandidateOptions::all()),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut views = vec![0usize; kinds.len()];
    let mut pixels = Vec::new();
    let list = files(&a.paths)?;
    for path in &list {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let Ok(img) = decode::decode(&bytes, &DecodeLimits::default(), DecodeOptions::default())
        else {
            continue;
        };
        let view = img.view();
        pixels.push((view.width * view.height) as f64 / 1e6);
        for (k, (_, opts)) in kinds.iter().enumerate() {
            let mut best = f64::INFINITY;
            for rep in 0..a.reps.max(1) {
                let t = Instant::now();
                if k == 0 {
                    std::hint::black_box(pdq_hash(view, PdqMode::Full));
                } else {
                    let c = hash_candidates(view, opts, PdqMode::Full);
                    if rep == 0 {
                        views[k] += c.len();
                    }
                    std::hint::black_box(c);
                }
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            times[k].push(best);
        }
    }
    anyhow::ensure!(
        !pixels.is_empty(),
        "no decodable image among {} files",
        list.len()
    );
    let n = pixels.len();
    println!(
        "{} images, median {:.2} MP, max {:.2} MP; best of {} runs, one thread, decode excluded",
        n,
        quantile(&mut pixels.clone(), 0.5),
        quantile(&mut pixels, 1.0),
        a.reps
    );
    println!("| work | median ms | p99 ms | views per image |");
    println!("|---|---|---|---|");
    for (k, (name, _)) in kinds.iter().enumerate() {
        let t = &mut times[k];
        println!(
            "| {name} | {:.3} | {:.3} | {} |",
            quantile(t, 0.5),
            quantile(t, 0.99),
            if k == 0 {
                "1".to_string()
            } else {
                format!("{:.2}", views[k] as f64 / n as f64)
            }
        );
    }
    Ok(())
}
