//! [`Matcher`]: the live, swappable index over a store (snapshots, refresher, cold start from
//! snapshot files) and the match itself (thresholds, quality floor, negative lists).

use super::*;

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
    crate::datadir::DataDir::new(store.dir()).index()
}

/// One list's index at open: its snapshot (plus the changes since) when it has a good one,
/// else built from the store.
pub(super) fn open_list(
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
    pub(super) fn keep_snapshot(&self, idx: &Arc<ListIndex>) {
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
                l.version != m.version
                    || l.negative != m.negative
                    || l.thresholds != m.thresholds
                    || l.video != m.video
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
            if q.timestamps.is_some() && q.variants.is_empty() {
                result.skipped.push(Skipped {
                    hash_type: q.hash_type.clone(),
                    reason: format!(
                        "the video has no frame of quality {} or more: not matched",
                        crate::hashing::vpdq::QUALITY_THRESHOLD
                    ),
                });
                continue;
            }
            if q.candidate.is_some()
                && q.quality.unwrap_or(0)
                    < self
                        .config
                        .candidate_quality_floor
                        .max(self.config.pdq_quality_floor)
            {
                // A derived view too flat to hash is no answer about the image, whose own
                // hashes were matched: not worth a `skipped` line.
                continue;
            }
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
                if let Some(ts) = &q.timestamps {
                    let found = self.match_frames(list, q, ts)?;
                    if list.negative {
                        negative.extend(found);
                    } else {
                        positive.extend(found);
                    }
                    continue;
                }
                for (value, distance, variant, threshold) in list.search(&self.config, q) {
                    let mut m =
                        self.describe(list, &q.hash_type, &value, distance, variant, threshold)?;
                    m.candidate = q.candidate;
                    if list.negative {
                        negative.push(m);
                    } else {
                        positive.push(m);
                    }
                }
            }
        }
        // One match per listed entry: the image's own before a derived view's, then the
        // closest (the whole image and a view can both be within reach of one entry).
        positive.sort_by(|a: &Match, b: &Match| {
            (
                &a.list,
                &a.hash_type,
                &a.hash,
                a.candidate.is_some(),
                a.distance,
            )
                .cmp(&(
                    &b.list,
                    &b.hash_type,
                    &b.hash,
                    b.candidate.is_some(),
                    b.distance,
                ))
        });
        positive.dedup_by(|a, b| {
            a.video.is_none()
                && b.video.is_none()
                && (&a.list, &a.hash_type, &a.hash) == (&b.list, &b.hash_type, &b.hash)
        });
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

    /// A video's frames against one list. A `vpdq` list matches per listed video by the list's
    /// [`VideoRule`](crate::store::VideoRule); any other type (an image PDQ list) per entry,
    /// when any frame is within its threshold — a known image shown in the video.
    fn match_frames(
        &self,
        list: &ListIndex,
        q: &QueryHash,
        timestamps: &[f64],
    ) -> Result<Vec<Match>, StoreError> {
        struct Group {
            query_frames: std::collections::BTreeSet<usize>,
            listed_frames: HashSet<Vec<u8>>,
            best: (u32, Vec<u8>, usize, u32),
        }
        let video = q.hash_type.as_str() == "vpdq";
        let mut groups: BTreeMap<Vec<u8>, Group> = BTreeMap::new();
        for (value, distance, variant, threshold) in list.search_all(&self.config, q) {
            let key = if video && value.len() == 64 {
                value[32..].to_vec()
            } else {
                value.clone()
            };
            let g = groups.entry(key).or_insert_with(|| Group {
                query_frames: Default::default(),
                listed_frames: HashSet::new(),
                best: (u32::MAX, Vec::new(), 0, threshold),
            });
            g.query_frames.insert(variant);
            if distance < g.best.0 {
                g.best = (distance, value.clone(), variant, threshold);
            }
            g.listed_frames.insert(value);
        }
        let queried = q.variants.len().max(1) as f64;
        let mut out = Vec::new();
        for (key, g) in groups {
            let stamps = g
                .query_frames
                .iter()
                .filter_map(|&i| timestamps.get(i).copied())
                .collect();
            let (distance, value, variant, threshold) = g.best;
            let shares = if video {
                let live = list.live_frames(&key);
                if live == 0 {
                    continue;
                }
                let listed = (g.listed_frames.len() as u64).min(live);
                let qp = g.query_frames.len() as f64 * 100.0 / queried;
                let cp = listed as f64 * 100.0 / live as f64;
                if qp < list.video.query_match_percent || cp < list.video.compared_match_percent {
                    continue;
                }
                (Some(qp), Some(cp), Some(live), Some(listed))
            } else {
                (None, None, None, None)
            };
            let mut m = self.describe(list, &q.hash_type, &value, distance, variant, threshold)?;
            if video {
                // The entry is the listed video: name it by its id, not one frame's row.
                m.hash = hex::encode(&key);
            }
            m.transform = None;
            m.video = Some(VideoMatch {
                query_match_percent: shares.0,
                compared_match_percent: shares.1,
                timestamps: stamps,
                query_frames: q.variants.len() as u32,
                query_frames_matched: g.query_frames.len() as u32,
                listed_frames: shares.2,
                listed_frames_matched: shares.3,
            });
            out.push(m);
        }
        Ok(out)
    }

    pub(super) fn describe(
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
            video: None,
            candidate: None,
        })
    }
}
