//! The store's side of list replication: what a writer sends for "changes since version N",
//! and how a replica applies it as one atomic change at the writer's version number.
//!
//! A replica keeps the writer's list ids, names and version numbers, so an entry key, a list
//! version and a match's `list_version` mean the same on every server. Applying a pull is an
//! ordinary [`Change`]: records staged at the target version (invisible until the commit, rolled
//! back after a crash), then one synced batch stores the writer's list metadata.

use super::{
    CF_NAMES, Change, ListMeta, Result, Store, StoreError, decode_record, parse_entry_prefix,
};

/// Past this many changed entries since the replica's version, the writer sends the list's
/// current records instead of the change log's (bounded memory for the de-duplication; the
/// result is the same: every record the replica lacks, at the target version).
const DELTA_LIMIT: usize = 262_144;

impl Store {
    /// Hand `f` every entry record a replica at version `from` needs to reach `meta.version`:
    /// the records (at `meta.version`) of the entries changed in between, or, for a replica
    /// with nothing yet or far behind, every record of the list. Tombstones are included.
    /// Records are read at a fixed version, so changes committed meanwhile do not leak in.
    pub fn replication_records(
        &self,
        meta: &ListMeta,
        from: u64,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        if from > meta.version {
            return Err(StoreError::Invalid(format!(
                "list {} is at version {} here, but the replica asks from version {from}: \
                 the replica is ahead of this writer (was the writer restored from an older \
                 backup?); rebuild the replica from an empty data directory",
                meta.name, meta.version
            )));
        }
        if from == meta.version {
            return Ok(());
        }
        if from > 0
            && let Some(mut prefixes) =
                self.changed_prefixes(meta.id, from, meta.version, DELTA_LIMIT)?
        {
            prefixes.sort_unstable();
            prefixes.dedup();
            for p in prefixes {
                if let Some(v) = self.raw_entry_at(&p, meta.version)? {
                    f(&p, &v)?;
                }
            }
            return Ok(());
        }
        self.scan_list_raw(meta, |p, _, v| f(p, v))
    }

    /// Begin applying a writer's pull of list `writer` (its metadata at the pull's target
    /// version). A list new to this replica takes the writer's id and name.
    pub fn begin_replicated(&self, writer: &ListMeta, actor: &str) -> Result<Change<'_>> {
        let guard = self.lock();
        let diverged = |what: String| {
            StoreError::Invalid(format!(
                "{what}: this store was not made by following this writer; start the replica \
                 with an empty data directory"
            ))
        };
        let by_name = self
            .db
            .get_cf(self.cf(CF_NAMES)?, writer.name.as_bytes())?
            .and_then(|v| v.as_slice().try_into().ok().map(u32::from_be_bytes));
        let local = match self.list_by_id(writer.id)? {
            Some(l) if l.name != writer.name => {
                return Err(diverged(format!(
                    "list id {} is {:?} here but {:?} on the writer",
                    writer.id, l.name, writer.name
                )));
            }
            Some(l) => l,
            None if by_name.is_some() => {
                return Err(diverged(format!(
                    "list {:?} has id {:?} here but {} on the writer",
                    writer.name, by_name, writer.id
                )));
            }
            // New here: nothing is written until the commit, which stores the list record
            // and its name with the entries (an unverified pull leaves no trace). Records
            // staged meanwhile belong to a list id without a record; `open` rolls those back.
            None => ListMeta {
                version: 0,
                live_entries: 0,
                tombstones: 0,
                hash_types: Default::default(),
                ..writer.clone()
            },
        };
        if writer.version < local.version {
            return Err(StoreError::Invalid(format!(
                "list {} is at version {} here but {} on the writer: the writer went back in \
                 time (restored from an older backup?); rebuild this replica from an empty \
                 data directory",
                writer.name, local.version, writer.version
            )));
        }
        Ok(self.change(guard, local, writer.version, actor, "list.replicate"))
    }
}

impl Change<'_> {
    /// Commit a replicated change: the list takes the writer's (verified) metadata as is.
    pub fn commit_replicated(
        mut self,
        writer: ListMeta,
        detail: Option<String>,
    ) -> Result<(ListMeta, super::AuditRecord)> {
        if writer.id != self.meta.id || writer.version != self.version {
            return Err(StoreError::Invalid(format!(
                "replicated metadata of list {} at version {} does not fit this change (version {})",
                writer.name, writer.version, self.version
            )));
        }
        self.replicated = Some(writer);
        self.commit(detail)
    }

    /// Stage one record of a writer's pull: `key` is the entry's key without version, `value`
    /// its stored value. Checked before staging: the key belongs to this list, the value
    /// decodes, and it was written at or before the pull's version.
    pub fn put_replicated(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (list, _, _) = parse_entry_prefix(key)
            .ok_or_else(|| StoreError::Invalid("replicated entry: malformed key".into()))?;
        if list != self.meta.id {
            return Err(StoreError::Invalid(format!(
                "replicated entry of list id {list} in a pull of list id {}",
                self.meta.id
            )));
        }
        let rec = decode_record(key, value)?;
        if rec.version > self.version {
            return Err(StoreError::Invalid(format!(
                "replicated entry written at version {} in a pull up to version {}",
                rec.version, self.version
            )));
        }
        if rec.is_deleted() {
            self.counts.tombstoned += 1;
        } else {
            self.counts.updated += 1;
        }
        let fresh = !self.chunk_keys.contains(key);
        self.stage(key, &rec, fresh)
    }
}
