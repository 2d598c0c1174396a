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
//! The database is shared with `reports`, which keeps column families of its own (see `db`).

mod change;
pub mod export;
pub mod hashtype;
pub mod import;
mod keys;
mod model;
mod replica;

pub use change::Change;
use keys::*;
pub use keys::{entry_prefix, parse_entry_prefix};
pub use model::*;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Mutex;

use rocksdb::{ColumnFamily, IteratorMode, WriteBatch, WriteOptions};

use crate::db::{ColumnFamilySpec, Compression, Db, DbOptions};
use serde::{Deserialize, Serialize};

pub use hashtype::{HashType, HashValueError, Metric};

const CF_LISTS: &str = "lists";
const CF_NAMES: &str = "names";
const CF_ENTRIES: &str = "entries";
const CF_CHANGES: &str = "changes";
const CF_EXTERNAL: &str = "external";
const CF_AUDIT: &str = "audit";
const CF_META: &str = "meta";
/// The lists' column families in the data directory's database (see `db`).
pub const COLUMN_FAMILIES: [ColumnFamilySpec; 7] = {
    const fn cf(name: &'static str) -> ColumnFamilySpec {
        ColumnFamilySpec {
            name,
            compression: Compression::Tiered,
        }
    }
    [
        cf(CF_LISTS),
        cf(CF_NAMES),
        cf(CF_ENTRIES),
        cf(CF_CHANGES),
        cf(CF_EXTERNAL),
        cf(CF_AUDIT),
        cf(CF_META),
    ]
};

/// The embedded store. One writer at a time; readers never wait for writers.
pub struct Store {
    db: Db,
    writer: Mutex<()>,
    recovered: Vec<Recovered>,
}

/// Tuning knobs of the embedded RocksDB.
pub type StoreOptions = DbOptions;

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
        let mut store = Store {
            db: Db::open(dir, tuning)?,
            writer: Mutex::new(()),
            recovered: Vec::new(),
        };
        store.recovered = store.recover()?;
        Ok(store)
    }

    /// Open a store read-only, as it is: no recovery, no writes (a backup being checked).
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        Ok(Store {
            db: Db::open_read_only(dir)?,
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
        self.db.dir().root()
    }

    /// The data directory's database, shared with the other tenants (`reports`), which reach
    /// their own column families through it.
    pub fn database(&self) -> &Db {
        &self.db
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf(name)
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
        spec.video.check()?;
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
            video: spec.video,
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

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}
