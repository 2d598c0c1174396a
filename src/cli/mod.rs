//! The `baken` command line. Exit codes: 0 success, 1 some input failed, 2 usage error.

pub mod backup;
mod demo;
pub mod lists;
pub mod reports;
pub mod scan;
pub mod serve;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use baken::decode::DecodeLimits;
use baken::decode::video::VideoLimits;
use baken::error::ErrorReport;
use baken::hashing::{self, HashOptions, HashOutput, Hasher, PdqMode};

#[derive(Parser)]
#[command(
    name = "baken",
    version,
    about = "Known-image hash matching and reporting"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Data directory (RocksDB store).
    #[arg(
        long,
        global = true,
        default_value = "./baken-data",
        env = "BAKEN_DATA"
    )]
    data: PathBuf,
    /// Who is acting, recorded in the audit log (default: $USER).
    #[arg(long, global = true, env = "BAKEN_ACTOR")]
    actor: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hash image files; prints one JSON object per file, in argument order.
    Hash(HashArgs),
    /// Manage hash lists: create, ls, show, import, export, remove, stats, audit.
    #[command(subcommand)]
    List(lists::ListCommand),
    /// Hash files and match them against the lists; one JSON object per file.
    /// Exit 0: no match, 1: a match, 2: an error.
    Match(lists::MatchArgs),
    /// Reports: ls, show, export, verify, review, stats, purge-expired, audit, public-key.
    Report(reports::ReportArgs),
    /// Scan directories, file lists (`@list.txt`, `-`) and tar archives against the lists:
    /// one JSON line per match, a summary, progress on stderr, resumable (`--resume`).
    /// Exit 0: no match, 1: matches, 2: errors, 130: interrupted.
    Scan(scan::ScanArgs),
    /// Back up a stopped data directory (`--to DIR`: a RocksDB checkpoint, the keys and a
    /// manifest), or check a backup (`verify DIR`). Restore by pointing --data at the backup.
    Backup(backup::BackupArgs),
    /// Run the gRPC service (see docs/cli.md: API, configuration, roles, TLS).
    Serve(serve::ServeArgs),
    /// Bearer tokens for the service: `token new --name N --role scanner`, `token hash`.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Try it out: generate benign demo images, put the PNGs in a list `demo` in the data
    /// directory, and match all of them (the JPEG copies match by PDQ).
    Demo {
        /// Where to write the images.
        #[arg(long, default_value = "baken-demo")]
        images: PathBuf,
    },
    /// Write a few generated, benign demo images (PNG and JPEG) into a directory.
    DemoImages {
        /// Directory to create.
        #[arg(default_value = "baken-demo")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct HashArgs {
    /// Comma-separated: pdq,phash,dhash,ahash,blockhash,md5,sha1,sha256,vpdq or all. Image
    /// hashes apply to images, vpdq to videos (and animated GIFs); vpdq brings the file's md5.
    #[arg(long, default_value = "pdq,vpdq,md5,sha1,sha256", value_parser = parse_algo_list)]
    algo: AlgoList,
    /// PDQ pipeline: full (no pre-resize; pdqhash/HMA) or ref512 (Meta's C++ tool).
    #[arg(long, default_value = "full")]
    pdq_mode: PdqMode,
    /// JPEG fast mode: decode with DCT scaling (shorter side ≥ 256 px). Not bit-exact.
    #[arg(long)]
    fast: bool,
    /// Alpha: white (composite onto white, default) or ignore (keep stored colour, as HMA does).
    #[arg(long, default_value = "white")]
    alpha: baken::decode::Alpha,
    /// Hash-size side for pHash/dHash/aHash/blockhash (bits = side²).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=64))]
    imghash_size: u32,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    video: VideoArgs,
    /// Also hash derived views of each image, comma-separated: `border` (a uniform border
    /// removed), `frame` (a frame of flat UI regions removed), `deskew` (a small rotation
    /// undone); printed under `candidates` with their region.
    #[arg(long, value_delimiter = ',', value_enum)]
    candidates: Vec<lists::CandidateKind>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Image and video files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// A parsed `--algo` list (clap needs one value type per argument).
#[derive(Clone)]
struct AlgoList(Vec<hashing::Algorithm>);

fn parse_algo_list(s: &str) -> Result<AlgoList, String> {
    hashing::parse_algorithms(s).map(AlgoList)
}

#[derive(Args, Clone, Copy)]
struct LimitArgs {
    /// Largest input file, bytes.
    #[arg(long, default_value_t = DecodeLimits::default().max_input_bytes)]
    max_bytes: u64,
    /// Largest width × height.
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// Largest width or height.
    #[arg(long, default_value_t = DecodeLimits::default().max_dimension)]
    max_dimension: u32,
    /// Largest decoder memory, bytes.
    #[arg(long, default_value_t = DecodeLimits::default().max_alloc)]
    max_alloc: u64,
}

/// Video sampling and limits.
#[derive(Args, Clone, Copy)]
struct VideoArgs {
    /// vPDQ: hash one frame every this many seconds (0 = every frame, as Meta's C++ CLI).
    #[arg(long, default_value_t = hashing::vpdq::DEFAULT_SECONDS_PER_HASH,
          value_parser = parse_seconds)]
    seconds_per_hash: f64,
    /// Largest video file, bytes (held in memory while hashed).
    #[arg(long, default_value_t = VideoLimits::default().max_input_bytes)]
    max_video_bytes: u64,
    /// Longest video, seconds.
    #[arg(long, default_value_t = VideoLimits::default().max_duration_seconds, value_parser = parse_seconds)]
    max_video_seconds: f64,
    /// Most frames decoded from one video.
    #[arg(long, default_value_t = VideoLimits::default().max_frames)]
    max_video_frames: u64,
    /// Longest wall time to decode one video, seconds.
    #[arg(long, default_value_t = VideoLimits::default().max_decode_seconds, value_parser = parse_seconds)]
    max_decode_seconds: f64,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a number of seconds ≥ 0"))
}

