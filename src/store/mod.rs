//! Hash lists in RocksDB: lists, entries, tombstones, an append-only audit log.
//!
//! # Versions and atomicity
//! Every change to a list (an import, a removal, a tombstone) produces list version `v+1`.
//! Entry records are multi-versioned: the key ends with the (inverted) version that wrote it,
//! and a reader at list version `V` sees, per entry, the newest record with version ≤ `V`.
//! A change writes its records at `v+1` in bounded chunks (constant memory however large the
//! import), then commits with one synced `WriteBatch` that sets the list's version to `v+1` and
//! appends the audit record. Until that batch lands, the staged records are invisible; after a
//! crash they are rolled back at the next open (found through the `changes` log). So a list is
//! always at its previous or its new version, and an acknowledged change is on disk.
//!
//! # Column families and keys (all integers big-endian)
//! | cf | key | value |
//! |---|---|---|
//! | `lists` | list id u32 | `ListMeta` JSON |
//! | `names` | list name | list id u32 |
//! | `entries` | list u32 · type len u8 · type · hash len u8 · hash · !version u64 | flag u8 (1 = deleted) · `EntryRecord` JSON |
//! | `changes` | list u32 · version u64 · chunk seq u64 | entry key prefixes of the chunk (u16 length + prefix, repeated) |
//! | `external` | list u32 · id len u16 · external id · entry key prefix | — |
//! | `audit` | seq u64 | `AuditRecord` JSON |
//! | `meta` | name | counters |
//!
//! `reports` keeps its own column families in this database (see `reports::COLUMN_FAMILIES`).

pub mod export;
pub mod hashtype;
pub mod import;
mod replica;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Mutex;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, IteratorMode, Options, WriteBatch,
    WriteOptions,
};
use serde::{Deserialize, Serialize};

pub use hashtype::{HashType, HashValueError, Metric};

const CF_LISTS: &str = "lists";
const CF_NAMES: &str = "names";
const CF_ENTRIES: &str = "entries";
const CF_CHANGES: &str = "changes";
const CF_EXTERNAL: &str = "external";
const CF_AUDIT: &str = "audit";
const CF_META: &str = "meta";
const ALL_CFS: [&str; 7] = [
    CF_LISTS,
    CF_NAMES,
    CF_ENTRIES,
    CF_CHANGES,
    CF_EXTERNAL,
    CF_AUDIT,
    CF_META,
];

/// Size of a change's filter of flushed prefixes: 2^27 bits = 16 MiB; with two probes it
/// answers "maybe staged" for ~2% of new records at 10M staged entries.
const FILTER_WORDS: usize = 1 << 21;

fn filter_bits(prefix: &[u8]) -> [usize; 2] {
    // FNV-1a, then split: two probe positions from one 64-bit hash.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in prefix {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let m = (FILTER_WORDS * 64) as u64;
    [
        (h % m) as usize,
        ((h >> 32 ^ h.rotate_left(17)) % m) as usize,
    ]
}

/// Staged writes are flushed to RocksDB in batches of this many operations.
const CHUNK_OPS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Db(String),
    #[error("no list named {0:?}")]
    NoSuchList(String),
    #[error("a list named {0:?} already exists")]
    ListExists(String),
    #[error("invalid list name {0:?}: use 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadListName(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    HashValue(#[from] HashValueError),
    #[error("{0}")]
    Invalid(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Db(e.into_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A list of known hashes and its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListMeta {
    pub id: u32,
    pub name: String,
    /// Who curates it: NCMEC, ThreatExchange, StopNCII, Project VIC, own, …
    pub source: String,
    #[serde(default)]
    pub description: String,
    /// Hash types present in the list.
    #[serde(default)]
    pub hash_types: BTreeSet<HashType>,
    /// e.g. "ncmec" (A1/A2/B1/B2), "vics" (categories), "uk" (A/B/C).
    #[serde(default)]
    pub classification_scheme: Option<String>,
    pub version: u64,
    pub created: String,
    pub updated: String,
    /// Known false positives: a match here suppresses matches of the same query elsewhere.
    #[serde(default)]
    pub negative: bool,
    /// Per-type thresholds stricter than the defaults (`pdq` → 20, say).
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<HashType, u32>,
    #[serde(default)]
    pub live_entries: u64,
    #[serde(default)]
    pub tombstones: u64,
}

/// What a caller gives to create a list.
#[derive(Debug, Clone, Default)]
pub struct NewList {
    pub name: String,
    pub source: String,
    pub description: String,
    pub classification_scheme: Option<String>,
    pub negative: bool,
    pub thresholds: std::collections::BTreeMap<HashType, u32>,
}

/// One entry as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryRecord {
    pub hash_type: HashType,
    /// Canonical text form of the value (hex; PhotoDNA as numbers).
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub added: String,
    pub updated: String,
    /// Where the record came from: format, file, line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// Set when the entry was withdrawn by its source or removed: a tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_reason: Option<String>,
    /// The list version that wrote this record.
    pub version: u64,
}

impl EntryRecord {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// A record as an importer produces it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Incoming {
    pub hash_type: Option<HashType>,
    pub hash: Vec<u8>,
    pub external_id: Option<String>,
    pub classification: Option<String>,
    pub media_type: Option<String>,
    pub tags: Vec<String>,
    pub provenance: Option<String>,
    /// The source withdrew it (NCMEC deletedImage, ThreatExchange should_delete, StopNCII
    /// withdrawn). With no hash, the tombstone applies to every entry with `external_id`.
    pub delete: bool,
}

/// The append-only audit log of list changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub list: String,
    pub version_from: u64,
    pub version_to: u64,
    #[serde(default)]
    pub counts: ChangeCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub tombstoned: u64,
    /// Tombstoned entries added again (counted in `added` too).
    #[serde(default)]
    pub restored: u64,
    /// Tombstones for hashes or ids the list did not hold.
    pub tombstone_unknown: u64,
    /// Records an importer could not read (counted here, listed in the import report).
    pub errors: u64,
}

