//! `baken scan`: batch matching of directories, file lists and tar archives, with progress,
//! a JSONL result file, a resumable checkpoint and reports for matches.
//!
//! Exit codes: 0 no match, 1 matches found, 2 errors (the summary names their kinds), 130 when
//! interrupted (the output and checkpoint are consistent; `--resume` continues).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use baken::decode::DecodeLimits;
use baken::engine::{Engine, RemoteMatcher, Tally};
use baken::index::Matcher;
use baken::scan::{ScanItem, ScanOptions, ScanTotal, Shard, Total};

use super::lists::open_store;

/// Set by the Ctrl-C handler; the pipeline finishes the chunk in hand and stops.
static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Args)]
pub struct ScanArgs {
    /// Directories (recursive), files, `.tar` archives, `@list.txt` (one input a line) or `-`
    /// (such a list on stdin).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Match only these lists (repeatable; negative lists always apply).
    #[arg(long = "list")]
    lists: Vec<String>,
    /// Write results here (JSONL; appended to with --resume) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted scan of the same inputs and lists from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Also print a line for every file without a match (path, status, error kind; no hashes).
    #[arg(long)]
    all: bool,
    /// Scan only shard K of N (`K/N`, 0 <= K < N): the items whose id (path, or
    /// `archive.tar!member`) hashes to K modulo N. N runs with K = 0..N-1 over the same inputs
    /// cover every item exactly once (an indexed Kubernetes Job: `--shard
    /// $(JOB_COMPLETION_INDEX)/N`); each shard has its own checkpoint.
    #[arg(long)]
    shard: Option<Shard>,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10.0)]
    progress_interval: f64,
    #[command(flatten)]
    matching: super::lists::MatchingArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Items per chunk (a checkpoint is written after each chunk).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    chunk_items: u64,
    /// Pause after each chunk, milliseconds. For tests of interruption only.
    #[arg(long, hide = true, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Match against a running `baken serve` at this address (e.g. http://127.0.0.1:50051)
    /// instead of the local store: only hashes are sent (MatchHashes), never images.
    #[arg(long)]
    server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, env = "BAKEN_TOKEN", requires = "server")]
    token: Option<String>,
    /// CA certificate (PEM) that signed the --server's certificate, for an https:// address
    /// (there are no built-in roots: a service's certificate comes from its own CA).
    #[arg(long, env = "BAKEN_SERVER_CA", requires = "server")]
    server_ca: Option<PathBuf>,
    #[command(flatten)]
    report: super::reports::MatchReportArgs,
}

/// Counters of a scan, carried across resumed runs in the checkpoint.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Totals {
    files: u64,
    bytes: u64,
    matched_files: u64,
    error_files: u64,
    /// Error kind → files.
    errors: BTreeMap<String, u64>,
    /// List → files matching it.
    matches_by_list: BTreeMap<String, u64>,
    /// Time spent by all runs, seconds.
    elapsed_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    job: String,
    /// Items done, in enumeration order.
    completed: u64,
    /// Length of the output file when the checkpoint was written: a resumed run cuts the file
    /// back to it, so lines written after the last checkpoint are not repeated.
    out_len: Option<u64>,
    totals: Totals,
}

/// The job id: SHA-256 of the canonicalised inputs, the list filter and the shard, so a resume
/// picks up the same scan (and shard) and only that.
fn job_id(inputs: &[String], lists: &[String], shard: Option<Shard>) -> String {
    let canon = |p: &str| {
        std::fs::canonicalize(p)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_owned())
    };
    let inputs: Vec<String> = inputs
        .iter()
        .map(|i| match i.strip_prefix('@') {
            _ if i == "-" => "-".to_owned(),
            Some(l) => format!("@{}", canon(l)),
            None => canon(i),
        })
        .collect();
    let mut lists = lists.to_vec();
    lists.sort();
    let mut key = serde_json::json!({ "inputs": inputs, "lists": lists });
    // Added only when sharded, so the ids (and checkpoints) of unsharded scans stay as they were.
    if let Some(s) = shard {
        key["shard"] = s.to_string().into();
    }
    hex::encode(sha2::Sha256::digest(key.to_string().as_bytes()))
}

