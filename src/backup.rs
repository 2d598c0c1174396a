//! Backups of a data directory, and their check.
//!
//! RocksDB's files cannot be copied while a process has the database open (a copy would mix
//! table files of different moments). A backup is therefore made through the open database: a
//! RocksDB checkpoint ([`Store::checkpoint`]: memtables flushed, table files hard-linked where
//! the destination shares the filesystem), plus the data directory's `keys/`, plus a manifest
//! ([`MANIFEST`]) that records what the copy holds (list versions, the report ledger's head),
//! computed from the copy itself. `baken backup` makes one of a stopped data directory,
//! `AdminService.Backup` of a running server's; both call [`create`].
//!
//! A backup is a complete data directory: restoring is pointing `--data` at it (or copying it
//! into place). [`verify`] opens it read-only and checks it against its manifest and the
//! report ledger's signatures before anyone relies on it.
//!
//! Not in a backup: `index/` (matching-index snapshots, rebuilt from the lists at start) and
//! `scan-checkpoints/` (progress of `baken scan` jobs, tied to output files outside the data
//! directory; a restored directory starts those jobs afresh).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::datadir::{DataDir, sync_dir};
use crate::reports::sign::{PublicKey, Signer};
use crate::reports::store::ReportStore;
use crate::reports::{ReportConfig, ReportError, VerifyOutcome};
use crate::store::{Store, StoreError};

/// The manifest's file name, at the top of a backup.
pub const MANIFEST: &str = "baken-backup.json";
/// The manifest's format identifier.
pub const FORMAT: &str = "baken.backup/v1";

/// What a backup leaves out, and why (recorded in every manifest).
pub const SKIPPED: [&str; 2] = [
    "index/: matching-index snapshots, rebuilt from the lists at start",
    "scan-checkpoints/: progress of baken scan jobs, tied to output files outside the data directory; restored jobs start afresh",
];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup destination {path}: {message}")]
    Destination { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{path} is not a Baken backup: {message}")]
    NotABackup { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, BackupError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn dest_err(path: &Path, message: impl Into<String>) -> BackupError {
    BackupError::Destination {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// One list as the backup holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListVersion {
    pub name: String,
    pub version: u64,
    pub live_entries: u64,
    pub tombstones: u64,
}

/// The report ledger as the backup holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHead {
    pub head_seq: u64,
    /// SHA-256 (hex) of the last entry: compare with a published head digest.
    pub head_digest: String,
    /// The key that signs the next entry (`None` for an empty ledger).
    pub active_key_id: Option<String>,
}

/// `baken-backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub created_at: String,
    pub baken_version: String,
    /// `offline` (`baken backup`) or `online` (`AdminService.Backup`).
    pub mode: String,
    pub lists: Vec<ListVersion>,
    pub ledger: LedgerHead,
    /// Files of `keys/` copied (names only).
    pub keys: Vec<String>,
    pub skipped: Vec<String>,
}

/// Back up the open `store` into `dest`: a checkpoint, `keys/` and the manifest, assembled in a
/// hidden sibling directory and renamed into place at the end, so `dest` never holds half a
/// backup. `dest` must not exist or be an empty directory, must not lie inside the data
/// directory, and its parent must exist. The backup directory is made 0700: it holds report
/// bodies (personal data) and the signing key.
pub fn create(store: &Store, dest: &Path, mode: &str) -> Result<Manifest> {
    let dest = std::path::absolute(dest).map_err(io(dest))?;
    let name = dest
        .file_name()
        .ok_or_else(|| dest_err(&dest, "names no directory"))?
        .to_os_string();
    let parent = dest
        .parent()
        .ok_or_else(|| dest_err(&dest, "has no parent directory"))?;
    let parent = parent
        .canonicalize()
        .map_err(|e| dest_err(&dest, format!("its parent directory: {e}")))?;
    let data = store.dir().canonicalize().map_err(io(store.dir()))?;
    if parent.starts_with(&data) {
        return Err(dest_err(&dest, "lies inside the data directory"));
    }
    let dest = parent.join(&name);
    match std::fs::read_dir(&dest) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(dest_err(&dest, "exists and is not empty"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(dest_err(&dest, "exists and is not a directory"));
        }
        Err(e) => return Err(dest_err(&dest, e.to_string())),
    }
    // Unique per process and call: two backups running at once never share a staging
    // directory (the second rename then fails on the non-empty destination).
    static STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(&name);
    staging_name.push(format!(
        ".partial-{}-{}",
        std::process::id(),
        STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let staging = parent.join(staging_name);
    let built = assemble(store, &staging, mode);
    let manifest = match built {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // A directory renames over an empty one; an existing non-empty one was refused above.
    if let Err(e) = std::fs::rename(&staging, &dest) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(dest_err(&dest, e.to_string()));
    }
    sync_dir(&parent);
    tracing::info!(
        dest = %dest.display(),
        mode,
        lists = manifest.lists.len(),
        ledger_head = manifest.ledger.head_seq,
        "backup written"
    );
    Ok(manifest)
}

fn assemble(store: &Store, staging: &Path, mode: &str) -> Result<Manifest> {
    use std::os::unix::fs::PermissionsExt;
    store.checkpoint(staging)?;
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))
        .map_err(io(staging))?;
    let (from, to) = (DataDir::new(store.dir()), DataDir::new(staging));
    let keys = copy_keys(&from.keys(), &to.keys())?;
    // The manifest describes the copy, read back from it: on a running server, writes go on
    // between the checkpoint and any read of the live database.
    let (lists, ledger) = {
        let copy = Arc::new(Store::open_read_only(staging)?);
        describe(&copy)?
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: crate::store::now_rfc3339(),
        baken_version: env!("CARGO_PKG_VERSION").into(),
        mode: mode.into(),
        lists,
        ledger,
        keys,
        skipped: SKIPPED.iter().map(|s| s.to_string()).collect(),
    };
    let path = staging.join(MANIFEST);
    let mut text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| dest_err(staging, format!("manifest: {e}")))?;
    text.push(b'\n');
    write_synced(&path, &text, 0o600)?;
    sync_dir(staging);
    Ok(manifest)
}