/// Per-entry outcome of a staged put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Updated,
    Unchanged,
    Tombstoned,
    TombstoneUnknown,
}

/// Key prefix of an entry (without the version suffix).
pub fn entry_prefix(list: u32, ty: &HashType, hash: &[u8]) -> Vec<u8> {
    let t = ty.as_str().as_bytes();
    let mut k = Vec::with_capacity(4 + 1 + t.len() + 1 + hash.len() + 8);
    k.extend_from_slice(&list.to_be_bytes());
    k.push(t.len() as u8);
    k.extend_from_slice(t);
    k.push(hash.len() as u8);
    k.extend_from_slice(hash);
    k
}

/// Split an entry prefix back into (list, type, hash).
pub fn parse_entry_prefix(k: &[u8]) -> Option<(u32, &str, &[u8])> {
    let list = u32::from_be_bytes(k.get(0..4)?.try_into().ok()?);
    let tl = usize::from(*k.get(4)?);
    let ty = std::str::from_utf8(k.get(5..5 + tl)?).ok()?;
    let hl = usize::from(*k.get(5 + tl)?);
    let hash = k.get(6 + tl..6 + tl + hl)?;
    (k.len() == 6 + tl + hl).then_some((list, ty, hash))
}

fn versioned(prefix: &[u8], version: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&(!version).to_be_bytes());
    k
}

/// An entry record as stored: without its type and value, which its key already holds (a third
/// of the bytes an import writes, flushes and compacts).
#[derive(Deserialize)]
struct StoredRecord {
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    classification: Option<String>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    added: String,
    /// Absent when equal to `added`.
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    provenance: Option<String>,
    #[serde(default)]
    deleted_at: Option<String>,
    #[serde(default)]
    deleted_reason: Option<String>,
    version: u64,
}

/// [`StoredRecord`]'s serialising twin, borrowing (no copies on the import path).
#[derive(Serialize)]
struct StoredRecordRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classification: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    added: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_reason: Option<&'a str>,
    version: u64,
}

fn encode_record(r: &EntryRecord) -> Result<Vec<u8>> {
    let stored = StoredRecordRef {
        external_id: r.external_id.as_deref(),
        classification: r.classification.as_deref(),
        media_type: r.media_type.as_deref(),
        tags: &r.tags,
        added: &r.added,
        updated: (r.updated != r.added).then_some(r.updated.as_str()),
        provenance: r.provenance.as_deref(),
        deleted_at: r.deleted_at.as_deref(),
        deleted_reason: r.deleted_reason.as_deref(),
        version: r.version,
    };
    let mut v = Vec::with_capacity(160);
    v.push(u8::from(r.is_deleted()));
    serde_json::to_writer(&mut v, &stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(v)
}

/// The record stored under entry `prefix` (key without its version suffix).
fn decode_record(prefix: &[u8], v: &[u8]) -> Result<EntryRecord> {
    let s: StoredRecord = serde_json::from_slice(v.get(1..).unwrap_or_default())
        .map_err(|e| StoreError::Corrupt(format!("entry record: {e}")))?;
    let (_, ty, hash) =
        parse_entry_prefix(prefix).ok_or_else(|| StoreError::Corrupt("entry key".into()))?;
    let hash_type = HashType::new(ty)?;
    Ok(EntryRecord {
        hash: hash_type.format_value(hash),
        hash_type,
        external_id: s.external_id,
        classification: s.classification,
        media_type: s.media_type,
        tags: s.tags,
        updated: s.updated.unwrap_or_else(|| s.added.clone()),
        added: s.added,
        provenance: s.provenance,
        deleted_at: s.deleted_at,
        deleted_reason: s.deleted_reason,
        version: s.version,
    })
}

fn valid_list_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The embedded store. One writer at a time; readers never wait for writers.
pub struct Store {
    db: DB,
    dir: std::path::PathBuf,
    writer: Mutex<()>,
    recovered: Vec<Recovered>,
}

/// Tuning knobs of the embedded RocksDB.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Memtable size per column family (RocksDB's default, 64 MiB, when `None`). Smaller
    /// means less memory and more, smaller flushes during large imports.
    pub write_buffer_bytes: Option<usize>,
}

