//! Index snapshots: a list's hashes at one version, in one file beside the store, so a cold
//! start reads them sequentially instead of iterating (and decompressing) every entry record.
//!
//! A snapshot is only a cache. It names the list id and version it was made from and ends with
//! the SHA-256 of everything before it. At open, a list's newest snapshot at or before its
//! committed version is the base of its index and the change log since is applied on top (see
//! `ListIndex::on_base`); a damaged snapshot, or too many changes since, means a rebuild from
//! RocksDB as before. It is written after a rebuild, off the matching path, to a temporary file
//! that is synced and renamed into place, so a crash leaves either the old file or the new one.
//! It holds list hashes only (the same values RocksDB holds), never anything about queries.
//!
//! Layout (integers little-endian):
//! `BAKENIX1` · list u32 · version u64 · entries u64 · tables u32 · per table: metric u8 · type name (u16
//! length + bytes) · value bytes u32 · count u64 · data · SHA-256 of all the preceding bytes.
//! Data: exact — per value u16 length + bytes; Hamming — `count × words` packed u64; L2 — the
//! concatenated vectors (`count` bytes).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BitIndex, IndexKind, ListIndex, Tables};
use crate::store::{HashType, ListMeta, Metric};

const MAGIC: &[u8; 8] = b"BAKENIX1";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("index snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("index snapshot {0}: {1}")]
    Invalid(PathBuf, &'static str),
}

/// Where list `id`'s snapshot at `version` lives.
pub fn path_for(dir: &Path, id: u32, version: u64) -> PathBuf {
    dir.join(format!("list-{id}-v{version}.idx"))
}

/// Writes through to a file while hashing what was written.
struct Hashing<W: Write> {
    inner: W,
    digest: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write the base tables of `list` (at its base version) to `dir` (created if missing),
/// replacing any other snapshot of the list.
pub fn write(dir: &Path, list: &ListIndex) -> Result<PathBuf, SnapshotError> {
    // One writer at a time: the background writer and an explicit `write_snapshots` would
    // otherwise share the temporary file, and one's clean-up would remove the other's.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    std::fs::create_dir_all(dir)?;
    let idx: &Tables = list.base();
    let (id, version) = (list.id, list.base_version);
    let path = path_for(dir, id, version);
    let tmp = path.with_extension("idx.tmp");
    let file = std::fs::File::create(&tmp)?;
    let mut w = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        digest: Sha256::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&id.to_le_bytes())?;
    w.write_all(&version.to_le_bytes())?;
    w.write_all(&idx.entries.to_le_bytes())?;
    let tables = idx.exact.len() + idx.bits.len() + idx.l2.len();
    w.write_all(&(tables as u32).to_le_bytes())?;
    let head = |w: &mut Hashing<_>, metric: u8, ty: &HashType, value: usize, count: usize| {
        w.write_all(&[metric])?;
        let name = ty.as_str().as_bytes();
        w.write_all(&(name.len() as u16).to_le_bytes())?;
        w.write_all(name)?;
        w.write_all(&(value as u32).to_le_bytes())?;
        w.write_all(&(count as u64).to_le_bytes())
    };
    for (ty, set) in &idx.exact {
        head(&mut w, 0, ty, 0, set.len())?;
        for v in set {
            w.write_all(&(v.len() as u16).to_le_bytes())?;
            w.write_all(v)?;
        }
    }
    for ((ty, bytes), table) in &idx.bits {
        head(&mut w, 1, ty, *bytes, table.len())?;
        table.write_rows(&mut w)?;
    }
    for (ty, data) in &idx.l2 {
        head(&mut w, 2, ty, 1, data.len())?;
        w.write_all(data)?;
    }
    let digest = w.digest.finalize();
    let mut file = w.inner.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&digest)?;
    file.sync_all()?;
    drop(file);
    crate::datadir::rename_durable(&tmp, &path)?;
    remove_others(dir, id, Some(version));
    Ok(path)
}

/// The snapshot files in `dir`: (list id, version — `None` for a temporary or stray file, path).
fn files(dir: &Path) -> Vec<(u32, Option<u64>, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (id, rest) = name.to_str()?.strip_prefix("list-")?.split_once("-v")?;
            let version = rest.strip_suffix(".idx").and_then(|v| v.parse().ok());
            Some((id.parse().ok()?, version, e.path()))
        })
        .collect()
}

