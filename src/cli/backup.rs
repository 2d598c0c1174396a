//! `baken backup --to DIR` (a stopped data directory) and `baken backup verify DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use baken::backup;
use baken::reports::PublicKey;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// Where to write the backup: a new directory, or an empty one (not inside the data
    /// directory). For a running server use the AdminService.Backup RPC instead.
    #[arg(long)]
    to: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<BackupCommand>,
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Check a backup: open it read-only, compare its lists and report ledger with its
    /// manifest, verify every report signature. Exit 0 when intact, 1 when not.
    Verify {
        /// The backup directory.
        dir: PathBuf,
        /// Verify the report ledger with this public key (PEM or hex), e.g. the published one,
        /// instead of the backup's own signing key.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

pub fn run_backup(args: BackupArgs, data: &Path) -> anyhow::Result<ExitCode> {
    match (args.command, args.to) {
        (Some(BackupCommand::Verify { dir, public_key }), _) => {
            let key = public_key
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))
                        .and_then(|t| Ok(PublicKey::parse(&t)?))
                })
                .transpose()?;
            let check = backup::verify(&dir, key.as_ref())?;
            println!("{}", serde_json::to_string(&check)?);
            if !check.ok {
                for p in &check.problems {
                    eprintln!("BROKEN: {p}");
                }
                for p in &check.reports.problems {
                    eprintln!("BROKEN: {}", p.message);
                }
                return Ok(ExitCode::from(1));
            }
            eprintln!(
                "backup {} is intact: {} lists, report ledger at entry {}",
                dir.display(),
                check.manifest.lists.len(),
                check.manifest.ledger.head_seq
            );
        }
        (None, Some(to)) => {
            if !data.is_dir() {
                bail!("no data directory {}", data.display());
            }
            let store = baken::store::Store::open(data).with_context(|| {
                format!(
                    "opening {} (a running server holds it: back it up with the AdminService.Backup RPC)",
                    data.display()
                )
            })?;
            let manifest = backup::create(&store, &to, "offline")?;
            println!("{}", serde_json::to_string(&manifest)?);
            eprintln!(
                "backed up {} to {} ({} lists, report ledger at entry {}; not copied: index/ and scan-checkpoints/)",
                data.display(),
                to.display(),
                manifest.lists.len(),
                manifest.ledger.head_seq
            );
        }
        (None, None) => bail!("say where: `baken backup --to DIR`, or `baken backup verify DIR`"),
    }
    Ok(ExitCode::SUCCESS)
}