/// An uncommitted change rolled back when the store was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovered {
    pub list: String,
    pub version: u64,
    pub records: u64,
}

impl Store {
    /// Open (or create) the store in `dir`, rolling back any change a crash left uncommitted.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// [`Store::open`] with tuning options.
    pub fn open_with(dir: &Path, tuning: &StoreOptions) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_keep_log_file_num(4);
        // Bulk chunks of a change are written without the WAL and flushed before the commit
        // (see `Change::flush`): flushing all column families together keeps a chunk's entries
        // and its change-log record in step, so recovery can always roll back what it finds.
        opts.set_atomic_flush(true);
        let cfs = Self::column_families().map(|n| {
            let mut o = Options::default();
            // Report data stays uncompressed: it is small, and a byte scan of the data
            // directory (the privacy tests) then sees exactly what is stored and what a purge
            // removed. Fresh list data (L0, L1) stays uncompressed too: flushes during a bulk
            // import then cost no compression; compactions into the deeper levels, where most
            // data lives, use LZ4.
            let (none, lz4) = (DBCompressionType::None, DBCompressionType::Lz4);
            if crate::reports::COLUMN_FAMILIES.contains(&n) {
                o.set_compression_type(none);
            } else {
                o.set_compression_type(lz4);
                o.set_compression_per_level(&[none, none, lz4, lz4, lz4, lz4, lz4]);
            }
            if let Some(b) = tuning.write_buffer_bytes {
                o.set_write_buffer_size(b.max(1 << 20));
            }
            ColumnFamilyDescriptor::new(n, o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let mut store = Store {
            db,
            dir: dir.to_path_buf(),
            writer: Mutex::new(()),
            recovered: Vec::new(),
        };
        store.recovered = store.recover()?;
        Ok(store)
    }

    /// Open a store read-only, as it is: no recovery, no writes (a backup being checked).
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        let db =
            DB::open_cf_for_read_only(&Options::default(), dir, Self::column_families(), false)?;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            writer: Mutex::new(()),
            recovered: Vec::new(),
        })
    }

    /// A consistent copy of the database in `dest` (which must not exist): a RocksDB
    /// checkpoint, made while readers and writers go on. Memtables are flushed first, so the
    /// copy holds every acknowledged write; table files are hard-linked when `dest` is on the
    /// same filesystem, copied otherwise. The copy is itself a complete database directory.
    pub fn checkpoint(&self, dest: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dest)?;
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every column family: the lists' and those of `reports`, which share this database (one
    /// WAL, one lock, one directory to back up).
    pub(crate) fn column_families() -> impl Iterator<Item = &'static str> {
        ALL_CFS.into_iter().chain(crate::reports::COLUMN_FAMILIES)
    }

    /// The database, for modules that keep their own column families here (`reports`).
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave RocksDB half-written (batches are
        // atomic), so a poisoned lock is safe to take over.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes a crash left uncommitted, rolled back by `open`.
    pub fn recovered(&self) -> &[Recovered] {
        &self.recovered
    }

    /// Roll back staged records of versions above each list's committed version.
    fn recover(&self) -> Result<Vec<Recovered>> {
        let _w = self.lock();
        let mut done = Vec::new();
        for meta in self.lists()? {
            let n = self.rollback_from(meta.id, meta.version + 1)?;
            if n > 0 {
                tracing::warn!(list = %meta.name, version = meta.version, records = n, "rolled back an uncommitted change");
                done.push(Recovered {
                    list: meta.name.clone(),
                    version: meta.version + 1,
                    records: n,
                });
            }
        }
        // Records staged for a list that has no record yet (a replica's first pull of it,
        // interrupted): everything of that list id is uncommitted.
        for id in self.change_log_list_ids()? {
            if self.list_by_id(id)?.is_none() {
                let n = self.rollback_from(id, 0)?;
                tracing::warn!(
                    list_id = id,
                    records = n,
                    "rolled back an uncommitted first pull of a list"
                );
                done.push(Recovered {
                    list: format!("#{id}"),
                    version: 0,
                    records: n,
                });
            }
        }
        Ok(done)
    }

    /// The list ids the change log holds records of (one seek per list id).
    fn change_log_list_ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_CHANGES)?);
        it.seek_to_first();
        while let Some(k) = it.key() {
            let Some(id) = k
                .get(0..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
            else {
                break;
            };
            ids.push(id);
            match id.checked_add(1) {
                Some(next) => it.seek(next.to_be_bytes()),
                None => break,
            }
        }
        it.status()?;
        Ok(ids)
    }

    /// Delete every staged record (and its change-log record) of `list` at versions
    /// `from_version` and above, in one synced batch. Returns the entry records deleted.
    fn rollback_from(&self, list: u32, from_version: u64) -> Result<u64> {
        let changes = self.cf(CF_CHANGES)?;
        let entries = self.cf(CF_ENTRIES)?;
        let mut start = list.to_be_bytes().to_vec();
        start.extend_from_slice(&from_version.to_be_bytes());
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        let mut it = self.db.raw_iterator_cf(changes);
        it.seek(&start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.get(0..4) != Some(&list.to_be_bytes()[..]) {
                break;
            }
            let version =
                change_key_version(k).ok_or_else(|| StoreError::Corrupt("change key".into()))?;
            for prefix in change_prefixes(v) {
                batch.delete_cf(entries, versioned(prefix, version));
                n += 1;
            }
            batch.delete_cf(changes, k);
            it.next();
        }
        it.status()?;
        if !batch.is_empty() {
            self.db.write_opt(batch, &synced())?;
        }
        Ok(n)
    }

    /// Every record of a JSON-valued column family, in key order.
    fn read_all<T: serde::de::DeserializeOwned>(&self, cf: &str, what: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("{what} record: {e}")))?,
            );
        }
        Ok(out)
    }

    pub fn lists(&self) -> Result<Vec<ListMeta>> {
        self.read_all(CF_LISTS, "list")
    }

    pub fn list_by_id(&self, id: u32) -> Result<Option<ListMeta>> {
        match self.db.get_cf(self.cf(CF_LISTS)?, id.to_be_bytes())? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    StoreError::Corrupt(format!("list record: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    pub fn list(&self, name: &str) -> Result<ListMeta> {
        let id = self
            .db
            .get_cf(self.cf(CF_NAMES)?, name.as_bytes())?
            .and_then(|v| v.as_slice().try_into().ok().map(u32::from_be_bytes))
            .ok_or_else(|| StoreError::NoSuchList(name.to_string()))?;
        self.list_by_id(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("list {name} has a name but no record")))
    }

    fn next_counter(&self, name: &str, batch: &mut WriteBatch) -> Result<u64> {
        let cf = self.cf(CF_META)?;
        let cur = self
            .db
            .get_cf(cf, name.as_bytes())?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        batch.put_cf(cf, name.as_bytes(), (cur + 1).to_be_bytes());
        Ok(cur + 1)
    }

    fn put_audit(&self, batch: &mut WriteBatch, mut rec: AuditRecord) -> Result<AuditRecord> {
        rec.seq = self.next_counter("audit_seq", batch)?;
        let v = serde_json::to_vec(&rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.put_cf(self.cf(CF_AUDIT)?, rec.seq.to_be_bytes(), v);
        Ok(rec)
    }

    fn put_list(&self, batch: &mut WriteBatch, meta: &ListMeta) -> Result<()> {
        let v = serde_json::to_vec(meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.put_cf(self.cf(CF_LISTS)?, meta.id.to_be_bytes(), v);
        Ok(())
    }

    pub fn create_list(&self, spec: NewList, actor: &str) -> Result<ListMeta> {
        if !valid_list_name(&spec.name) {
            return Err(StoreError::BadListName(spec.name));
        }
        let _w = self.lock();
        if self
            .db
            .get_cf(self.cf(CF_NAMES)?, spec.name.as_bytes())?
            .is_some()
        {
            return Err(StoreError::ListExists(spec.name));
        }
        let mut batch = WriteBatch::default();
        let id = u32::try_from(self.next_counter("list_id", &mut batch)?)
            .map_err(|_| StoreError::Invalid("too many lists".into()))?;
        let now = now_rfc3339();
        let meta = ListMeta {
            id,
            name: spec.name.clone(),
            source: spec.source,
            description: spec.description,
            hash_types: BTreeSet::new(),
            classification_scheme: spec.classification_scheme,
            version: 0,
            created: now.clone(),
            updated: now.clone(),
            negative: spec.negative,
            thresholds: spec.thresholds,
            live_entries: 0,
            tombstones: 0,
        };
        self.put_list(&mut batch, &meta)?;
        batch.put_cf(self.cf(CF_NAMES)?, spec.name.as_bytes(), id.to_be_bytes());
        self.put_audit(
            &mut batch,
            AuditRecord {
                seq: 0,
                at: now,
                actor: actor.to_string(),
                action: "list.create".into(),
                list: spec.name,
                version_from: 0,
                version_to: 0,
                counts: ChangeCounts::default(),
                detail: meta.negative.then(|| "negative list".to_string()),
            },
        )?;
        self.db.write_opt(batch, &synced())?;
        Ok(meta)
    }

    /// The newest record of an entry visible at `version`.
    ///
    /// A fresh iterator bounded to the entry's keys each time: records staged by a change in
    /// progress sort before the seek target (higher version = smaller inverted suffix), so the
    /// seek never walks over them, and the upper bound stops it at the entry's last key.
    pub fn entry_at(&self, prefix: &[u8], version: u64) -> Result<Option<EntryRecord>> {
        self.raw_entry_at(prefix, version)?
            .map(|v| decode_record(prefix, &v))
            .transpose()
    }

    /// [`Store::entry_at`]'s stored value (deleted flag + record), undecoded.
    fn raw_entry_at(&self, prefix: &[u8], version: u64) -> Result<Option<Vec<u8>>> {
        let mut upper = prefix.to_vec();
        upper.extend_from_slice(&[0xFF; 9]);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(upper);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_ENTRIES)?, ro);
        it.seek(versioned(prefix, version));
        if let (Some(k), Some(v)) = (it.key(), it.value())
            && k.len() == prefix.len() + 8
            && k.starts_with(prefix)
        {
            return Ok(Some(v.to_vec()));
        }
        it.status()?;
        Ok(None)
    }

    /// Begin a change to `list`; it holds the writer lock until committed or dropped.
    pub fn begin(&self, list: &str, actor: &str, action: &str) -> Result<Change<'_>> {
        let guard = self.lock();
        let meta = self.list(list)?;
        let version = meta.version + 1;
        Ok(self.change(guard, meta, version, actor, action))
    }

    /// A change of `meta`'s list staging at `version`, holding the writer lock.
    fn change<'a>(
        &'a self,
        guard: std::sync::MutexGuard<'a, ()>,
        meta: ListMeta,
        version: u64,
        actor: &str,
        action: &str,
    ) -> Change<'a> {
        Change {
            store: self,
            _guard: guard,
            version,
            meta,
            actor: actor.to_string(),
            action: action.to_string(),
            batch: WriteBatch::default(),
            pending: Vec::new(),
            ops: 0,
            seq: 0,
            counts: ChangeCounts::default(),
            chunk_keys: HashSet::new(),
            flushed: false,
            now: now_rfc3339(),
            unlogged: false,
            staged_filter: Vec::new(),
            chunk_changes: Vec::new(),
            types: BTreeSet::new(),
            committed: false,
            replicated: None,
        }
    }

    /// Every current (committed) record of a list, tombstones included, in key order.
    pub fn scan_list(
        &self,
        meta: &ListMeta,
        mut f: impl FnMut(&[u8], &EntryRecord) -> Result<()>,
    ) -> Result<()> {
        self.scan_list_raw(meta, |prefix, _deleted, value| {
            let rec = decode_record(prefix, value)?;
            f(prefix, &rec)
        })
    }

    /// Like `scan_list`, but hands over the prefix, deleted flag and undecoded value (the index
    /// build needs only the first two).
    pub fn scan_list_raw(
        &self,
        meta: &ListMeta,
        mut f: impl FnMut(&[u8], bool, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let cf = self.cf(CF_ENTRIES)?;
        let lp = meta.id.to_be_bytes();
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(lp);
        let mut last: Vec<u8> = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&lp) {
                break;
            }
            if k.len() < 12 {
                return Err(StoreError::Corrupt("short entry key".into()));
            }
            let (prefix, ver) = k.split_at(k.len() - 8);
            let version = !u64::from_be_bytes(ver.try_into().unwrap_or_default());
            if version <= meta.version && prefix != last.as_slice() {
                last.clear();
                last.extend_from_slice(prefix);
                f(prefix, v.first() == Some(&1), v)?;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Entry prefixes recorded for an external id in a list.
    fn external_prefixes(&self, list: u32, external_id: &str) -> Result<Vec<Vec<u8>>> {
        let cf = self.cf(CF_EXTERNAL)?;
        let head = external_head(list, external_id);
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(&head);
        while let Some(k) = it.key() {
            if !k.starts_with(&head) {
                break;
            }
            out.push(k[head.len()..].to_vec());
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The audit log, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditRecord>> {
        self.read_all(CF_AUDIT, "audit")
    }

    /// Entry prefixes changed in versions (from, to] of a list: what a live index applies.
    /// `None` once there are more than `limit` (the caller rebuilds instead).
    pub fn changed_prefixes(
        &self,
        list: u32,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let cf = self.cf(CF_CHANGES)?;
        let mut start = list.to_be_bytes().to_vec();
        start.extend_from_slice(&(from + 1).to_be_bytes());
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(&start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.get(0..4) != Some(&list.to_be_bytes()[..]) {
                break;
            }
            let version = change_key_version(k).unwrap_or(u64::MAX);
            if version > to {
                break;
            }
            out.extend(change_prefixes(v).map(<[u8]>::to_vec));
            if out.len() > limit {
                return Ok(None);
            }
            it.next();
        }
        it.status()?;
        Ok(Some(out))
    }
}

/// The version in a change-log key (list u32 · version u64 · seq u64).
fn change_key_version(k: &[u8]) -> Option<u64> {
    k.get(4..12)?.try_into().ok().map(u64::from_be_bytes)
}

/// The entry prefixes of one change-log record (`u16` length, prefix, repeated).
fn change_prefixes(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = v;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?));
        let p = rest.get(2..2 + len)?;
        rest = &rest[2 + len..];
        Some(p)
    })
}