/// Remove list `id`'s snapshots other than `keep` (and stray temporary files).
pub fn remove_others(dir: &Path, id: u32, keep: Option<u64>) {
    for (_, _, path) in files(dir)
        .into_iter()
        .filter(|(i, v, _)| *i == id && (v.is_none() || *v != keep))
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Remove the snapshots of lists for which `live` says no (lists that no longer exist).
pub fn remove_dead(dir: &Path, live: impl Fn(u32) -> bool) {
    for (_, _, path) in files(dir).into_iter().filter(|(id, _, _)| !live(*id)) {
        let _ = std::fs::remove_file(path);
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.buf.len() < n {
            return Err(SnapshotError::Invalid(self.path.into(), "truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn count(&mut self, unit: usize) -> Result<usize, SnapshotError> {
        let n = usize::try_from(self.u64()?).unwrap_or(usize::MAX);
        // A count can never describe more data than the file still holds.
        if n.saturating_mul(unit.max(1)) > self.buf.len() {
            return Err(SnapshotError::Invalid(self.path.into(), "count past end"));
        }
        Ok(n)
    }
}

/// The newest snapshot of list `meta` made at or before its committed version, if any.
pub fn newest(dir: &Path, meta: &ListMeta) -> Option<(u64, PathBuf)> {
    files(dir)
        .into_iter()
        .filter_map(|(id, v, path)| Some((id, v?, path)))
        .filter(|(id, v, _)| *id == meta.id && *v <= meta.version)
        .map(|(_, v, path)| (v, path))
        .max_by_key(|(v, _)| *v)
}

/// Load list `meta`'s newest snapshot at or before its committed version: (its version, its
/// tables). `Ok(None)`: there is none.
pub fn load(
    dir: &Path,
    meta: &ListMeta,
    kind: IndexKind,
) -> Result<Option<(u64, Tables)>, SnapshotError> {
    let Some((version, path)) = newest(dir, meta) else {
        return Ok(None);
    };
    let buf = std::fs::read(&path)?;
    let invalid = |why| SnapshotError::Invalid(path.clone(), why);
    let Some(body_len) = buf.len().checked_sub(32) else {
        return Err(invalid("truncated"));
    };
    let (body, digest) = buf.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        return Err(invalid("digest mismatch"));
    }
    let mut c = Cursor {
        buf: body,
        path: &path,
    };
    if c.take(8)? != MAGIC {
        return Err(invalid("not an index snapshot"));
    }
    if c.u32()? != meta.id || c.u64()? != version {
        return Err(invalid("names another list or version than its file name"));
    }
    let entries = c.u64()?;
    let mut idx = Tables {
        entries,
        ..Tables::default()
    };
    let tables = c.u32()?;
    for _ in 0..tables {
        let metric = c.take(1)?[0];
        let name_len = usize::from(c.u16()?);
        let name = std::str::from_utf8(c.take(name_len)?).map_err(|_| invalid("type name"))?;
        let ty = HashType::new(name).map_err(|_| invalid("type name"))?;
        let value = c.u32()? as usize;
        match (metric, ty.metric()) {
            (0, Metric::Exact) => {
                let n = c.count(2)?;
                let mut set = HashSet::with_capacity(n);
                for _ in 0..n {
                    let len = usize::from(c.u16()?);
                    set.insert(Box::<[u8]>::from(c.take(len)?));
                }
                idx.exact.insert(ty, set);
            }
            (1, Metric::Hamming) => {
                let words = value.div_ceil(8);
                let n = c.count(words * 8)?;
                let raw = c.take(n * words * 8)?;
                let rows: Vec<u64> = raw
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                    .collect();
                let table = BitIndex::build_for(&ty, kind, value, &rows);
                idx.bits.insert((ty, value), table);
            }
            (2, Metric::L2) => {
                let n = c.count(1)?;
                let data = c.take(n)?.to_vec();
                idx.l2.insert(ty, data);
            }
            _ => return Err(invalid("table metric")),
        }
    }
    if !c.buf.is_empty() {
        return Err(invalid("trailing bytes"));
    }
    Ok(Some((version, idx)))
}
