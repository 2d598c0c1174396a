//! [`ListIndex`]: one list's index, a base at one version plus a delta of the changes since.

use super::*;

/// One list's index at one version: the tables of a base version (a full build, or a snapshot)
/// plus what changed since — entries added (a small table, scanned) and entries gone (filtered
/// out of the base's hits). A refresh after a small change applies only the change log since
/// the base, so a list of 10M entries shows an import of a few thousand within a second instead
/// of a full rebuild; past [`ListIndex::delta_limit`] changes the list is rebuilt.
#[derive(Debug, Default)]
pub struct ListIndex {
    pub id: u32,
    pub name: String,
    pub version: u64,
    pub negative: bool,
    pub thresholds: BTreeMap<HashType, u32>,
    pub video: VideoRule,
    /// Live entries at `version`.
    pub entries: u64,
    /// The base came from an index snapshot rather than from the store.
    pub from_snapshot: bool,
    pub base_version: u64,
    base: Arc<Tables>,
    delta: Tables,
    /// Entry prefixes live at `base_version` but not at `version`.
    removed: HashSet<Box<[u8]>>,
}

impl ListIndex {
    /// Build from the store: the committed, non-deleted entries of the list.
    pub fn build(store: &Store, meta: &ListMeta, kind: IndexKind) -> Result<ListIndex, StoreError> {
        let mut b = TableBuilder::default();
        store.scan_list_raw(meta, |prefix, deleted, _| {
            if deleted {
                return Ok(());
            }
            let Some((_, ty, hash)) = parse_entry_prefix(prefix) else {
                return Err(StoreError::Corrupt("entry key".into()));
            };
            b.push(ty, hash)
        })?;
        let base = b.seal(kind);
        Ok(ListIndex {
            id: meta.id,
            name: meta.name.clone(),
            version: meta.version,
            negative: meta.negative,
            thresholds: meta.thresholds.clone(),
            video: meta.video,
            entries: base.entries,
            from_snapshot: false,
            base_version: meta.version,
            base: Arc::new(base),
            delta: Tables::default(),
            removed: HashSet::new(),
        })
    }

    /// How many changes since the base are applied as a delta before a full rebuild is cheaper.
    pub fn delta_limit(base_entries: u64) -> usize {
        usize::try_from(base_entries / 8)
            .unwrap_or(usize::MAX)
            .max(65_536)
    }

    /// The list at `meta.version` as `base` (its tables at `base_version`) plus the changes
    /// since. `None` when there are more than [`ListIndex::delta_limit`] of them.
    pub fn on_base(
        store: &Store,
        meta: &ListMeta,
        base: Arc<Tables>,
        base_version: u64,
        from_snapshot: bool,
    ) -> Result<Option<ListIndex>, StoreError> {
        if base_version > meta.version {
            return Ok(None);
        }
        let limit = Self::delta_limit(base.entries);
        let Some(changed) = store.changed_prefixes(meta.id, base_version, meta.version, limit)?
        else {
            return Ok(None);
        };
        let live = |rec: Option<crate::store::EntryRecord>| rec.is_some_and(|r| !r.is_deleted());
        let mut added = TableBuilder::default();
        let mut removed = HashSet::new();
        let mut seen = HashSet::new();
        for prefix in changed {
            if !seen.insert(prefix.clone()) {
                continue;
            }
            let was = base_version > 0 && live(store.entry_at(&prefix, base_version)?);
            let is = live(store.entry_at(&prefix, meta.version)?);
            if is && !was {
                let Some((_, ty, hash)) = parse_entry_prefix(&prefix) else {
                    return Err(StoreError::Corrupt("change-log prefix".into()));
                };
                added.push(ty, hash)?;
            } else if was && !is {
                removed.insert(prefix.into_boxed_slice());
            }
        }
        let delta = added.seal(IndexKind::Scan);
        Ok(Some(ListIndex {
            id: meta.id,
            name: meta.name.clone(),
            version: meta.version,
            negative: meta.negative,
            thresholds: meta.thresholds.clone(),
            video: meta.video,
            entries: (base.entries + delta.entries).saturating_sub(removed.len() as u64),
            from_snapshot,
            base_version,
            base,
            delta,
            removed,
        }))
    }

    /// The base tables (what a snapshot holds).
    pub fn base(&self) -> &Arc<Tables> {
        &self.base
    }

    /// Changes applied on top of the base: (added, removed).
    pub fn delta_sizes(&self) -> (u64, usize) {
        (self.delta.entries, self.removed.len())
    }

    /// Bytes of RAM held by hash data (for sizing figures).
    pub fn hash_bytes(&self) -> usize {
        self.base.hash_bytes()
            + self.delta.hash_bytes()
            + self.removed.iter().map(|p| p.len() + 16).sum::<usize>()
    }

    pub(super) fn threshold(&self, cfg: &MatchConfig, ty: &HashType, bits: usize) -> u32 {
        let global = cfg
            .thresholds
            .get(ty)
            .copied()
            .unwrap_or_else(|| ty.default_threshold(bits));
        // A list may be stricter than the default, never looser.
        self.thresholds.get(ty).map_or(global, |&t| t.min(global))
    }

    /// Raw hits of one query hash: (entry value, distance, variant index, threshold), the
    /// closest variant per entry.
    pub(super) fn search(
        &self,
        cfg: &MatchConfig,
        q: &QueryHash,
    ) -> Vec<(Vec<u8>, u32, usize, u32)> {
        let mut out = self.search_all(cfg, q);
        // One hit per entry: the closest variant.
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// Live frame rows of the listed video `id` (base + added − removed).
    pub(super) fn live_frames(&self, id: &[u8]) -> u64 {
        let count = |t: &Tables| {
            t.bits
                .values()
                .filter_map(BitIndex::video)
                .map(|v| u64::from(v.frames_of(id)))
                .sum::<u64>()
        };
        let removed = self
            .removed
            .iter()
            .filter(|p| {
                parse_entry_prefix(p)
                    .is_some_and(|(_, ty, h)| ty == "vpdq" && h.len() == 64 && &h[32..] == id)
            })
            .count() as u64;
        (count(&self.base) + count(&self.delta)).saturating_sub(removed)
    }

    /// Every hit of every variant (a video's frames: each frame's hits count).
    pub(super) fn search_all(
        &self,
        cfg: &MatchConfig,
        q: &QueryHash,
    ) -> Vec<(Vec<u8>, u32, usize, u32)> {
        let t = match q.hash_type.metric() {
            Metric::Exact => 0,
            Metric::Hamming => {
                let bits = q.variants.first().map_or(0, |v| v.len() * 8);
                let t = self.threshold(cfg, &q.hash_type, bits);
                if q.candidate.is_some() {
                    t.min(cfg.candidate_threshold)
                } else {
                    t
                }
            }
            Metric::L2 => self.threshold(cfg, &q.hash_type, 0),
        };
        let mut out = self.base.search(&q.hash_type, &q.variants, t);
        if !self.removed.is_empty() {
            out.retain(|(v, ..)| {
                !self
                    .removed
                    .contains(entry_prefix(self.id, &q.hash_type, v).as_slice())
            });
        }
        out.extend(self.delta.search(&q.hash_type, &q.variants, t));
        out.into_iter().map(|(v, d, vi)| (v, d, vi, t)).collect()
    }
}
