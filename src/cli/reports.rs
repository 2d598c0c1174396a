//! `baken report …`, and the `--report` options of `baken match`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use time::OffsetDateTime;

use baken::engine::{Engine, Outcome, ReportOutcome, StoreSink, Tally};
use baken::reports::export::{self, ExportFormat};
use baken::reports::{
    self, CallerContext, Decision, PublicKey, ReportConfig, ReportStore, Retention, ReviewPolicy,
    Signer, stats,
};
use baken::store::Store;

#[derive(Args)]
pub struct ReportArgs {
    /// Signing key file (PKCS#8 PEM, hex or raw seed). Default: <data>/keys/report-signing.key,
    /// generated with mode 0600 at first use.
    #[arg(long, global = true, env = "BAKEN_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Act as if it were this time (RFC 3339). For tests of retention.
    #[arg(long, global = true, hide = true)]
    now: Option<String>,
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// List reports: id, status, created, retention deadline (no personal data).
    Ls,
    /// Show one report (by id or sequence number), with its body unless purged.
    Show { id: String },
    /// Export one report for sending: the regulation-shaped JSON or NCMEC CyberTipline XML.
    Export {
        id: String,
        #[arg(long, default_value = "csar-json")]
        format: ExportFormat,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Export a report not ready to send (marked as a draft).
        #[arg(long)]
        draft: bool,
    },
    /// Check every signature, the chain, bodies, states and the audit log; names each report
    /// that breaks it. Exit 0 when intact, 1 when not.
    Verify {
        /// Verify with this public key (PEM or hex) instead of the signing key.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Record a human decision: confirm (ready to send) or reject (a false positive: its
    /// personal data is purged at once).
    Review {
        id: String,
        #[arg(long)]
        decision: Decision,
        /// The reviewer's pseudonym (never a name or an email address).
        #[arg(long)]
        reviewer: String,
    },
    /// Transparency figures (Regulation 2021/1232 Art. 3(1)(g)(vii)) for the days FROM..=TO.
    Stats {
        /// First day, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC).
        #[arg(long)]
        to: String,
    },
    /// Purge every report past its retention deadline.
    PurgeExpired,
    /// The access audit: every read, export, review and purge.
    Audit,
    /// Print the public key that verifies reports.
    PublicKey {
        #[arg(long, default_value = "pem", value_parser = ["pem", "hex"])]
        format: String,
        /// Every key of the ledger, oldest first, as JSON lines: key id, hex, PEM, the entry
        /// from which it signs and the rotation entry that retired it (for publishing).
        #[arg(long)]
        all: bool,
    },
    /// Rotate the signing key: a key-rotation entry, signed by the current key and by the new
    /// one, names the new key, which signs every later entry. Run it with the server stopped.
    /// The data directory's key file is replaced by the new key; a key given with
    /// --signing-key stays where it is, and the configuration must then name the new key.
    RotateKey {
        /// The new key (PKCS#8 PEM, hex or raw seed; mode 0600). Default: a fresh key from the
        /// OS random source. Required when the current key comes from --signing-key.
        #[arg(long)]
        new_key: Option<PathBuf>,
        /// Keep the retired private key as <data>/keys/report-signing.<key id>.retired (0600).
        /// Default: it is deleted; verification needs only public keys, which the ledger holds.
        #[arg(long)]
        keep_old_key: bool,
    },
}

/// The options of `baken match --report`.
#[derive(Args, Default)]
pub struct MatchReportArgs {
    /// Create a signed report for every file that matches, and count every file scanned.
    #[arg(long)]
    pub report: bool,
    /// Provider-supplied report fields, JSON (see docs/reports.md). Required with --report.
    #[arg(long, requires = "report")]
    pub context: Option<PathBuf>,
    /// Signing key file (default: <data>/keys/report-signing.key, generated at first use).
    #[arg(long, requires = "report", env = "BAKEN_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// How long reports are kept: e.g. 12m or 90d, at most 12 months from detection.
    #[arg(long, requires = "report")]
    pub retention: Option<Retention>,
    /// Let reports of confirmed material skip human review (default: every report is reviewed).
    #[arg(long, requires = "report")]
    pub no_review_required: bool,
    /// A list of human-verified material whose exact matches may skip review when
    /// --no-review-required is given (repeatable).
    #[arg(long = "confirmed-list", requires = "report")]
    pub confirmed_lists: Vec<String>,
    /// Act as if it were this time (RFC 3339). For tests of retention.
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn clock(now: Option<&str>) -> anyhow::Result<OffsetDateTime> {
    match now {
        Some(s) => Ok(reports::parse_time(s)?),
        None => Ok(OffsetDateTime::now_utc()),
    }
}

/// The signing key: the given file, else the data directory's (generated when `generate`).
fn signer(data: &Path, file: Option<&Path>, generate: bool) -> anyhow::Result<Option<Signer>> {
    if let Some(f) = file {
        return Ok(Some(Signer::load(f)?));
    }
    if generate {
        let (s, created) = Signer::load_or_generate(data)?;
        if created {
            eprintln!(
                "generated the report signing key {} (key id {})",
                Signer::default_path(data).display(),
                s.public().key_id()
            );
        }
        return Ok(Some(s));
    }
    let p = Signer::default_path(data);
    Ok(if p.exists() {
        Some(Signer::load(&p)?)
    } else {
        None
    })
}

pub fn open_reports(
    data: &Path,
    signer: Option<Signer>,
    config: ReportConfig,
) -> anyhow::Result<ReportStore> {
    let store = Arc::new(super::lists::open_store(data)?);
    Ok(ReportStore::new(store, signer, config)?)
}

/// Report setup for `baken match --report` and `baken scan --report`: the store's reports at
/// the run's clock, and the context file's fields.
pub struct MatchReporting {
    pub sink: StoreSink,
    pub context: CallerContext,
}

/// The end of the data path for `match` and `scan`: counts every outcome and, with
/// `--report`, reports matches.
pub struct Concluder<'a> {
    pub engine: &'a Engine,
    pub tally: Tally,
    pub reporting: Option<MatchReporting>,
    pub actor: &'a str,
}

impl Concluder<'_> {
    /// Count one outcome and report a match (the context names the item by
    /// `default_reference` unless it names the content itself). Returns the line fields
    /// `match` and `scan` print for a created report.
    pub fn conclude(
        &self,
        outcome: &Outcome,
        default_reference: impl FnOnce() -> String,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let context = match &self.reporting {
            Some(r) if outcome.is_match() => {
                let mut ctx = r.context.clone();
                if ctx.content_reference.is_none() {
                    ctx.content_reference = Some(default_reference());
                }
                Some(ctx)
            }
            _ => None,
        };
        let sink = self.reporting.as_ref().map(|r| &r.sink);
        let created =
            self.engine
                .conclude(outcome, &self.tally, sink, context.as_ref(), self.actor)?;
        Ok(match created {
            ReportOutcome::Created(c) => Some(serde_json::json!({
                "report_id": c.report_id,
                "status": c.status,
                "retention_deadline": c.retention_deadline,
            })),
            _ => None,
        })
    }