fn external_head(list: u32, external_id: &str) -> Vec<u8> {
    let mut k = list.to_be_bytes().to_vec();
    let id = external_id.as_bytes();
    k.extend_from_slice(&(id.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(&id[..id.len().min(u16::MAX as usize)]);
    k
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// A change in progress: records staged at `version`, invisible until `commit`.
/// Dropping it uncommitted rolls the staged records back.
pub struct Change<'a> {
    store: &'a Store,
    _guard: std::sync::MutexGuard<'a, ()>,
    meta: ListMeta,
    version: u64,
    actor: String,
    action: String,
    batch: WriteBatch,
    /// Staged puts of the current chunk (external-id CF?, key, value), sorted at flush.
    pending: Vec<(bool, Vec<u8>, Vec<u8>)>,
    ops: usize,
    seq: u64,
    counts: ChangeCounts,
    /// Bloom filter over every prefix this change has flushed (allocated at the first flush):
    /// a record not in it cannot have been staged before, which spares the point look-up for
    /// all but a small fraction of records. Fixed size, so memory stays constant.
    staged_filter: Vec<u64>,
    /// Change-log payload of the unflushed batch: length-prefixed entry prefixes.
    chunk_changes: Vec<u8>,
    /// Prefixes staged in the unflushed batch (duplicates within a chunk).
    chunk_keys: HashSet<Vec<u8>>,
    flushed: bool,
    /// The change's time, given to every record it adds, updates or withdraws (one clock read
    /// and format per change, not per record).
    now: String,
    /// Some chunk went in without the WAL: the commit must flush memtables first.
    unlogged: bool,
    types: BTreeSet<HashType>,
    committed: bool,
    /// A replica applying a writer's pull: the writer's list metadata at `version`, which the
    /// commit stores as is.
    replicated: Option<ListMeta>,
}

impl Change<'_> {
    pub fn list(&self) -> &ListMeta {
        &self.meta
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn counts(&self) -> &ChangeCounts {
        &self.counts
    }

    pub fn count_error(&mut self) {
        self.counts.errors += 1;
    }

    /// The record this change currently holds for `prefix`: its own staged one, else the
    /// committed one.
    fn current(&self, prefix: &[u8]) -> Result<(Option<EntryRecord>, bool)> {
        if self.chunk_keys.contains(prefix) {
            return Ok((None, true));
        }
        // A list that held nothing at `begin` (the bulk first load) has no committed records:
        // skip the look-up; only this change's own flushed records can exist.
        let empty =
            self.meta.version == 0 || (self.meta.live_entries == 0 && self.meta.tombstones == 0);
        if self.flushed
            && self.maybe_staged(prefix)
            && let Some(v) = self
                .store
                .db
                .get_cf(self.store.cf(CF_ENTRIES)?, versioned(prefix, self.version))?
        {
            return Ok((Some(decode_record(prefix, &v)?), true));
        }
        if empty {
            return Ok((None, false));
        }
        Ok((self.store.entry_at(prefix, self.meta.version)?, false))
    }

    fn stage(&mut self, prefix: &[u8], rec: &EntryRecord, fresh: bool) -> Result<()> {
        self.pending
            .push((false, versioned(prefix, self.version), encode_record(rec)?));
        if fresh {
            // Logged per chunk (one change-log key per flushed batch, written in that batch).
            self.chunk_changes
                .extend_from_slice(&(prefix.len() as u16).to_be_bytes());
            self.chunk_changes.extend_from_slice(prefix);
        }
        if let Some(ext) = &rec.external_id {
            let mut k = external_head(self.meta.id, ext);
            k.extend_from_slice(prefix);
            self.pending.push((true, k, Vec::new()));
        }
        self.chunk_keys.insert(prefix.to_vec());
        self.ops += 1;
        if self.ops >= CHUNK_OPS {
            self.flush(true)?;
        }
        Ok(())
    }

    /// Write the staged batch. A `bulk` chunk (a full one, mid-import) skips the WAL: logging
    /// it would write every record twice, and an uncommitted chunk lost in a crash is exactly
    /// what recovery would roll back anyway. `commit` flushes memtables before it makes the
    /// version visible, so a committed change never depends on the WAL for its chunks.
    fn flush(&mut self, bulk: bool) -> Result<()> {
        if self.ops > 0 {
            if !self.chunk_changes.is_empty() {
                let mut ck = self.meta.id.to_be_bytes().to_vec();
                ck.extend_from_slice(&self.version.to_be_bytes());
                ck.extend_from_slice(&self.seq.to_be_bytes());
                self.seq += 1;
                let log = std::mem::take(&mut self.chunk_changes);
                self.batch.put_cf(self.store.cf(CF_CHANGES)?, ck, log);
            }
            // Sorted, the memtable's skip list finds each insert's place next to the previous
            // one's instead of searching from the top (a fifth of an import's time unsorted).
            let mut pending = std::mem::take(&mut self.pending);
            // Stable: a key staged twice in one chunk keeps its last value last.
            pending.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let (entries, external) = (self.store.cf(CF_ENTRIES)?, self.store.cf(CF_EXTERNAL)?);
            for (ext, k, v) in pending {
                self.batch
                    .put_cf(if ext { external } else { entries }, k, v);
            }
            let batch = std::mem::take(&mut self.batch);
            // Not synced: the commit's synced write (after a memtable flush for unlogged
            // chunks) makes everything before it durable.
            let mut wo = WriteOptions::default();
            wo.disable_wal(bulk);
            self.store.db.write_opt(batch, &wo)?;
            self.unlogged |= bulk;
            self.ops = 0;
            if self.staged_filter.is_empty() {
                self.staged_filter = vec![0u64; FILTER_WORDS];
            }
            for k in std::mem::take(&mut self.chunk_keys) {
                for bit in filter_bits(&k) {
                    self.staged_filter[bit / 64] |= 1 << (bit % 64);
                }
            }
            self.flushed = true;
        }
        Ok(())
    }

    fn maybe_staged(&self, prefix: &[u8]) -> bool {
        !self.staged_filter.is_empty()
            && filter_bits(prefix)
                .iter()
                .all(|&bit| self.staged_filter[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Add or update an entry, or tombstone it when `inc.delete`.
    pub fn put(&mut self, inc: &Incoming) -> Result<Outcome> {
        let ty = inc
            .hash_type
            .clone()
            .ok_or_else(|| StoreError::Invalid("record has no hash type".into()))?;
        if inc.hash.is_empty() {
            return Err(StoreError::HashValue(HashValueError::Empty));
        }
        let prefix = entry_prefix(self.meta.id, &ty, &inc.hash);
        let (cur, staged_here) = self.current(&prefix)?;
        let now = self.now.clone();
        if inc.delete {
            return self.tombstone_prefix(
                &prefix,
                cur,
                staged_here,
                &ty,
                &inc.hash,
                "withdrawn by source",
            );
        }
        let rec = EntryRecord {
            hash: ty.format_value(&inc.hash),
            hash_type: ty.clone(),
            external_id: inc.external_id.clone(),
            classification: inc.classification.clone(),
            media_type: inc.media_type.clone(),
            tags: inc.tags.clone(),
            added: cur
                .as_ref()
                .filter(|c| !c.is_deleted())
                .map_or_else(|| now.clone(), |c| c.added.clone()),
            updated: now,
            provenance: inc.provenance.clone(),
            deleted_at: None,
            deleted_reason: None,
            version: self.version,
        };
        let outcome = match &cur {
            None if staged_here => Outcome::Updated,
            None => Outcome::Added,
            Some(c) if c.is_deleted() => Outcome::Added,
            Some(c) if same_content(c, &rec) => Outcome::Unchanged,
            Some(_) => Outcome::Updated,
        };
        if cur.as_ref().is_some_and(EntryRecord::is_deleted) {
            self.counts.restored += 1;
        }
        match outcome {
            Outcome::Unchanged => self.counts.unchanged += 1,
            Outcome::Added if !staged_here => self.counts.added += 1,
            _ => self.counts.updated += 1,
        }
        if outcome != Outcome::Unchanged {
            self.types.insert(ty);
            self.stage(&prefix, &rec, !staged_here)?;
        }
        Ok(outcome)
    }

    fn tombstone_prefix(
        &mut self,
        prefix: &[u8],
        cur: Option<EntryRecord>,
        staged_here: bool,
        ty: &HashType,
        hash: &[u8],
        reason: &str,
    ) -> Result<Outcome> {
        match cur {
            Some(c) if !c.is_deleted() => {
                let now = self.now.clone();
                let rec = EntryRecord {
                    updated: now.clone(),
                    deleted_at: Some(now),
                    deleted_reason: Some(reason.to_string()),
                    version: self.version,
                    ..c
                };
                self.stage(prefix, &rec, !staged_here)?;
                self.counts.tombstoned += 1;
                Ok(Outcome::Tombstoned)
            }
            Some(_) => {
                self.counts.unchanged += 1;
                Ok(Outcome::Unchanged)
            }
            None if staged_here => {
                // Added earlier in this same change and withdrawn again: keep it as a
                // tombstone without ever having been visible.
                let now = self.now.clone();
                let rec = EntryRecord {
                    hash_type: ty.clone(),
                    hash: ty.format_value(hash),
                    external_id: None,
                    classification: None,
                    media_type: None,
                    tags: Vec::new(),
                    added: now.clone(),
                    updated: now.clone(),
                    provenance: None,
                    deleted_at: Some(now),
                    deleted_reason: Some(reason.to_string()),
                    version: self.version,
                };
                self.stage(prefix, &rec, false)?;
                self.counts.tombstoned += 1;
                Ok(Outcome::Tombstoned)
            }
            None => {
                self.counts.tombstone_unknown += 1;
                Ok(Outcome::TombstoneUnknown)
            }
        }
    }

    /// Tombstone one entry by type and value.
    pub fn tombstone(&mut self, ty: &HashType, hash: &[u8], reason: &str) -> Result<Outcome> {
        let prefix = entry_prefix(self.meta.id, ty, hash);
        let (cur, staged) = self.current(&prefix)?;
        self.tombstone_prefix(&prefix, cur, staged, ty, hash, reason)
    }

    /// Tombstone every entry carrying `external_id` (NCMEC `deletedImage` names only the id).
    pub fn tombstone_external(&mut self, external_id: &str, reason: &str) -> Result<u64> {
        // Make staged records visible to the lookup below.
        self.flush(false)?;
        let mut n = 0;
        let prefixes = self.store.external_prefixes(self.meta.id, external_id)?;
        for prefix in prefixes {
            let (cur, staged) = self.current(&prefix)?;
            if cur.as_ref().and_then(|c| c.external_id.as_deref()) != Some(external_id) {
                continue;
            }
            let Some((_, ty, hash)) = parse_entry_prefix(&prefix) else {
                continue;
            };
            let ty = HashType::new(ty)?;
            let hash = hash.to_vec();
            if self.tombstone_prefix(&prefix, cur, staged, &ty, &hash, reason)?
                == Outcome::Tombstoned
            {
                n += 1;
            }
        }
        if n == 0 {
            self.counts.tombstone_unknown += 1;
        }
        Ok(n)
    }

    /// Make the change visible and durable: one synced batch sets the new version and appends
    /// the audit record. With nothing changed the version stays and only the audit is written.
    pub fn commit(mut self, detail: Option<String>) -> Result<(ListMeta, AuditRecord)> {
        self.flush(false)?;
        if self.unlogged {
            let cfs = [
                self.store.cf(CF_ENTRIES)?,
                self.store.cf(CF_CHANGES)?,
                self.store.cf(CF_EXTERNAL)?,
            ];
            let mut fo = rocksdb::FlushOptions::default();
            fo.set_wait(true);
            self.store.db.flush_cfs_opt(&cfs, &fo)?;
        }
        let c = &self.counts;
        let changed = c.added + c.updated + c.tombstoned > 0;
        let mut meta = self.meta.clone();
        let from = meta.version;
        let replicated = self.replicated.is_some();
        if let Some(writer) = self.replicated.take() {
            meta = writer;
        } else if changed {
            meta.version = self.version;
            meta.updated = now_rfc3339();
            meta.hash_types.extend(self.types.iter().cloned());
            meta.live_entries = (meta.live_entries + c.added).saturating_sub(c.tombstoned);
            meta.tombstones = (meta.tombstones + c.tombstoned).saturating_sub(c.restored);
        }
        let mut batch = WriteBatch::default();
        self.store.put_list(&mut batch, &meta)?;
        if replicated {
            // A list new to a replica gets its name here, with its first verified version.
            batch.put_cf(
                self.store.cf(CF_NAMES)?,
                meta.name.as_bytes(),
                meta.id.to_be_bytes(),
            );
        }
        let audit = self.store.put_audit(
            &mut batch,
            AuditRecord {
                seq: 0,
                at: now_rfc3339(),
                actor: self.actor.clone(),
                action: self.action.clone(),
                list: meta.name.clone(),
                version_from: from,
                version_to: meta.version,
                counts: self.counts.clone(),
                detail,
            },
        )?;
        self.store.db.write_opt(batch, &synced())?;
        self.committed = true;
        Ok((meta, audit))
    }

    /// Count a tombstone that arrived before its entry was known (counted, nothing staged).
    pub fn note_unknown_tombstone(&mut self) {
        self.counts.tombstone_unknown += 1;
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Roll back whatever was flushed; the unflushed batch is simply discarded.
        if self.flushed
            && let Err(e) = self.store.rollback_from(self.meta.id, self.version)
        {
            tracing::error!(error = %e, "rollback of an abandoned change failed; it will be retried at the next open");
        }
    }
}

fn same_content(a: &EntryRecord, b: &EntryRecord) -> bool {
    a.external_id == b.external_id
        && a.classification == b.classification
        && a.media_type == b.media_type
        && a.tags == b.tags
        && a.deleted_at.is_none()
        && b.deleted_at.is_none()
}