impl VideoArgs {
    fn limits(&self, image: &DecodeLimits) -> VideoLimits {
        VideoLimits {
            max_input_bytes: self.max_video_bytes,
            max_duration_seconds: self.max_video_seconds,
            max_frames: self.max_video_frames,
            max_decode_seconds: self.max_decode_seconds,
            // One memory budget for both media.
            max_memory: image.max_alloc.max(VideoLimits::default().max_memory),
            ..VideoLimits::default()
        }
    }
}

impl From<LimitArgs> for DecodeLimits {
    fn from(a: LimitArgs) -> Self {
        DecodeLimits {
            max_input_bytes: a.max_bytes,
            max_pixels: a.max_pixels,
            max_dimension: a.max_dimension,
            max_alloc: a.max_alloc,
        }
    }
}

#[derive(Serialize)]
struct FileLine<'a> {
    file: &'a str,
    #[serde(flatten)]
    out: &'a HashOutput,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    error: ErrorReport,
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BAKEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour codes only for a person at a terminal, not in files and log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let actor = cli
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into());
    match cli.command {
        Command::Hash(args) => hash(args),
        Command::List(cmd) => lists::run_list(cmd, &cli.data, &actor),
        Command::Match(args) => lists::run_match(args, &cli.data, &actor),
        Command::Report(args) => reports::run_report(args, &cli.data, &actor),
        Command::Scan(args) => scan::run_scan(args, &cli.data, &actor),
        Command::Backup(args) => backup::run_backup(args, &cli.data),
        Command::Serve(args) => serve::run_serve(args, &cli.data, &actor),
        Command::Token(cmd) => serve::run_token(cmd),
        Command::Demo { images } => demo::run_demo(&cli.data, &images, &actor),
        Command::DemoImages { dir } => {
            let files = demo::write_demo_images(&dir)?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn hash(args: HashArgs) -> anyhow::Result<ExitCode> {
    let limits: DecodeLimits = args.limits.into();
    let opts = HashOptions {
        algorithms: args.algo.0,
        pdq_mode: args.pdq_mode,
        fast_min_side: args.fast.then_some(hashing::FAST_MIN_SIDE),
        video: args.video.limits(&limits),
        seconds_per_hash: args.video.seconds_per_hash,
        candidates: lists::CandidateKind::options(&args.candidates),
        limits,
        alpha: args.alpha,
        imghash: hashing::imghash::ImgHashConfig {
            phash_size: args.imghash_size,
            dhash_size: args.imghash_size,
            ahash_size: args.imghash_size,
            blockhash_size: args.imghash_size,
        },
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let hasher = Hasher::new(opts);
    let limit = hasher.options().max_read_bytes();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    // Chunks keep output streaming and memory bounded while rayon keeps every core busy.
    let chunk = pool.current_num_threads().max(1) * 4;
    for files in args.files.chunks(chunk) {
        let results = pool
            .install(|| hasher.hash_batch(files, |p: &PathBuf| hashing::read_limited(p, limit)));
        for (path, res) in files.iter().zip(results) {
            let name = path.to_string_lossy();
            let line = match &res {
                Ok(o) => serde_json::to_string(&FileLine {
                    file: &name,
                    out: o,
                })?,
                Err(e) => {
                    failed += 1;
                    tracing::debug!(kind = e.kind(), "input failed");
                    serde_json::to_string(&ErrorLine {
                        file: &name,
                        error: e.into(),
                    })?
                }
            };
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