    /// An item that could not be read or decoded.
    pub fn failed(&self) {
        self.tally.failed();
    }

    /// Hand the counts to the report statistics (with `--report`; without, nothing keeps them).
    pub fn flush(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.reporting {
            self.tally.flush(Some(&r.sink))?;
        }
        Ok(())
    }
}

impl MatchReportArgs {
    pub fn setup(&self, data: &Path, store: Arc<Store>) -> anyhow::Result<Option<MatchReporting>> {
        if !self.report {
            return Ok(None);
        }
        let Some(ctx_path) = &self.context else {
            bail!(
                "--report needs --context FILE.json with the provider's fields (provider, legal_basis, recipient; see docs/reports.md)"
            );
        };
        let text = std::fs::read_to_string(ctx_path)
            .with_context(|| format!("reading {}", ctx_path.display()))?;
        let context: CallerContext = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid report context", ctx_path.display()))?;
        let config = ReportConfig {
            review: ReviewPolicy {
                require_review: !self.no_review_required,
                confirmed_lists: self.confirmed_lists.iter().cloned().collect(),
                auto_ready_max_distance: 0,
            },
            retention: self.retention.unwrap_or_default(),
        };
        let signer = signer(data, self.signing_key.as_deref(), true)?;
        Ok(Some(MatchReporting {
            sink: StoreSink {
                store: Arc::new(ReportStore::new(store, signer, config)?),
                now: Some(clock(self.now.as_deref())?),
            },
            context,
        }))
    }
}

