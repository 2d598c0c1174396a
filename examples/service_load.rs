//! Load benchmark of the gRPC service on loopback, bounded in count and time.
//!
//! 1. In-process: `Hasher::hash_batch` (the Scan algorithms: PDQ, MD5, SHA-1, SHA-256) over the
//!    selected photos on all cores — the ceiling.
//! 2. Service: the release `baken serve` binary (a child process, on 127.0.0.1:0), scanned by
//!    `--concurrency` closed-loop tonic clients for `--seconds`: requests/s, p50/p99 latency.
//! 3. Overload: open-loop requests at 2× the measured service rate for `--seconds`: how many
//!    were shed (RESOURCE_EXHAUSTED), goodput, and the server's peak RSS (sampled from /proc).
//! 4. Recovery: closed-loop again; no shedding, throughput back.
//!
//! Photos: files of 60–140 KB from ../shared/corpus/photos (skips with a message when absent).
//!
//! CARGO_TARGET_DIR=/work/target cargo build --release --bin baken --example service_load
//! /work/target/release/examples/service_load [--seconds 15] [--concurrency 8] [--max-in-flight 16]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baken::hashing::{Algorithm, HashOptions, Hasher};
use baken::service::pb;
use baken::service::pb::scan_service_client::ScanServiceClient;
use tonic::transport::{Channel, Endpoint};

struct Opts {
    seconds: u64,
    concurrency: usize,
    max_in_flight: usize,
    corpus: PathBuf,
}

fn opts() -> Opts {
    let mut o = Opts {
        seconds: 15,
        concurrency: 8,
        max_in_flight: 16,
        corpus: Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/photos"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => o.seconds = v().parse().expect("seconds"),
            "--concurrency" => o.concurrency = v().parse().expect("concurrency"),
            "--max-in-flight" => o.max_in_flight = v().parse().expect("max in flight"),
            "--corpus" => o.corpus = v().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    o.seconds = o.seconds.clamp(1, 120);
    o
}

fn photos(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| (60_000..=140_000).contains(&m.len())))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Run {
    ok: u64,
    shed: u64,
    other: u64,
    secs: f64,
    lat: Vec<Duration>,
}

/// Closed loop: `n` clients, each sending the next photo as soon as the last is answered.
async fn closed_loop(ch: &Channel, imgs: &Arc<Vec<Vec<u8>>>, n: usize, secs: u64) -> Run {
    let stop = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..n {
        let (mut c, imgs) = (ScanServiceClient::new(ch.clone()), imgs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut shed, mut other, mut i) = (Vec::new(), 0u64, 0u64, k);
            while Instant::now() < stop {
                let img = imgs[i % imgs.len()].clone();
                i += n;
                let t = Instant::now();
                match c
                    .scan(pb::ScanRequest {
                        image: img,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => shed += 1,
                    Err(_) => other += 1,
                }
            }
            (lat, shed, other)
        }));
    }
    let mut run = Run {
        ok: 0,
        shed: 0,
        other: 0,
        secs: 0.0,
        lat: Vec::new(),
    };
    for t in tasks {
        let (lat, shed, other) = t.await.expect("client task");
        run.ok += lat.len() as u64;
        run.lat.extend(lat);
        run.shed += shed;
        run.other += other;
    }
    run.secs = t0.elapsed().as_secs_f64();
    run.lat.sort();
    run
}

