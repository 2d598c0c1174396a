//! The in-memory matching index, built from the store.
//!
//! Per list, per hash type: a hash set for exact types, a flat bit-vector table for Hamming
//! types (searched with exact recall: every entry within the radius is returned), a flat byte
//! table for L2 types. Entry metadata stays in RocksDB and is read only for hits.
//!
//! Readers take an immutable [`Snapshot`] (an `Arc` swapped atomically); a list change builds
//! that list's new index off to the side and swaps it in, so matching never waits for an import
//! and sees each list at one committed version.

pub mod mih;
pub mod scan;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::store::{
    HashType, ListMeta, Metric, Store, StoreError, entry_prefix, parse_entry_prefix,
};

/// Matching settings.
#[derive(Debug, Clone)]
pub struct MatchConfig {
    /// Default thresholds by type (Hamming bits or L2 distance); types not named use
    /// [`HashType::default_threshold`].
    pub thresholds: BTreeMap<HashType, u32>,
    /// PDQ hashes below this quality are not matched (the answer says so).
    pub pdq_quality_floor: u8,
    /// How Hamming-distance tables are searched.
    pub index: IndexKind,
    /// Keep index snapshots (see [`snapshot`]) of lists with at least this many entries, so
    /// a cold start reads one file per list instead of every entry record. `None`: never.
    pub snapshot_min_entries: Option<u64>,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            thresholds: BTreeMap::new(),
            pdq_quality_floor: 50,
            index: IndexKind::Auto,
            snapshot_min_entries: Some(100_000),
        }
    }
}

/// The search structure of a Hamming-distance table. Both give exact recall; they trade memory
/// for speed (figures in docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexKind {
    /// Multi-index hashing for tables of at least [`AUTO_MULTI_INDEX_MIN`] entries, a scan
    /// below that.
    #[default]
    Auto,
    /// SIMD linear scan: memory = the raw hashes.
    Scan,
    /// Multi-index hashing: sublinear queries, memory = 3× the raw PDQ hashes.
    MultiIndex,
}

impl std::str::FromStr for IndexKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IndexKind::Auto),
            "scan" => Ok(IndexKind::Scan),
            "mih" | "multi-index" => Ok(IndexKind::MultiIndex),
            _ => Err(format!("unknown index kind {s:?}: use auto, scan or mih")),
        }
    }
}

/// Below this many entries a scan is as fast as probing (and costs a third of the memory).
pub const AUTO_MULTI_INDEX_MIN: usize = 16_384;

/// One Hamming-distance table, searched by scan or by multi-index hashing.
#[derive(Debug)]
pub enum BitIndex {
    Scan(BitTable),
    Multi(mih::MultiIndex),
}

impl BitIndex {
    /// Build from row-major packed hashes (`words` u64 per entry).
    pub fn build(kind: IndexKind, bytes: usize, rows: &[u64]) -> BitIndex {
        let words = bytes.div_ceil(8);
        let len = rows.len() / words.max(1);
        let multi = match kind {
            IndexKind::Scan => false,
            IndexKind::MultiIndex => true,
            IndexKind::Auto => len >= AUTO_MULTI_INDEX_MIN,
        };
        // Entry numbers are u32 in the multi-index.
        if multi && u32::try_from(len).is_ok() {
            BitIndex::Multi(mih::MultiIndex::build(bytes, words, rows))
        } else {
            let mut t = BitTable::new(bytes);
            t.reserve(len);
            for row in rows.chunks_exact(words) {
                t.push_words(row);
            }
            BitIndex::Scan(t)
        }
    }

    pub fn words(&self) -> usize {
        match self {
            BitIndex::Scan(t) => t.words,
            BitIndex::Multi(m) => m.words,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            BitIndex::Scan(t) => t.len,
            BitIndex::Multi(m) => m.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            BitIndex::Scan(_) => "scan",
            BitIndex::Multi(_) => "mih",
        }
    }

    pub fn search(&self, queries: &[Vec<u64>], radius: u32) -> Vec<scan::Hit> {
        match self {
            BitIndex::Scan(t) => scan::hamming_scan(t, queries, radius),
            BitIndex::Multi(m) => m.search(queries, radius),
        }
    }