enum Output {
    Stdout(std::io::Stdout),
    File(std::io::BufWriter<std::fs::File>),
}

impl Output {
    fn line(&mut self, v: &impl Serialize) -> anyhow::Result<()> {
        let mut s = serde_json::to_string(v)?;
        s.push('\n');
        match self {
            Output::Stdout(o) => o.lock().write_all(s.as_bytes())?,
            Output::File(f) => f.write_all(s.as_bytes())?,
        }
        Ok(())
    }

    /// Flush (and for a file, fsync) what was written; the file's length afterwards.
    fn commit(&mut self) -> anyhow::Result<Option<u64>> {
        match self {
            Output::Stdout(o) => {
                o.flush()?;
                Ok(None)
            }
            Output::File(f) => {
                f.flush()?;
                f.get_ref().sync_data()?;
                Ok(Some(f.get_mut().stream_position()?))
            }
        }
    }
}

/// Progress: a bar on a terminal, a plain line every interval otherwise. Both show the total
/// and an ETA once the total is known (see [`ScanTotal`]), and say so when it is not.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// The bar has its length (it starts as a spinner while the total is counted).
    bar_sized: bool,
    interval: Duration,
    last: Instant,
    /// `scan` or `scan[shard K/N]`, so the lines of N pods are told apart in collected logs.
    label: String,
}

impl Progress {
    fn new(interval: Duration, shard: Option<Shard>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress {
            bar,
            bar_sized: false,
            interval,
            last: Instant::now(),
            label: match shard {
                Some(s) => format!("scan[shard {s}]"),
                None => "scan".to_owned(),
            },
        }
    }