pub fn run_report(args: ReportArgs, data: &Path, actor: &str) -> anyhow::Result<ExitCode> {
    let now = clock(args.now.as_deref())?;
    let key_file = args.signing_key.as_deref();
    // Rotation never generates: there must be a current key to rotate from.
    let writes_signed = matches!(
        args.command,
        ReportCommand::Review { .. }
            | ReportCommand::PurgeExpired
            | ReportCommand::PublicKey { .. }
    );
    // Reads that sign nothing open without a key: they work whatever key file lies around
    // (e.g. a data directory whose configured key was rotated elsewhere).
    let needs_key = writes_signed
        || matches!(
            args.command,
            ReportCommand::Export { .. }
                | ReportCommand::RotateKey { .. }
                | ReportCommand::Verify { public_key: None }
        );
    let signer = if needs_key {
        signer(data, key_file, writes_signed)?
    } else {
        None
    };
    let rs = open_reports(data, signer, ReportConfig::default())?;
    match args.command {
        ReportCommand::Ls => {
            for s in rs.list(actor, now)? {
                print_json(&s)?;
            }
        }
        ReportCommand::Show { id } => print_json(&rs.get(&id, actor, now)?)?,
        ReportCommand::Export {
            id,
            format,
            out,
            draft,
        } => {
            // Claim the output file first: an export that cannot be written is not counted.
            let file = out.as_deref().map(create_private).transpose()?;
            let (report, entry) = match rs.get_for_export(&id, format.as_str(), draft, actor, now) {
                Ok(r) => r,
                Err(e) => {
                    if let Some(p) = &out {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e.into());
                }
            };
            let text = match format {
                ExportFormat::CsarJson => {
                    // The key that signed this entry (a rotation may have retired it since).
                    let key = rs.public_key_for(&entry.entry.key_id)?;
                    export::csar_json(&report, &entry, key.as_ref(), draft)?
                }
                ExportFormat::NcmecXml => export::ncmec_xml(&report)?,
            };
            match (out, file) {
                (Some(p), Some(mut f)) => {
                    f.write_all(text.as_bytes())?;
                    f.write_all(b"\n")?;
                    f.sync_all()?;
                    eprintln!(
                        "exported report {} to {}",
                        report.state.report_id,
                        p.display()
                    );
                }
                _ => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(text.as_bytes())?;
                    writeln!(o)?;
                }
            }
        }
        ReportCommand::Verify { public_key } => {
            let key = match public_key {
                Some(p) => PublicKey::parse(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )?,
                None => match rs.public_key() {
                    Some(k) => k,
                    None => bail!(
                        "no signing key in {} and no --public-key: nothing to verify against",
                        data.display()
                    ),
                },
            };
            let outcome = rs.verify(&key, actor, now)?;
            print_json(&outcome)?;
            if !outcome.ok {
                for p in &outcome.problems {
                    eprintln!("BROKEN: {}", p.message);
                }
                return Ok(ExitCode::from(1));
            }
        }
        ReportCommand::Review {
            id,
            decision,
            reviewer,
        } => print_json(&rs.review(&id, decision, &reviewer, actor, now)?)?,
        ReportCommand::Stats { from, to } => {
            let s = stats::compute(&rs, &from, &to)?;
            rs.audit_stats(&from, &to, actor, now)?;
            print_json(&s)?;
        }
        ReportCommand::PurgeExpired => print_json(&rs.purge_expired(now, actor)?)?,
        ReportCommand::Audit => {
            for a in rs.audit_log()? {
                print_json(&a)?;
            }
        }
        ReportCommand::PublicKey { format, all } => {
            let Some(k) = rs.public_key() else {
                bail!("no signing key");
            };
            if all {
                // The verified chain of keys (no audit record: this reads public data only).
                let v = rs.verify_read_only(&k)?;
                for e in &v.keys {
                    let pk = PublicKey::parse(&e.public_key)?;
                    print_json(&serde_json::json!({
                        "key_id": e.key_id,
                        "status": if e.retired_at_seq.is_some() { "retired" } else { "active" },
                        "active_from_seq": e.active_from_seq,
                        "retired_at_seq": e.retired_at_seq,
                        "public_key_hex": e.public_key,
                        "public_key_pem": pk.to_pem(),
                    }))?;
                }
                if !v.ok {
                    eprintln!(
                        "warning: the ledger does not verify ({} problems): run `baken report verify`",
                        v.problems.len()
                    );
                    return Ok(ExitCode::from(1));
                }
            } else if format == "hex" {
                println!("{}", k.to_hex());
            } else {
                print!("{}", k.to_pem());
            }
        }
        ReportCommand::RotateKey {
            new_key,
            keep_old_key,
        } => {
            if rs.public_key().is_none() {
                bail!(
                    "no signing key in {} to rotate from (the first key is generated at first use, or given with --signing-key)",
                    data.display()
                );
            }
            let new = match (&new_key, key_file) {
                (Some(p), _) => Signer::load(p)?,
                (None, None) => Signer::generate()?,
                (None, Some(current)) => bail!(
                    "the current key comes from {}: keys supplied from outside are yours to keep, so Baken does not write one. \
                     Make the new key (e.g. `openssl genpkey -algorithm ed25519 -out new.pem; chmod 600 new.pem`), \
                     pass it with --new-key, then point --signing-key / BAKEN_SIGNING_KEY / [reports] signing_key at it",
                    current.display()
                ),
            };
            match (key_file, &new_key) {
                (Some(current), Some(new_path)) => {
                    let r = rs.rotate_key(new, actor, now)?;
                    print_json(&r)?;
                    eprintln!(
                        "rotated: key {} retired, key {} signs from ledger entry {}. Point --signing-key / BAKEN_SIGNING_KEY / [reports] signing_key at {} now: {} is retired, and a server started with it refuses to start.",
                        r.old_key_id,
                        r.new_key_id,
                        r.seq + 1,
                        new_path.display(),
                        current.display()
                    );
                }
                _ => {
                    let r = rs.rotate_data_dir_key(new, keep_old_key, actor, now)?;
                    print_json(&r)?;
                    eprintln!(
                        "rotated: key {} retired, key {} (in {}) signs from ledger entry {}. Publish the new key: `baken report public-key --all`.",
                        r.rotation.old_key_id,
                        r.rotation.new_key_id,
                        r.key_file.display(),
                        r.rotation.seq + 1
                    );
                    if let Some(p) = &r.retired_key_file {
                        eprintln!("the retired private key is kept in {}", p.display());
                    }
                    if let Some(p) = &new_key {
                        eprintln!(
                            "the new key was copied into the data directory; {} is no longer needed",
                            p.display()
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exports hold personal data: written 0600, never over an existing file.
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}
