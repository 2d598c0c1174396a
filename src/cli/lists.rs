//! `baken list …` and `baken match`.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use baken::decode::DecodeLimits;
use baken::engine::{Engine, Tally};
use baken::hashing::{self, PdqMode};
use baken::index::{IndexKind, MatchConfig, Matcher};
use baken::store::export::{self, ExportFormat};
use baken::store::import::{self, Format};
use baken::store::{HashType, NewList, Store, StoreOptions};

#[derive(Subcommand)]
pub enum ListCommand {
    /// Print the list-signing public key of this data directory (a replication writer's),
    /// generating the key on first use. Replicas are configured with it
    /// (`[replication] list_public_key`).
    PublicKey {
        /// The writer's configured key file (`[replication] list_signing_key`), if not the
        /// default `<data>/keys/list-signing.key`.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
    },
    /// Create a list.
    Create {
        name: String,
        /// Who curates it (NCMEC, ThreatExchange, StopNCII, Project VIC, own, …).
        #[arg(long, default_value = "own")]
        source: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Classification scheme, e.g. ncmec (A1/A2/B1/B2), vics, uk.
        #[arg(long)]
        scheme: Option<String>,
        /// Known false positives: matches here suppress matches of the same query elsewhere.
        #[arg(long)]
        negative: bool,
        /// Stricter threshold for a type, e.g. `--threshold pdq=20` (repeatable).
        #[arg(long = "threshold", value_parser = parse_threshold)]
        thresholds: Vec<(HashType, u32)>,
        /// vPDQ: percent of a query video's usable frames that must match a listed video.
        #[arg(long, default_value_t = baken::hashing::vpdq::QUERY_MATCH_PERCENT)]
        vpdq_query_percent: f64,
        /// vPDQ: percent of the listed video's frames that must match a query frame.
        #[arg(long, default_value_t = baken::hashing::vpdq::COMPARED_MATCH_PERCENT)]
        vpdq_compared_percent: f64,
    },
    /// List the lists.
    Ls,
    /// Show one list's settings and counts.
    Show { name: String },
    /// Import a file (or `-` for stdin) into a list as one new version.
    Import {
        name: String,
        #[arg(long)]
        format: Format,
        /// The entry's external id for a one-entry format (vpdq: one video per file);
        /// default the file name.
        #[arg(long)]
        entry_id: Option<String>,
        file: PathBuf,
    },
    /// Export a list's current entries.
    Export {
        name: String,
        #[arg(long, default_value = "csv")]
        format: ExportFormat,
        /// Include tombstones.
        #[arg(long)]
        include_deleted: bool,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove entries (kept as tombstones with the time and reason).
    Remove {
        name: String,
        /// `TYPE:VALUE`, e.g. `md5:0123…` (repeatable).
        #[arg(long = "hash", value_parser = parse_typed_hash)]
        hashes: Vec<(HashType, Vec<u8>)>,
        /// Remove every entry with this external id (repeatable).
        #[arg(long = "external-id")]
        external_ids: Vec<String>,
        #[arg(long, default_value = "removed by operator")]
        reason: String,
    },
    /// Counts per list (or one list).
    Stats { name: Option<String> },
    /// The audit log of list changes.
    Audit,
}

#[derive(Args)]
pub struct MatchArgs {
    /// Match only these lists (repeatable; negative lists always apply).
    #[arg(long = "list")]
    lists: Vec<String>,
    #[command(flatten)]
    matching: MatchingArgs,
    #[command(flatten)]
    report: super::reports::MatchReportArgs,
    files: Vec<PathBuf>,
}

/// How files are hashed and matched: shared by `match` and `scan`.
#[derive(Args)]
pub struct MatchingArgs {
    #[arg(long, default_value = "full")]
    pub pdq_mode: PdqMode,
    /// PDQ hashes under this quality are not matched.
    #[arg(long, default_value_t = 50)]
    pub quality_floor: u8,
    /// Default threshold for a type, e.g. `--threshold pdq=25` (repeatable).
    #[arg(long = "threshold", value_parser = parse_threshold)]
    pub thresholds: Vec<(HashType, u32)>,
    /// Search structure for Hamming types: auto, scan (least memory) or mih (fastest).
    #[arg(long, default_value = "auto")]
    pub index: IndexKind,
    /// Derived views of each image to match besides the image, comma-separated: `border`
    /// (the image inside a uniform border of any colour — letterbox, pillarbox, padding).
    /// Default: none.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub candidates: Vec<CandidateKind>,
    /// Derived views match within the smaller of this and the list's PDQ threshold.
    #[arg(long, default_value_t = baken::index::DEFAULT_CANDIDATE_THRESHOLD)]
    pub candidate_threshold: u32,
    /// Derived views under this PDQ quality are not matched.
    #[arg(long, default_value_t = baken::index::DEFAULT_CANDIDATE_QUALITY_FLOOR)]
    pub candidate_quality_floor: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CandidateKind {
    /// The picture inside a uniform border of any colour (letterbox, pillarbox, padding).
    Border,
    /// The picture rotated back, when it sits rotated in its canvas (fill-coloured corners).
    Deskew,
    /// The picture inside a frame of flat regions (a screenshot's UI, a caption band).
    Frame,
}

impl CandidateKind {
    /// The library's options for the kinds a command line names.
    pub fn options(kinds: &[CandidateKind]) -> baken::hashing::candidates::CandidateOptions {
        baken::hashing::candidates::CandidateOptions {
            border: kinds.contains(&CandidateKind::Border),
            deskew: kinds.contains(&CandidateKind::Deskew),
            frame: kinds.contains(&CandidateKind::Frame),
            ..Default::default()
        }
    }
}

impl Default for MatchingArgs {
    fn default() -> Self {
        MatchingArgs {
            pdq_mode: PdqMode::Full,
            quality_floor: 50,
            thresholds: Vec::new(),
            index: IndexKind::Auto,
            candidates: Vec::new(),
            candidate_threshold: baken::index::DEFAULT_CANDIDATE_THRESHOLD,
            candidate_quality_floor: baken::index::DEFAULT_CANDIDATE_QUALITY_FLOOR,
        }
    }
}

impl MatchingArgs {
    pub fn config(&self) -> MatchConfig {
        MatchConfig {
            thresholds: self.thresholds.iter().cloned().collect(),
            pdq_quality_floor: self.quality_floor,
            index: self.index,
            candidate_threshold: self.candidate_threshold,
            candidate_quality_floor: self.candidate_quality_floor,
            ..MatchConfig::default()
        }
    }

