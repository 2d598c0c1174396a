//! The data directory: one documented tree, and the one way files in it are written durably.
//!
//! ```text
//! <data>/                     RocksDB's own files (CURRENT, MANIFEST-*, *.sst, *.log, LOCK, …):
//!                             lists, entries, change log, audit, reports — see `db`
//! <data>/keys/                0700: report-signing.key (0600), report-signing.next during a
//!                             rotation, report-signing.<key id>.retired (kept on request),
//!                             list-signing.key (a replication writer's)
//! <data>/index/               list-<id>-v<version>.idx: index snapshots (a cache: deleting it
//!                             costs a rebuild at the next start, nothing else)
//! <data>/scan-checkpoints/    <job>.json: progress of interrupted `baken scan` jobs
//! ```
//!
//! Nothing else is written under `<data>`; backups (`baken backup --to`) go elsewhere. Image
//! bytes are never written anywhere.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Subdirectory of the signing keys.
pub const KEYS: &str = "keys";
/// Subdirectory of the index snapshots.
pub const INDEX: &str = "index";
/// Subdirectory of `baken scan` checkpoints.
pub const SCAN_CHECKPOINTS: &str = "scan-checkpoints";

/// The paths of one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn keys(&self) -> PathBuf {
        self.root.join(KEYS)
    }

    pub fn index(&self) -> PathBuf {
        self.root.join(INDEX)
    }

    pub fn scan_checkpoints(&self) -> PathBuf {
        self.root.join(SCAN_CHECKPOINTS)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Sync a directory, so that a rename or link in it survives a crash. Best effort: some
/// filesystems refuse to sync a directory, and there is nothing more to do then.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        sync_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        });
    }
}

fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Replace `path` with `bytes` atomically and durably: a temporary file beside it (mode
/// `mode`), fsynced, renamed over it, the directory synced. A crash leaves the old content or
/// the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    rename_durable(&tmp, path)
}

/// Create `path` with `bytes`, never overwriting: written to a temporary file, fsynced, then
/// hard-linked into place (which fails with `AlreadyExists` if `path` exists). For keys: a
/// crash never leaves a half-written key, and an existing key is never replaced.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_parent(path);
    Ok(())
}

/// Rename `from` to `to` (same directory or filesystem) and sync the target's directory.
/// The caller has synced `from`'s content.
pub fn rename_durable(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    sync_parent(to);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_new_writes_never_do() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let k = d.path().join("k");
        write_new(&k, b"key", 0o600).unwrap();
        let e = write_new(&k, b"other", 0o600).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&k).unwrap(), b"key");
        // No temporary file is left behind either way.
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "k"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
