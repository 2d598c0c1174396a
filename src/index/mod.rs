//! The in-memory matching index, built from the store.
//!
//! Per list, per hash type: a hash set for exact types, a flat bit-vector table for Hamming
//! types (searched with exact recall: every entry within the radius is returned), a flat byte
//! table for L2 types. Entry metadata stays in RocksDB and is read only for hits.
//!
//! Readers take an immutable [`Snapshot`] (an `Arc` swapped atomically); a list change builds
//! that list's new index off to the side and swaps it in, so matching never waits for an import
//! and sees each list at one committed version.

pub mod scan;

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
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            thresholds: BTreeMap::new(),
            pdq_quality_floor: 50,
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
        let lanes = scan::LANES;
        let (block, lane) = (self.len / lanes, self.len % lanes);
        if lane == 0 {
            self.data.resize(self.data.len() + self.words * lanes, 0);
        }
        let base = block * self.words * lanes + lane;
        for (w, chunk) in bytes.chunks(8).enumerate().take(self.words) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.data[base + w * lanes] = u64::from_be_bytes(b);
        }
        self.len += 1;
    }

    fn word(&self, i: usize, w: usize) -> u64 {
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

/// One list's index at one version.
#[derive(Debug, Default)]
pub struct ListIndex {
    pub id: u32,
    pub name: String,
    pub version: u64,
    pub negative: bool,
    pub thresholds: BTreeMap<HashType, u32>,
    exact: HashMap<HashType, HashSet<Box<[u8]>>>,
    bits: HashMap<(HashType, usize), BitTable>,
    l2: HashMap<HashType, Vec<u8>>,
    pub entries: u64,
}

impl ListIndex {
    /// Build from the store: the committed, non-deleted entries of the list.
    pub fn build(store: &Store, meta: &ListMeta) -> Result<ListIndex, StoreError> {
        let mut idx = ListIndex {
            id: meta.id,
            name: meta.name.clone(),
            version: meta.version,
            negative: meta.negative,
            thresholds: meta.thresholds.clone(),
            ..ListIndex::default()
        };
        // Entries arrive sorted by type, then value: work in runs of one (type, length) and
        // touch the maps once per run, not once per entry.
        let mut run: Option<Run> = None;
        store.scan_list_raw(meta, |prefix, deleted, _| {
            if deleted {
                return Ok(());
            }
            let Some((_, ty, hash)) = parse_entry_prefix(prefix) else {
                return Err(StoreError::Corrupt("entry key".into()));
            };
            let same = run.as_ref().is_some_and(|r| {
                r.ty.as_str() == ty && (r.len == hash.len() || r.ty.metric() != Metric::Hamming)
            });
            if !same {
                if let Some(r) = run.take() {
                    idx.finish(r);
                }
                run = Some(idx.start(HashType::new(ty)?, hash.len()));
            }
            if let Some(r) = run.as_mut() {
                r.push(hash);
            }
            Ok(())
        })?;
        if let Some(r) = run.take() {
            idx.finish(r);
        }
        Ok(idx)
    }

    fn start(&mut self, ty: HashType, len: usize) -> Run {
        let store = match ty.metric() {
            Metric::Exact => RunStore::Exact(self.exact.remove(&ty).unwrap_or_default()),
            Metric::Hamming => RunStore::Bits(
                self.bits
                    .remove(&(ty.clone(), len))
                    .unwrap_or_else(|| BitTable::new(len)),
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
            RunStore::Bits(t) => {
                self.bits.insert((r.ty, r.len), t);
            }
            RunStore::L2(v) => {
                self.l2.insert(r.ty, v);
            }
        }
    }

    /// Bytes of RAM held by hash data (for sizing figures).
    pub fn hash_bytes(&self) -> usize {
        let e: usize = self
            .exact
            .values()
            .map(|s| s.iter().map(|h| h.len() + 16).sum::<usize>())
            .sum();
        let b: usize = self.bits.values().map(|t| t.data.len() * 8).sum();
        let l: usize = self.l2.values().map(Vec::len).sum();
        e + b + l
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
        let mut out = Vec::new();
        match q.hash_type.metric() {
            Metric::Exact => {
                if let Some(set) = self.exact.get(&q.hash_type) {
                    for (vi, v) in q.variants.iter().enumerate() {
                        if set.contains(v.as_slice()) {
                            out.push((v.clone(), 0, vi, 0));
                        }
                    }
                }
            }
            Metric::Hamming => {
                let Some(first) = q.variants.first() else {
                    return out;
                };
                let Some(table) = self.bits.get(&(q.hash_type.clone(), first.len())) else {
                    return out;
                };
                let t = self.threshold(cfg, &q.hash_type, first.len() * 8);
                let queries: Vec<Vec<u64>> =
                    q.variants.iter().map(|v| pack(v, table.words)).collect();
                for hit in scan::hamming_scan(table, &queries, t) {
                    out.push((table.entry_bytes(hit.index), hit.distance, hit.variant, t));
                }
            }
            Metric::L2 => {
                let Some(data) = self.l2.get(&q.hash_type) else {
                    return out;
                };
                let t = self.threshold(cfg, &q.hash_type, 0);
                for (vi, v) in q.variants.iter().enumerate() {
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
                            out.push((e.to_vec(), d, vi, t));
                        }
                    }
                }
            }
        }
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
    Bits(BitTable),
    L2(Vec<u8>),
}

impl Run {
    fn push(&mut self, hash: &[u8]) {
        self.count += 1;
        match &mut self.store {
            RunStore::Exact(s) => {
                s.insert(hash.into());
            }
            RunStore::Bits(t) => t.push(hash),
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
}

impl Matcher {
    /// Build the index of every list (cold start).
    pub fn open(store: Arc<Store>, config: MatchConfig) -> Result<Matcher, StoreError> {
        use rayon::prelude::*;
        let metas = store.lists()?;
        let built: Result<Vec<ListIndex>, StoreError> = metas
            .par_iter()
            .map(|m| ListIndex::build(&store, m))
            .collect();
        let lists = built?.into_iter().map(|l| (l.id, Arc::new(l))).collect();
        Ok(Matcher {
            store,
            snapshot: ArcSwap::from_pointee(Snapshot { lists }),
            config,
            rebuild: std::sync::Mutex::new(()),
        })
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
                lists.insert(m.id, Arc::new(ListIndex::build(&self.store, m)?));
                changed.push(m.name.clone());
            }
        }
        let live: HashSet<u32> = metas.iter().map(|m| m.id).collect();
        lists.retain(|id, _| live.contains(id));
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