    pub fn candidate_options(&self) -> baken::hashing::candidates::CandidateOptions {
        CandidateKind::options(&self.candidates)
    }
}

impl MatchArgs {
    /// Defaults, for these files.
    pub fn for_files(files: Vec<PathBuf>) -> Self {
        MatchArgs {
            lists: Vec::new(),
            matching: MatchingArgs::default(),
            report: Default::default(),
            files,
        }
    }
}

fn parse_threshold(s: &str) -> Result<(HashType, u32), String> {
    let (t, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TYPE=N, got {s:?}"))?;
    let ty = HashType::new(t).map_err(|e| e.to_string())?;
    let n = v
        .parse()
        .map_err(|_| format!("threshold {v:?} is not a number"))?;
    Ok((ty, n))
}

fn parse_typed_hash(s: &str) -> Result<(HashType, Vec<u8>), String> {
    let (t, v) = s
        .split_once(':')
        .ok_or_else(|| format!("expected TYPE:VALUE, got {s:?}"))?;
    let ty = HashType::new(t).map_err(|e| e.to_string())?;
    let bytes = ty.parse_value(v).map_err(|e| e.to_string())?;
    Ok((ty, bytes))
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn open_store(data: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let mut opts = StoreOptions::default();
    if let Ok(mb) = std::env::var("BAKEN_WRITE_BUFFER_MB") {
        let mb: usize = mb
            .parse()
            .with_context(|| format!("BAKEN_WRITE_BUFFER_MB={mb:?} is not a number of MiB"))?;
        opts.write_buffer_bytes = Some(mb << 20);
    }
    Store::open_with(data, &opts)
        .with_context(|| format!("opening the store in {}", data.display()))
}

pub fn run_list(cmd: ListCommand, data: &Path, actor: &str) -> anyhow::Result<ExitCode> {
    // Needs no store (a running writer holds its lock).
    if let ListCommand::PublicKey { key } = &cmd {
        let signer = baken::replication::load_or_generate_key(data, key.as_deref())?;
        print!("{}", signer.public().to_pem());
        eprintln!("key id {}", signer.public().key_id());
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(data)?;
    match cmd {
        ListCommand::PublicKey { .. } => {}
        ListCommand::Create {
            name,
            source,
            description,
            scheme,
            negative,
            thresholds,
            vpdq_query_percent,
            vpdq_compared_percent,
        } => {
            let meta = store.create_list(
                NewList {
                    name,
                    source,
                    description,
                    classification_scheme: scheme,
                    negative,
                    thresholds: thresholds.into_iter().collect::<BTreeMap<_, _>>(),
                    video: baken::store::VideoRule {
                        query_match_percent: vpdq_query_percent,
                        compared_match_percent: vpdq_compared_percent,
                    },
                },
                actor,
            )?;
            print_json(&meta)?;
        }
        ListCommand::Ls => {
            for m in store.lists()? {
                print_json(&m)?;
            }
        }
        ListCommand::Show { name } => print_json(&store.list(&name)?)?,
        ListCommand::Import {
            name,
            format,
            entry_id,
            file,
        } => {
            let source = file.display().to_string();
            let entry_id = entry_id.as_deref();
            let result = if file.as_os_str() == "-" {
                import::import_as(
                    &store,
                    &name,
                    format,
                    std::io::stdin().lock(),
                    "stdin",
                    entry_id,
                    actor,
                )
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?;
                import::import_as(
                    &store,
                    &name,
                    format,
                    BufReader::with_capacity(1 << 20, f),
                    &source,
                    entry_id,
                    actor,
                )
            };
            let (report, _) = result?;
            print_json(&report)?;
            if report.counts.errors > 0 {
                eprintln!(
                    "{} record(s) could not be imported; see `errors` (first {} shown)",
                    report.counts.errors,
                    report.errors.len()
                );
                return Ok(ExitCode::from(1));
            }
        }
        ListCommand::Export {
            name,
            format,
            include_deleted,
            out,
        } => {
            let meta = store.list(&name)?;
            let n = match out {
                Some(p) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(&p)
                            .with_context(|| format!("creating {}", p.display()))?,
                    );
                    let n = export::export(&store, &meta, format, include_deleted, &mut f)?;
                    f.flush()?;
                    n
                }
                None => {
                    let mut o = std::io::BufWriter::new(std::io::stdout().lock());
                    let n = export::export(&store, &meta, format, include_deleted, &mut o)?;
                    o.flush()?;
                    n
                }
            };
            eprintln!(
                "exported {n} entries of {} at version {}",
                meta.name, meta.version
            );
        }
        ListCommand::Remove {
            name,
            hashes,
            external_ids,
            reason,
        } => {
            if hashes.is_empty() && external_ids.is_empty() {
                bail!("give at least one --hash TYPE:VALUE or --external-id ID");
            }
            let mut change = store.begin(&name, actor, "list.remove")?;
            for (ty, h) in &hashes {
                change.tombstone(ty, h, &reason)?;
            }
            for id in &external_ids {
                change.tombstone_external(id, &reason)?;
            }
            let (meta, audit) = change.commit(Some(reason))?;
            print_json(&serde_json::json!({
                "list": meta.name,
                "version_from": audit.version_from,
                "version_to": audit.version_to,
                "counts": audit.counts,
            }))?;
        }
        ListCommand::Stats { name } => {
            let metas = match name {
                Some(n) => vec![store.list(&n)?],
                None => store.lists()?,
            };
            for m in metas {
                let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
                let mut tombstones = 0u64;
                store.scan_list_raw(&m, |prefix, deleted, _| {
                    if deleted {
                        tombstones += 1;
                    } else if let Some((_, ty, _)) = baken::store::parse_entry_prefix(prefix) {
                        *by_type.entry(ty.to_string()).or_default() += 1;
                    }
                    Ok(())
                })?;
                print_json(&serde_json::json!({
                    "list": m.name,
                    "version": m.version,
                    "negative": m.negative,
                    "live_entries": by_type.values().sum::<u64>(),
                    "by_type": by_type,
                    "tombstones": tombstones,
                    "updated": m.updated,
                }))?;
            }
        }
        ListCommand::Audit => {
            for a in store.audit()? {
                print_json(&a)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct MatchLine<'a> {
    file: &'a str,
    #[serde(flatten)]
    result: &'a baken::index::MatchResult,
    /// The report created for this file (`--report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<serde_json::Value>,
}

/// Exit codes: 0 no match, 1 at least one match, 2 errors (a file could not be read or decoded).
pub fn run_match(args: MatchArgs, data: &Path, actor: &str) -> anyhow::Result<ExitCode> {
    if args.files.is_empty() {
        bail!("give at least one file");
    }
    let store = Arc::new(open_store(data)?);
    for l in &args.lists {
        store.list(l)?;
    }
    let config = args.matching.config();
    let reporting = args.report.setup(data, store.clone())?;
    if reporting
        .as_ref()
        .is_some_and(|r| r.context.content_reference.is_some())
        && args.files.len() > 1
    {
        bail!(
            "the context's content_reference names one file: give one file per run, or leave it out to use each file's path"
        );
    }
    let engine = Engine::new(
        Arc::new(Matcher::open(store, config)?),
        DecodeLimits::default(),
    )
    .with_candidates(args.matching.candidate_options());
    let hasher = engine.match_hasher(args.matching.pdq_mode)?;
    let end = super::reports::Concluder {
        engine: &engine,
        tally: Tally::default(),
        reporting,
        actor,
    };
    let limit = hasher.options().max_read_bytes();
    let (mut any_match, mut any_error) = (false, false);
    let results = hasher.hash_batch(&args.files, |p: &PathBuf| hashing::read_limited(p, limit));
    for (path, res) in args.files.iter().zip(results) {
        let name = path.to_string_lossy();
        match res {
            Ok(out) => {
                let o = engine.match_output(out, &args.lists)?;
                any_match |= o.is_match();
                let report = end.conclude(&o, || {
                    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                    format!("file:{}", abs.display())
                })?;
                print_json(&MatchLine {
                    file: &name,
                    result: &o.result,
                    report,
                })?;
            }
            Err(e) => {
                end.failed();
                any_error = true;
                print_json(&serde_json::json!({
                    "file": name,
                    "error": baken::error::ErrorReport::from(&e),
                }))?;
            }
        }
    }
    end.flush()?;
    Ok(ExitCode::from(if any_error {
        2
    } else if any_match {
        1
    } else {
        0
    }))
}