    pub fn entry_bytes(&self, i: usize) -> Vec<u8> {
        match self {
            BitIndex::Scan(t) => t.entry_bytes(i),
            BitIndex::Multi(m) => m.entry_bytes(i),
        }
    }

    /// Every entry's packed words, little-endian, in entry order (for snapshots).
    pub fn write_rows(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        for i in 0..self.len() {
            for word in 0..self.words() {
                let x = match self {
                    BitIndex::Scan(t) => t.word(i, word),
                    BitIndex::Multi(m) => m.word(i, word),
                };
                w.write_all(&x.to_le_bytes())?;
            }
        }
        Ok(())
    }

    pub fn memory_bytes(&self) -> usize {
        match self {
            BitIndex::Scan(t) => t.data.len() * 8,
            BitIndex::Multi(m) => m.memory_bytes(),
        }
    }
}

/// One hash of a query, with its variants (PDQ: the 8 dihedral hashes, original first).
#[derive(Debug, Clone)]
pub struct QueryHash {
    pub hash_type: HashType,
    pub variants: Vec<Vec<u8>>,
    pub quality: Option<u8>,
}

/// Names of PDQ's dihedral variants, in the order `hashing::pdq` produces them.
pub const TRANSFORMS: [&str; 8] = crate::hashing::pdq::DIHEDRAL_NAMES;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Match {
    pub list: String,
    pub list_version: u64,
    pub hash_type: HashType,
    /// The list entry's value (canonical text).
    pub hash: String,
    /// The entry's identifier: its external id, or its value when it has none.
    pub entry: String,
    pub distance: u32,
    pub threshold: u32,
    /// Which query variant matched (PDQ: `orig`, `rot90`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suppressed {
    #[serde(rename = "match")]
    pub matched: Match,
    /// The negative-list entry that suppressed it.
    pub by: Match,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub hash_type: HashType,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MatchResult {
    pub matches: Vec<Match>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<Suppressed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// Bit vectors of one length in blocks of 8, word-planar: word `w` of entry `8b + l` is
/// `data[(b * words + w) * 8 + l]` (see `scan`). Padding lanes of the last block are zero and
/// ignored. Memory: exactly the hash bytes, rounded up to 8 entries.
#[derive(Debug, Default, Clone)]
pub struct BitTable {
    pub bytes: usize,
    pub words: usize,
    pub len: usize,
    pub data: Vec<u64>,
}

impl BitTable {
    pub fn new(bytes: usize) -> Self {
        BitTable {
            bytes,
            words: bytes.div_ceil(8),
            len: 0,
            data: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.push_words(&pack(bytes, self.words));
    }

    pub fn reserve(&mut self, entries: usize) {
        self.data
            .reserve(entries.div_ceil(scan::LANES) * scan::LANES * self.words);
    }

    /// Append one entry given packed (see [`pack`]).
    pub fn push_words(&mut self, words: &[u64]) {
        let lanes = scan::LANES;
        let (block, lane) = (self.len / lanes, self.len % lanes);
        if lane == 0 {
            self.data.resize(self.data.len() + self.words * lanes, 0);
        }
        let base = block * self.words * lanes + lane;
        for (w, x) in words.iter().enumerate().take(self.words) {
            self.data[base + w * lanes] = *x;
        }
        self.len += 1;
    }

    pub(crate) fn word(&self, i: usize, w: usize) -> u64 {
        let lanes = scan::LANES;
        self.data[((i / lanes) * self.words + w) * lanes + i % lanes]
    }

    /// Hamming distance of entry `i` to a packed query.
    pub fn distance(&self, i: usize, q: &[u64]) -> u32 {
        (0..self.words)
            .map(|w| (self.word(i, w) ^ q[w]).count_ones())
            .sum()
    }

    /// The stored bytes of entry `i`.
    pub fn entry_bytes(&self, i: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.words * 8);
        for w in 0..self.words {
            out.extend_from_slice(&self.word(i, w).to_be_bytes());
        }
        out.truncate(self.bytes);
        out
    }
}

/// Big-endian packing, zero-padded: equal Hamming distance to the byte form.
pub fn pack(bytes: &[u8], words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    for (i, chunk) in bytes.chunks(8).enumerate().take(words) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_be_bytes(b);
    }
    out
}

/// [`pack`], appending to `out` (no allocation per entry on the index build path).
pub fn pack_into(bytes: &[u8], words: usize, out: &mut Vec<u64>) {
    let start = out.len();
    out.resize(start + words, 0);
    for (i, chunk) in bytes.chunks(8).enumerate().take(words) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        out[start + i] = u64::from_be_bytes(b);
    }
}