    /// `rate`: files per second in this run; `total`: items of the whole job, resumed runs'
    /// included, like `t.files`.
    fn update(&mut self, t: &Totals, rate: f64, total: Total) {
        let msg = progress_message(t, rate, total);
        if let Some(b) = &self.bar {
            if let Total::Known(n) = total {
                if !self.bar_sized {
                    self.bar_sized = true;
                    b.set_length(n);
                    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {msg}") {
                        b.set_style(style);
                    }
                }
                b.set_position(t.files.min(n));
            }
            b.set_message(msg);
        } else if self.last.elapsed() >= self.interval {
            self.last = Instant::now();
            eprintln!("{}: {msg}", self.label);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// One progress line: files (of the total), bytes, matches, rate, then the ETA or why there
/// is none.
fn progress_message(t: &Totals, rate: f64, total: Total) -> String {
    let files = match total {
        Total::Known(n) if n > 0 => format!(
            "{}/{n} files ({:.0}%)",
            t.files,
            t.files as f64 * 100.0 / n as f64
        ),
        Total::Known(n) => format!("{}/{n} files", t.files),
        _ => format!("{} files", t.files),
    };
    let tail = match total {
        Total::Known(n) => {
            let left = n.saturating_sub(t.files);
            if left == 0 {
                "ETA 0s".to_owned()
            } else if rate > 0.0 {
                format!("ETA {}", human_duration(left as f64 / rate))
            } else {
                "ETA unknown (no rate yet)".to_owned()
            }
        }
        Total::Counting(0) => "total still being counted".to_owned(),
        Total::Counting(n) => format!("total still being counted (at least {n})"),
        Total::Unknown => {
            "total unknown until the end (stdin or tar archives are not counted ahead)".to_owned()
        }
    };
    format!(
        "{files}, {}, {} matches, {rate:.1} files/s, {tail}",
        human_bytes(t.bytes),
        t.matched_files
    )
}

fn human_duration(secs: f64) -> String {
    let s = secs.round().clamp(0.0, u64::MAX as f64) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn run_scan(args: ScanArgs, data: &Path, actor: &str) -> anyhow::Result<ExitCode> {
    let (engine, reporting) = match &args.server {
        None => {
            let store = Arc::new(open_store(data)?);
            let reporting = args.report.setup(data, store.clone())?;
            let matcher = Arc::new(Matcher::open(store, args.matching.config())?);
            let engine = Engine::new(matcher, DecodeLimits::default())
                .with_candidates(args.matching.candidate_options());
            (engine, reporting)
        }
        Some(addr) => {
            if args.report.report {
                bail!(
                    "--report with --server is not supported yet: the server creates reports for its own callers"
                );
            }
            let ca = match &args.server_ca {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            let remote = RemoteMatcher::connect(addr, ca, args.token.as_deref())?;
            // Views are derived here and sent as hashes; the server's candidate threshold and
            // quality floor apply to them.
            let engine = Engine::new(Arc::new(remote), DecodeLimits::default())
                .with_candidates(args.matching.candidate_options());
            (engine, None)
        }
    };
    engine.check_lists(&args.lists)?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let hasher = engine.match_hasher(args.matching.pdq_mode)?;

    let job = job_id(&args.inputs, &args.lists, args.shard);
    let ck_dir = baken::datadir::DataDir::new(data).scan_checkpoints();
    std::fs::create_dir_all(&ck_dir).with_context(|| format!("creating {}", ck_dir.display()))?;
    let ck_path = ck_dir.join(format!("{job}.json"));
    let previous: Option<Checkpoint> = if args.resume && ck_path.exists() {
        let text = std::fs::read_to_string(&ck_path)
            .with_context(|| format!("reading {}", ck_path.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a scan checkpoint", ck_path.display()))?,
        )
    } else {
        if args.resume {
            eprintln!("scan: no checkpoint for these inputs; starting from the beginning");
        }
        None
    };

    let mut out = match &args.out {
        None => Output::Stdout(std::io::stdout()),
        Some(p) => {
            let mut o = std::fs::OpenOptions::new();
            o.create(true).write(true);
            let f = o
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?;
            match previous.as_ref().map(|c| c.out_len) {
                // Lines after the checkpoint came from chunks that will be redone.
                Some(Some(len)) => f.set_len(len)?,
                Some(None) => {}
                None => f.set_len(0)?,
            }
            let mut f = f;
            f.seek(std::io::SeekFrom::End(0))?;
            Output::File(std::io::BufWriter::new(f))
        }
    };

    let (mut totals, skip) = match &previous {
        Some(c) => (c.totals.clone(), c.completed),
        None => (Totals::default(), 0),
    };
    let base_elapsed = totals.elapsed_s;
    let files_before = totals.files;
    let mut completed = skip;

    // The first Ctrl-C stops after the chunk in hand; a second one ends the process at once
    // (the last checkpoint still holds, so --resume works either way).
    if let Err(e) = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    }) {
        tracing::warn!(error = %e, "no Ctrl-C handler; an interrupt will not leave a checkpoint");
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let opts = ScanOptions {
        skip,
        shard: args.shard,
        chunk_items: args.chunk_items as usize,
        max_input_bytes: hasher.options().max_read_bytes(),
        ..ScanOptions::default()
    };
    let mut progress = Progress::new(
        Duration::from_secs_f64(args.progress_interval.max(0.0)),
        args.shard,
    );
    let total = ScanTotal::default();
    let start = Instant::now();

    let end = super::reports::Concluder {
        engine: &engine,
        tally: Tally::default(),
        reporting,
        actor,
    };
    let on_chunk = |items: Vec<ScanItem>| -> anyhow::Result<()> {
        let n = items.len() as u64;
        for item in items {
            totals.files += 1;
            totals.bytes += item.bytes;
            match item.result {
                Ok(h) => {
                    let o = engine.match_output(h, &args.lists)?;
                    let report = end.conclude(&o, || format!("file:{}", item.id))?;
                    if !o.is_match() {
                        if args.all {
                            out.line(&serde_json::json!({"item": item.id, "status": "no_match"}))?;
                        }
                        continue;
                    }
                    totals.matched_files += 1;
                    for l in o.matched_lists() {
                        *totals.matches_by_list.entry(l).or_default() += 1;
                    }
                    let mut line = serde_json::json!({
                        "item": item.id,
                        "status": "match",
                        "matches": o.result.matches,
                    });
                    if let Some(rep) = report {
                        line["report"] = rep;
                    }
                    out.line(&line)?;
                }
                Err(e) => {
                    end.failed();
                    totals.error_files += 1;
                    *totals.errors.entry(e.kind().to_owned()).or_default() += 1;
                    tracing::debug!(kind = e.kind(), "input failed");
                    if args.all {
                        out.line(&serde_json::json!({
                            "item": item.id,
                            "status": "error",
                            "error_kind": e.kind(),
                        }))?;
                    }
                }
            }
        }
        end.flush()?;
        completed += n;
        totals.elapsed_s = base_elapsed + start.elapsed().as_secs_f64();
        // Output first, then the checkpoint that points at it: a crash between the two only
        // repeats work, and the resumed run cuts the output back to the checkpoint's length.
        let out_len = out.commit()?;
        let ck = Checkpoint {
            job: job.clone(),
            completed,
            out_len,
            totals: totals.clone(),
        };
        baken::datadir::write_atomic(&ck_path, &serde_json::to_vec(&ck)?, 0o600)
            .with_context(|| format!("writing {}", ck_path.display()))?;
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        progress.update(
            &totals,
            (totals.files - files_before) as f64 / secs,
            total.get(),
        );
        if args.chunk_delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.chunk_delay_ms));
        }
        Ok(())
    };
    pool.install(|| baken::scan::scan(&args.inputs, &opts, &hasher, &STOP, &total, on_chunk))?;
    progress.finish();

    let interrupted = STOP.load(Ordering::SeqCst);
    totals.elapsed_s = base_elapsed + start.elapsed().as_secs_f64();
    let mut summary = serde_json::json!({ "summary": {
        "files": totals.files,
        "bytes": totals.bytes,
        "matched_files": totals.matched_files,
        "matches_by_list": totals.matches_by_list,
        "error_files": totals.error_files,
        "errors": totals.errors,
        "elapsed_s": totals.elapsed_s,
        "images_per_s": if totals.elapsed_s > 0.0 { totals.files as f64 / totals.elapsed_s } else { 0.0 },
        "resumed_from": skip,
        "interrupted": interrupted,
    }});
    if let Some(s) = args.shard {
        summary["summary"]["shard"] = s.to_string().into();
    }
    out.line(&summary)?;
    out.commit()?;
    // On stderr too, so a human sees it when stdout goes to a pipe or the output to a file.
    eprintln!("{summary}");
    if interrupted {
        eprintln!("scan: interrupted after {completed} items; run again with --resume to continue");
        return Ok(ExitCode::from(130));
    }
    // A finished job needs no checkpoint; an unfinished one could be resumed wrongly later.
    if let Err(e) = std::fs::remove_file(&ck_path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        bail!("removing {}: {e}", ck_path.display());
    }
    Ok(ExitCode::from(if totals.error_files > 0 {
        2
    } else if totals.matched_files > 0 {
        1
    } else {
        0
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_total_and_eta_or_say_why_not() {
        let t = Totals {
            files: 250,
            bytes: 12_500_000,
            matched_files: 3,
            ..Totals::default()
        };
        assert_eq!(
            progress_message(&t, 50.0, Total::Known(1000)),
            "250/1000 files (25%), 12.5 MB, 3 matches, 50.0 files/s, ETA 15s"
        );
        assert!(
            progress_message(&t, 0.0, Total::Known(1000)).ends_with("ETA unknown (no rate yet)")
        );
        assert!(
            progress_message(&t, 50.0, Total::Known(250))
                .ends_with("250/250 files (100%), 12.5 MB, 3 matches, 50.0 files/s, ETA 0s")
        );
        assert!(
            progress_message(&t, 50.0, Total::Counting(0)).ends_with("total still being counted")
        );
        assert!(progress_message(&t, 50.0, Total::Counting(900)).ends_with("(at least 900)"));
        let unknown = progress_message(&t, 50.0, Total::Unknown);
        assert!(
            unknown.starts_with("250 files, ") && unknown.contains("total unknown"),
            "{unknown}"
        );
        assert_eq!(human_duration(59.4), "59s");
        assert_eq!(human_duration(61.0), "1m01s");
        assert_eq!(human_duration(7322.0), "2h02m");
    }
}