/// Open loop: a new request every 1/rate s whatever the answers, for `secs`; peak server RSS.
async fn open_loop(
    ch: &Channel,
    imgs: &Arc<Vec<Vec<u8>>>,
    rate: f64,
    secs: u64,
    pid: u32,
) -> (Run, u64) {
    let (ok, shed, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let t0 = Instant::now();
    let total = (rate * secs as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = t0 + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (mut c, imgs) = (ScanServiceClient::new(ch.clone()), imgs.clone());
        let (ok, shed, other) = (ok.clone(), shed.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .scan(pb::ScanRequest {
                    image: imgs[i as usize % imgs.len()].clone(),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                    shed.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => other.fetch_add(1, Ordering::Relaxed),
            };
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (
        Run {
            ok: ok.load(Ordering::Relaxed),
            shed: shed.load(Ordering::Relaxed),
            other: other.load(Ordering::Relaxed),
            secs,
            lat: Vec::new(),
        },
        peak.load(Ordering::Relaxed),
    )
}

fn main() {
    let o = opts();
    let imgs = photos(&o.corpus);
    if imgs.is_empty() {
        eprintln!(
            "SKIPPED: no 60-140 KB photos in {} (needs ../shared/corpus)",
            o.corpus.display()
        );
        return;
    }
    let mean_kb = imgs.iter().map(Vec::len).sum::<usize>() as f64 / imgs.len() as f64 / 1000.0;
    println!(
        "photos: {} files of 60-140 KB (mean {mean_kb:.0} KB); {} cores; {} s per phase",
        imgs.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.seconds
    );

    // 1. In-process ceiling: the Scan algorithms over all cores.
    let hasher = Hasher::new(HashOptions {
        algorithms: vec![
            Algorithm::Pdq,
            Algorithm::Md5,
            Algorithm::Sha1,
            Algorithm::Sha256,
        ],
        ..HashOptions::default()
    });
    // Large batches: each `hash_batch` ends when its slowest item does, so small batches would
    // understate what the cores can do.
    let idx: Vec<usize> = (0..imgs.len() * 8).map(|i| i % imgs.len()).collect();
    let _ = hasher.hash_batch(&idx, |&i| Ok(imgs[i].clone()));
    let t0 = Instant::now();
    let mut n = 0usize;
    while t0.elapsed() < Duration::from_secs(o.seconds) {
        let r = hasher.hash_batch(&idx, |&i| Ok(imgs[i].clone()));
        assert!(r.iter().all(Result::is_ok), "a corpus photo failed to hash");
        n += r.len();
    }
    let inproc = n as f64 / t0.elapsed().as_secs_f64();
    println!("in-process hash_batch: {inproc:.1} images/s");

    // 2. The server, as a child process.
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("baken")))
        .filter(|p| p.is_file())
        .expect("the baken binary next to the example (build with --bin baken)");
    let dir = std::env::temp_dir().join(format!("baken-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut child = std::process::Command::new(bin)
        .current_dir(&dir)
        .args([
            "--data",
            "data",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .env("BAKEN_MAX_IN_FLIGHT", o.max_in_flight.to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start baken serve");
    let pid = child.id();
    let addr = {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("server ended").expect("stderr");
            if let Some(a) = line.split("serving gRPC on ").nth(1) {
                break a.split(',').next().unwrap_or("").trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        addr
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let imgs = Arc::new(imgs);
        let _ = closed_loop(&ch, &imgs, o.concurrency, 1).await; // warm-up
        let idle_rss = rss_kib(pid);
        let base = closed_loop(&ch, &imgs, o.concurrency, o.seconds).await;
        let rps = base.ok as f64 / base.secs;
        println!(
            "service Scan, {} clients: {rps:.1} req/s = {:.0}% of in-process; p50 {:.1} ms, p99 {:.1} ms; shed {}, errors {}; server RSS {} MiB",
            o.concurrency,
            100.0 * rps / inproc,
            percentile(&base.lat, 0.5),
            percentile(&base.lat, 0.99),
            base.shed,
            base.other,
            rss_kib(pid) / 1024
        );
        let (over, peak) = open_loop(&ch, &imgs, 2.0 * rps, o.seconds, pid).await;
        println!(
            "2x overload (open loop at {:.0} req/s, max_in_flight {}): {} ok ({:.1}/s goodput), {} shed ({:.0}%), {} other errors; server RSS idle {} MiB, peak {} MiB",
            2.0 * rps,
            o.max_in_flight,
            over.ok,
            over.ok as f64 / over.secs,
            over.shed,
            100.0 * over.shed as f64 / (over.ok + over.shed + over.other).max(1) as f64,
            over.other,
            idle_rss / 1024,
            peak / 1024
        );
        let rec = closed_loop(&ch, &imgs, o.concurrency, o.seconds.min(5)).await;
        println!(
            "recovery, {} clients: {:.1} req/s, p99 {:.1} ms, shed {}, errors {}; server RSS {} MiB",
            o.concurrency,
            rec.ok as f64 / rec.secs,
            percentile(&rec.lat, 0.99),
            rec.shed,
            rec.other,
            rss_kib(pid) / 1024
        );
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