/// The hash tables of a set of entries: a set per exact type, a searchable table per Hamming
/// type and length, concatenated vectors per L2 type.
#[derive(Debug, Default)]
pub struct Tables {
    pub(crate) exact: HashMap<HashType, HashSet<Box<[u8]>>>,
    pub(crate) bits: HashMap<(HashType, usize), BitIndex>,
    pub(crate) l2: HashMap<HashType, Vec<u8>>,
    pub entries: u64,
}

impl Tables {
    /// Bytes of RAM held by hash data (for sizing figures).
    pub fn hash_bytes(&self) -> usize {
        let e: usize = self
            .exact
            .values()
            .map(|s| s.iter().map(|h| h.len() + 16).sum::<usize>())
            .sum();
        let b: usize = self.bits.values().map(BitIndex::memory_bytes).sum();
        let l: usize = self.l2.values().map(Vec::len).sum();
        e + b + l
    }

    /// Raw hits of one query hash within `t`: (entry value, distance, variant index).
    fn search(&self, ty: &HashType, variants: &[Vec<u8>], t: u32) -> Vec<(Vec<u8>, u32, usize)> {
        let mut out = Vec::new();
        match ty.metric() {
            Metric::Exact => {
                if let Some(set) = self.exact.get(ty) {
                    for (vi, v) in variants.iter().enumerate() {
                        if set.contains(v.as_slice()) {
                            out.push((v.clone(), 0, vi));
                        }
                    }
                }
            }
            Metric::Hamming => {
                let Some(first) = variants.first() else {
                    return out;
                };
                let Some(table) = self.bits.get(&(ty.clone(), first.len())) else {
                    return out;
                };
                let queries: Vec<Vec<u64>> =
                    variants.iter().map(|v| pack(v, table.words())).collect();
                for hit in table.search(&queries, t) {
                    out.push((table.entry_bytes(hit.index), hit.distance, hit.variant));
                }
            }
            Metric::L2 => {
                let Some(data) = self.l2.get(ty) else {
                    return out;
                };
                for (vi, v) in variants.iter().enumerate() {
                    if v.is_empty() {
                        continue;
                    }
                    for e in data.chunks_exact(v.len()) {
                        let d2: u64 = e
                            .iter()
                            .zip(v)
                            .map(|(a, b)| {
                                let d = i64::from(*a) - i64::from(*b);
                                (d * d) as u64
                            })
                            .sum();
                        let d = (d2 as f64).sqrt() as u32;
                        if d <= t {
                            out.push((e.to_vec(), d, vi));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Collects entries (sorted by type then value, as the store yields them, or in any order)
/// into [`Tables`].
#[derive(Default)]
struct TableBuilder {
    exact: HashMap<HashType, HashSet<Box<[u8]>>>,
    /// Packed rows of Hamming tables, turned into search structures by `seal`.
    rows: HashMap<(HashType, usize), Vec<u64>>,
    l2: HashMap<HashType, Vec<u8>>,
    entries: u64,
    run: Option<Run>,
}

impl TableBuilder {
    /// Add one entry. Work goes in runs of one (type, length): the maps are touched once per
    /// run, not once per entry.
    fn push(&mut self, ty: &str, hash: &[u8]) -> Result<(), StoreError> {
        let same = self.run.as_ref().is_some_and(|r| {
            r.ty.as_str() == ty && (r.len == hash.len() || r.ty.metric() != Metric::Hamming)
        });
        if !same {
            if let Some(r) = self.run.take() {
                self.finish(r);
            }
            self.run = Some(self.start(HashType::new(ty)?, hash.len()));
        }
        if let Some(r) = self.run.as_mut() {
            r.push(hash);
        }
        Ok(())
    }

    fn start(&mut self, ty: HashType, len: usize) -> Run {
        let store = match ty.metric() {
            Metric::Exact => RunStore::Exact(self.exact.remove(&ty).unwrap_or_default()),
            Metric::Hamming => RunStore::Bits(
                self.rows.remove(&(ty.clone(), len)).unwrap_or_default(),
                len.div_ceil(8),
            ),
            Metric::L2 => RunStore::L2(self.l2.remove(&ty).unwrap_or_default()),
        };
        Run {
            ty,
            len,
            store,
            count: 0,
        }
    }

    fn finish(&mut self, r: Run) {
        self.entries += r.count;
        match r.store {
            RunStore::Exact(s) => {
                self.exact.insert(r.ty, s);
            }
            RunStore::Bits(rows, _) => {
                self.rows.insert((r.ty, r.len), rows);
            }
            RunStore::L2(v) => {
                self.l2.insert(r.ty, v);
            }
        }
    }

    fn seal(mut self, kind: IndexKind) -> Tables {
        if let Some(r) = self.run.take() {
            self.finish(r);
        }
        Tables {
            exact: self.exact,
            bits: self
                .rows
                .into_iter()
                .map(|((ty, len), rows)| {
                    let idx = BitIndex::build(kind, len, &rows);
                    ((ty, len), idx)
                })
                .collect(),
            l2: self.l2,
            entries: self.entries,
        }
    }
}

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

    fn threshold(&self, cfg: &MatchConfig, ty: &HashType, bits: usize) -> u32 {
        let global = cfg
            .thresholds
            .get(ty)
            .copied()
            .unwrap_or_else(|| ty.default_threshold(bits));
        // A list may be stricter than the default, never looser.
        self.thresholds.get(ty).map_or(global, |&t| t.min(global))
    }

    /// Raw hits of one query hash: (entry value, distance, variant index, threshold).
    fn search(&self, cfg: &MatchConfig, q: &QueryHash) -> Vec<(Vec<u8>, u32, usize, u32)> {
        let t = match q.hash_type.metric() {
            Metric::Exact => 0,
            Metric::Hamming => {
                let bits = q.variants.first().map_or(0, |v| v.len() * 8);
                self.threshold(cfg, &q.hash_type, bits)
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
        let mut out: Vec<_> = out.into_iter().map(|(v, d, vi)| (v, d, vi, t)).collect();
        // One hit per entry: the closest variant.
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

/// Entries of one (type, length) being added to a list index.
struct Run {
    ty: HashType,
    len: usize,
    store: RunStore,
    count: u64,
}

enum RunStore {
    Exact(HashSet<Box<[u8]>>),
    /// Packed rows and words per row.
    Bits(Vec<u64>, usize),
    L2(Vec<u8>),
}

impl Run {
    fn push(&mut self, hash: &[u8]) {
        self.count += 1;
        match &mut self.store {
            RunStore::Exact(s) => {
                s.insert(hash.into());
            }
            RunStore::Bits(rows, words) => pack_into(hash, *words, rows),
            RunStore::L2(v) => v.extend_from_slice(hash),
        }
    }
}

/// All lists' indexes at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub lists: BTreeMap<u32, Arc<ListIndex>>,
}

/// Stops the refresher thread when dropped.
pub struct Refresher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The matcher: a store and a live, swappable index over it.
pub struct Matcher {
    store: Arc<Store>,
    snapshot: ArcSwap<Snapshot>,
    config: MatchConfig,
    /// Serialises index rebuilds (not reads).
    rebuild: std::sync::Mutex<()>,
    /// Hands rebuilt lists to the snapshot writer thread.
    snapshots: Option<std::sync::Mutex<std::sync::mpsc::Sender<Arc<ListIndex>>>>,
}

/// Where a store's index snapshots live.
pub fn snapshot_dir(store: &Store) -> std::path::PathBuf {
    store.dir().join("index")
}

/// One list's index at open: its snapshot (plus the changes since) when it has a good one,
/// else built from the store.
fn open_list(
    store: &Store,
    meta: &ListMeta,
    config: &MatchConfig,
) -> Result<ListIndex, StoreError> {
    if config.snapshot_min_entries.is_some() {
        match snapshot::load(&snapshot_dir(store), meta, config.index) {
            Ok(Some((version, base))) => {
                if let Some(idx) = ListIndex::on_base(store, meta, Arc::new(base), version, true)? {
                    return Ok(idx);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(list = %meta.name, error = %e, "index snapshot unusable; rebuilding from the store");
            }
        }
    }
    ListIndex::build(store, meta, config.index)
}

impl Matcher {
    /// Build the index of every list (cold start): from its snapshot when one matches the
    /// list's committed version, else from the store.
    pub fn open(store: Arc<Store>, config: MatchConfig) -> Result<Matcher, StoreError> {
        use rayon::prelude::*;
        let metas = store.lists()?;
        let built: Result<Vec<ListIndex>, StoreError> = metas
            .par_iter()
            .map(|m| open_list(&store, m, &config))
            .collect();
        let lists: BTreeMap<u32, Arc<ListIndex>> =
            built?.into_iter().map(|l| (l.id, Arc::new(l))).collect();
        let snapshots = config.snapshot_min_entries.map(|_| {
            let dir = snapshot_dir(&store);
            let (tx, rx) = std::sync::mpsc::channel::<Arc<ListIndex>>();
            // One writer, off the matching path; it ends when the matcher is dropped.
            let spawned = std::thread::Builder::new()
                .name("baken-index-snapshot".into())
                .spawn(move || {
                    for idx in rx {
                        match snapshot::write(&dir, &idx) {
                            Ok(p) => tracing::info!(list = %idx.name, version = idx.version, path = %p.display(), "index snapshot written"),
                            Err(e) => tracing::warn!(list = %idx.name, error = %e, "index snapshot not written"),
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no index snapshot writer");
            }
            std::sync::Mutex::new(tx)
        });
        let m = Matcher {
            store,
            snapshot: ArcSwap::from_pointee(Snapshot {
                lists: lists.clone(),
            }),
            config,
            rebuild: std::sync::Mutex::new(()),
            snapshots,
        };
        for l in lists.values() {
            m.keep_snapshot(l);
        }
        snapshot::remove_dead(&snapshot_dir(&m.store), |id| lists.contains_key(&id));
        Ok(m)
    }

    /// Queue a freshly built list for a snapshot when it is large enough to be worth one.
    fn keep_snapshot(&self, idx: &Arc<ListIndex>) {
        let (Some(min), Some(tx)) = (self.config.snapshot_min_entries, &self.snapshots) else {
            return;
        };
        if idx.from_snapshot {
            return;
        }
        if idx.entries >= min {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(idx.clone());
        } else {
            snapshot::remove_others(&snapshot_dir(&self.store), idx.id, None);
        }
    }

    /// Write every list's snapshot now, whatever its size (tests; a clean shutdown).
    pub fn write_snapshots(&self) -> Result<usize, snapshot::SnapshotError> {
        let snap = self.snapshot.load_full();
        for l in snap.lists.values() {
            snapshot::write(&snapshot_dir(&self.store), l)?;
        }
        Ok(snap.lists.len())
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Bring every list whose committed version differs from the index up to date. Cheap when
    /// nothing changed (one read of the list records); returns the lists rebuilt.
    pub fn refresh(&self) -> Result<Vec<String>, StoreError> {
        let _g = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let metas = self.store.lists()?;
        let cur = self.snapshot.load_full();
        let mut lists = cur.lists.clone();
        let mut changed = Vec::new();
        for m in &metas {
            let stale = lists.get(&m.id).is_none_or(|l| {
                l.version != m.version || l.negative != m.negative || l.thresholds != m.thresholds
            });
            if stale {
                // Apply the change log to the current base when the change is small; a full
                // rebuild (and a new snapshot) otherwise.
                let layered = match lists.get(&m.id) {
                    Some(l) => ListIndex::on_base(
                        &self.store,
                        m,
                        l.base().clone(),
                        l.base_version,
                        l.from_snapshot,
                    )?,
                    None => None,
                };
                let idx = match layered {
                    Some(idx) => Arc::new(idx),
                    None => {
                        let idx = Arc::new(ListIndex::build(&self.store, m, self.config.index)?);
                        self.keep_snapshot(&idx);
                        idx
                    }
                };
                lists.insert(m.id, idx);
                changed.push(m.name.clone());
            }
        }
        let live: HashSet<u32> = metas.iter().map(|m| m.id).collect();
        lists.retain(|id, _| {
            let keep = live.contains(id);
            if !keep {
                snapshot::remove_others(&snapshot_dir(&self.store), *id, None);
            }
            keep
        });
        if !changed.is_empty() || lists.len() != cur.lists.len() {
            self.snapshot.store(Arc::new(Snapshot { lists }));
        }
        Ok(changed)
    }

    /// Keep the index live: a background thread calls [`Matcher::refresh`] every `interval`
    /// until the matcher is dropped (or the returned guard is).
    pub fn start_refresher(this: &Arc<Matcher>, interval: std::time::Duration) -> Refresher {
        let weak = Arc::downgrade(this);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("baken-index-refresh".into())
            .spawn(move || {
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    let Some(m) = weak.upgrade() else { break };
                    match m.refresh() {
                        Ok(changed) if !changed.is_empty() => {
                            tracing::info!(lists = ?changed, "index refreshed");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "index refresh failed"),
                    }
                }
            })
            .ok();
        Refresher { stop, handle }
    }

    /// Match a query against all lists, or only those named (negative lists always apply).
    pub fn match_query(
        &self,
        query: &[QueryHash],
        only: Option<&[String]>,
    ) -> Result<MatchResult, StoreError> {
        let snap = self.snapshot.load_full();
        let mut result = MatchResult::default();
        let mut positive = Vec::new();
        let mut negative = Vec::new();
        for q in query {
            if q.hash_type.as_str() == "pdq"
                && let Some(quality) = q.quality
                && quality < self.config.pdq_quality_floor
            {
                result.skipped.push(Skipped {
                    hash_type: q.hash_type.clone(),
                    reason: format!(
                        "PDQ quality {quality} is below the floor of {}: not matched",
                        self.config.pdq_quality_floor
                    ),
                });
                continue;
            }
            for list in snap.lists.values() {
                let selected = only.is_none_or(|names| names.iter().any(|n| n == &list.name));
                if !selected && !list.negative {
                    continue;
                }
                for (value, distance, variant, threshold) in list.search(&self.config, q) {
                    let m =
                        self.describe(list, &q.hash_type, &value, distance, variant, threshold)?;
                    if list.negative {
                        negative.push(m);
                    } else {
                        positive.push(m);
                    }
                }
            }
        }
        for m in positive {
            // An exact negative (the very same file is known benign) suppresses everything;
            // a perceptual one suppresses matches of its own hash type.
            let by = negative
                .iter()
                .find(|n| n.hash_type == m.hash_type || n.hash_type.metric() == Metric::Exact);
            match by {
                Some(n) => result.suppressed.push(Suppressed {
                    matched: m,
                    by: n.clone(),
                }),
                None => result.matches.push(m),
            }
        }
        result
            .matches
            .sort_by(|a, b| a.distance.cmp(&b.distance).then(a.list.cmp(&b.list)));
        Ok(result)
    }

    fn describe(
        &self,
        list: &ListIndex,
        ty: &HashType,
        value: &[u8],
        distance: u32,
        variant: usize,
        threshold: u32,
    ) -> Result<Match, StoreError> {
        let rec = self
            .store
            .entry_at(&entry_prefix(list.id, ty, value), list.version)?;
        let hash = ty.format_value(value);
        let (external_id, classification, media_type) = match rec {
            Some(r) => (r.external_id, r.classification, r.media_type),
            None => (None, None, None),
        };
        Ok(Match {
            list: list.name.clone(),
            list_version: list.version,
            hash_type: ty.clone(),
            entry: external_id.unwrap_or_else(|| hash.clone()),
            hash,
            distance,
            threshold,
            transform: (ty.as_str() == "pdq")
                .then(|| TRANSFORMS.get(variant).copied())
                .flatten(),
            classification,
            media_type,
        })
    }
}