fn describe(store: &Arc<Store>) -> Result<(Vec<ListVersion>, LedgerHead)> {
    let lists = store
        .lists()?
        .into_iter()
        .map(|l| ListVersion {
            name: l.name,
            version: l.version,
            live_entries: l.live_entries,
            tombstones: l.tombstones,
        })
        .collect();
    let rs = ReportStore::new(store.clone(), None, ReportConfig::default())?;
    let (head_seq, head_digest) = rs.ledger_head()?;
    Ok((
        lists,
        LedgerHead {
            head_seq,
            head_digest,
            active_key_id: rs.active_key_id()?,
        },
    ))
}

/// Copy the regular files of `keys/` (never a half-written `.tmp`), keeping them 0600 in a
/// 0700 directory. Returns their names.
fn copy_keys(from: &Path, to: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(from)(e)),
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(io(to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).map_err(io(to))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(io(from))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type().map_err(io(&e.path()))?;
        if !ft.is_file() || name.ends_with(".tmp") {
            continue;
        }
        let bytes = std::fs::read(e.path()).map_err(io(&e.path()))?;
        write_synced(&to.join(&name), &bytes, 0o600)?;
        names.push(name);
    }
    names.sort();
    sync_dir(to);
    Ok(names)
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupCheck {
    pub ok: bool,
    pub manifest: Manifest,
    /// The report ledger's verification (signatures, chain, bodies, states, audit chain).
    pub reports: VerifyOutcome,
    /// Differences between the copy and its manifest.
    pub problems: Vec<String>,
}

/// Check a backup: open it read-only (nothing is written, not even an audit record), compare
/// its lists and ledger head with the manifest, and verify the report ledger with `key` — by
/// default the backup's own signing key, else the key the caller trusts (a published one).
pub fn verify(dir: &Path, key: Option<&PublicKey>) -> Result<BackupCheck> {
    let not = |message: String| BackupError::NotABackup {
        path: dir.display().to_string(),
        message,
    };
    let text = std::fs::read(dir.join(MANIFEST)).map_err(|e| not(format!("{MANIFEST}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| not(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(not(format!("format {:?}, not {FORMAT}", manifest.format)));
    }
    let store = Arc::new(Store::open_read_only(dir)?);
    let mut problems = Vec::new();
    let lists: Vec<ListVersion> = store
        .lists()?
        .into_iter()
        .map(|l| ListVersion {
            name: l.name,
            version: l.version,
            live_entries: l.live_entries,
            tombstones: l.tombstones,
        })
        .collect();
    for want in &manifest.lists {
        match lists.iter().find(|l| l.name == want.name) {
            None => problems.push(format!("list {} is missing", want.name)),
            Some(l) if l != want => problems.push(format!(
                "list {}: version {} with {} entries, the manifest says version {} with {}",
                l.name, l.version, l.live_entries, want.version, want.live_entries
            )),
            Some(_) => {}
        }
    }
    for l in &lists {
        if !manifest.lists.iter().any(|w| w.name == l.name) {
            problems.push(format!("list {} is not in the manifest", l.name));
        }
    }
    let rs = ReportStore::new(store.clone(), None, ReportConfig::default())?;
    let key = match key {
        Some(k) => Some(k.clone()),
        None => {
            let p = Signer::default_path(dir);
            if p.exists() {
                Some(Signer::load(&p)?.public())
            } else {
                None
            }
        }
    };
    let (head_seq, head_digest) = rs.ledger_head()?;
    let reports = match key {
        Some(k) => rs.verify_read_only(&k)?,
        None if head_seq == 0 => rs.verify_read_only(&Signer::generate()?.public())?,
        None => {
            return Err(not(
                "the backup holds no signing key (it was configured outside the data directory): pass the public key to verify the report ledger with".into(),
            ));
        }
    };
    if head_seq != manifest.ledger.head_seq || head_digest != manifest.ledger.head_digest {
        problems.push(format!(
            "the report ledger ends at entry {head_seq} ({head_digest}), the manifest says {} ({})",
            manifest.ledger.head_seq, manifest.ledger.head_digest
        ));
    }
    let ok = problems.is_empty() && reports.ok;
    Ok(BackupCheck {
        ok,
        manifest,
        reports,
        problems,
    })
}
