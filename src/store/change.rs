//! [`Change`]: a list change staged at `v+1` in bounded chunks and committed with one synced
//! batch (or rolled back when dropped uncommitted).

use super::*;

/// Size of a change's filter of flushed prefixes: 2^27 bits = 16 MiB; with two probes it
/// answers "maybe staged" for ~2% of new records at 10M staged entries.
pub(super) const FILTER_WORDS: usize = 1 << 21;

pub(super) fn filter_bits(prefix: &[u8]) -> [usize; 2] {
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
pub(super) const CHUNK_OPS: usize = 8192;

/// A change in progress: records staged at `version`, invisible until `commit`.
/// Dropping it uncommitted rolls the staged records back.
pub struct Change<'a> {
    pub(super) store: &'a Store,
    pub(super) _guard: std::sync::MutexGuard<'a, ()>,
    pub(super) meta: ListMeta,
    pub(super) version: u64,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) batch: WriteBatch,
    /// Staged puts of the current chunk (external-id CF?, key, value), sorted at flush.
    pub(super) pending: Vec<(bool, Vec<u8>, Vec<u8>)>,
    pub(super) ops: usize,
    pub(super) seq: u64,
    pub(super) counts: ChangeCounts,
    /// Bloom filter over every prefix this change has flushed (allocated at the first flush):
    /// a record not in it cannot have been staged before, which spares the point look-up for
    /// all but a small fraction of records. Fixed size, so memory stays constant.
    pub(super) staged_filter: Vec<u64>,
    /// Change-log payload of the unflushed batch: length-prefixed entry prefixes.
    pub(super) chunk_changes: Vec<u8>,
    /// Prefixes staged in the unflushed batch (duplicates within a chunk).
    pub(super) chunk_keys: HashSet<Vec<u8>>,
    pub(super) flushed: bool,
    /// The change's time, given to every record it adds, updates or withdraws (one clock read
    /// and format per change, not per record).
    pub(super) now: String,
    /// Some chunk went in without the WAL: the commit must flush memtables first.
    pub(super) unlogged: bool,
    pub(super) types: BTreeSet<HashType>,
    pub(super) committed: bool,
    /// A replica applying a writer's pull: the writer's list metadata at `version`, which the
    /// commit stores as is.
    pub(super) replicated: Option<ListMeta>,
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
    pub(super) fn current(&self, prefix: &[u8]) -> Result<(Option<EntryRecord>, bool)> {
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

    pub(super) fn stage(&mut self, prefix: &[u8], rec: &EntryRecord, fresh: bool) -> Result<()> {
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
    pub(super) fn flush(&mut self, bulk: bool) -> Result<()> {
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

    pub(super) fn maybe_staged(&self, prefix: &[u8]) -> bool {
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

    pub(super) fn tombstone_prefix(
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

pub(super) fn same_content(a: &EntryRecord, b: &EntryRecord) -> bool {
    a.external_id == b.external_id
        && a.classification == b.classification
        && a.media_type == b.media_type
        && a.tags == b.tags
        && a.deleted_at.is_none()
        && b.deleted_at.is_none()
}
