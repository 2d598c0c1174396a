//! The tables a list index is made of: hash sets for exact types, word-planar bit tables
//! (scanned, or multi-index hashed) for Hamming types, flat byte tables for L2 types.

use super::*;

/// One Hamming-distance table, searched by scan or by multi-index hashing.
#[derive(Debug)]
pub enum BitIndex {
    Scan(BitTable),
    Multi(mih::MultiIndex),
    /// vPDQ frames: rows are frame PDQ ‖ video id, searched by the frame half only.
    Video(VideoTable),
}

/// Words of a vPDQ row that hold the frame's PDQ; the rest is the video id.
pub const VPDQ_FRAME_WORDS: usize = 4;

impl BitIndex {
    /// [`BitIndex::build`] for a table of type `ty`: vPDQ rows become a [`VideoTable`].
    pub fn build_for(ty: &HashType, kind: IndexKind, bytes: usize, rows: &[u64]) -> BitIndex {
        if ty.as_str() == "vpdq" && bytes == 64 {
            BitIndex::Video(VideoTable::build(kind, rows))
        } else {
            BitIndex::build(kind, bytes, rows)
        }
    }

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
            BitIndex::Video(_) => 8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            BitIndex::Scan(t) => t.len,
            BitIndex::Multi(m) => m.len,
            BitIndex::Video(v) => v.video_of.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            BitIndex::Scan(_) => "scan",
            BitIndex::Multi(_) => "mih",
            BitIndex::Video(v) => v.frames.kind_name(),
        }
    }

    pub fn search(&self, queries: &[Vec<u64>], radius: u32) -> Vec<scan::Hit> {
        match self {
            BitIndex::Scan(t) => scan::hamming_scan(t, queries, radius),
            BitIndex::Multi(m) => m.search(queries, radius),
            BitIndex::Video(v) => {
                let q: Vec<Vec<u64>> = queries
                    .iter()
                    .map(|q| q.iter().copied().take(VPDQ_FRAME_WORDS).collect())
                    .collect();
                v.frames.search(&q, radius)
            }
        }
    }

    pub fn entry_bytes(&self, i: usize) -> Vec<u8> {
        match self {
            BitIndex::Scan(t) => t.entry_bytes(i),
            BitIndex::Multi(m) => m.entry_bytes(i),
            BitIndex::Video(_) => unpack(8, 64, |w| self.word(i, w)),
        }
    }

    /// Word `w` of entry `i`'s packed row.
    pub(crate) fn word(&self, i: usize, w: usize) -> u64 {
        match self {
            BitIndex::Scan(t) => t.word(i, w),
            BitIndex::Multi(m) => m.word(i, w),
            BitIndex::Video(v) => v.word(i, w),
        }
    }

    /// Every entry's packed words, little-endian, in entry order (for snapshots).
    pub fn write_rows(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        for i in 0..self.len() {
            for word in 0..self.words() {
                w.write_all(&self.word(i, word).to_le_bytes())?;
            }
        }
        Ok(())
    }

    pub fn memory_bytes(&self) -> usize {
        match self {
            BitIndex::Scan(t) => t.data.len() * 8,
            BitIndex::Multi(m) => m.memory_bytes(),
            BitIndex::Video(v) => v.memory_bytes(),
        }
    }

    /// The vPDQ side of the table, if it is one.
    pub fn video(&self) -> Option<&VideoTable> {
        match self {
            BitIndex::Video(v) => Some(v),
            _ => None,
        }
    }
}

/// The frames of many videos in one Hamming table, so a query video's frames are searched
/// once against every listed frame (exact recall, scan or multi-index as for images) instead
/// of video by video. Each frame row knows its video; each video knows how many frames it
/// has, for the compared-match share.
#[derive(Debug)]
pub struct VideoTable {
    pub(crate) frames: Box<BitIndex>,
    /// Video number of each frame row.
    pub(crate) video_of: Vec<u32>,
    /// Video ids (packed, 4 words each) by video number.
    pub(crate) ids: Vec<[u64; 4]>,
    /// Frame rows per video number.
    pub(crate) frames_per: Vec<u32>,
    by_id: HashMap<[u64; 4], u32>,
}

impl VideoTable {
    /// From packed 64-byte rows (8 words: frame PDQ, then video id).
    pub fn build(kind: IndexKind, rows: &[u64]) -> VideoTable {
        let mut t = VideoTable {
            frames: Box::new(BitIndex::Scan(BitTable::new(32))),
            video_of: Vec::with_capacity(rows.len() / 8),
            ids: Vec::new(),
            frames_per: Vec::new(),
            by_id: HashMap::new(),
        };
        let mut frame_rows = Vec::with_capacity(rows.len() / 2);
        for row in rows.chunks_exact(8) {
            let id = [row[4], row[5], row[6], row[7]];
            let n = match t.by_id.get(&id) {
                Some(&n) => n,
                None => {
                    let n = t.ids.len() as u32;
                    t.ids.push(id);
                    t.frames_per.push(0);
                    t.by_id.insert(id, n);
                    n
                }
            };
            t.frames_per[n as usize] += 1;
            t.video_of.push(n);
            frame_rows.extend_from_slice(&row[..VPDQ_FRAME_WORDS]);
        }
        t.frames = Box::new(BitIndex::build(kind, 32, &frame_rows));
        t
    }

    fn word(&self, i: usize, w: usize) -> u64 {
        if w < VPDQ_FRAME_WORDS {
            self.frames.word(i, w)
        } else {
            self.ids[self.video_of[i] as usize][w - VPDQ_FRAME_WORDS]
        }
    }

    /// The video number of frame row `i`.
    pub fn video_of(&self, i: usize) -> u32 {
        self.video_of[i]
    }

    /// Frame rows of video number `n`.
    pub fn frames_per(&self, n: u32) -> u32 {
        self.frames_per.get(n as usize).copied().unwrap_or(0)
    }

    /// Distinct videos.
    pub fn videos(&self) -> usize {
        self.ids.len()
    }

    /// Frame rows of the video with this id (32 bytes).
    pub fn frames_of(&self, id: &[u8]) -> u32 {
        let p = pack(id, 4);
        let key = [p[0], p[1], p[2], p[3]];
        self.by_id
            .get(&key)
            .map_or(0, |&n| self.frames_per[n as usize])
    }

    pub fn memory_bytes(&self) -> usize {
        self.frames.memory_bytes() + self.video_of.len() * 4 + self.ids.len() * (32 + 4 + 48)
    }
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
        unpack(self.words, self.bytes, |w| self.word(i, w))
    }
}

/// The first `bytes` bytes of a row of `words` packed words (the inverse of [`pack`]).
pub fn unpack(words: usize, bytes: usize, word: impl Fn(usize) -> u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(words * 8);
    for w in 0..words {
        out.extend_from_slice(&word(w).to_be_bytes());
    }
    out.truncate(bytes);
    out
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
    pub(super) fn search(
        &self,
        ty: &HashType,
        variants: &[Vec<u8>],
        t: u32,
    ) -> Vec<(Vec<u8>, u32, usize)> {
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
                // vPDQ queries are frame hashes; the table's rows also carry the video id.
                let len = if ty.as_str() == "vpdq" {
                    64
                } else {
                    first.len()
                };
                let Some(table) = self.bits.get(&(ty.clone(), len)) else {
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
pub(super) struct TableBuilder {
    pub(super) exact: HashMap<HashType, HashSet<Box<[u8]>>>,
    /// Packed rows of Hamming tables, turned into search structures by `seal`.
    pub(super) rows: HashMap<(HashType, usize), Vec<u64>>,
    pub(super) l2: HashMap<HashType, Vec<u8>>,
    pub(super) entries: u64,
    pub(super) run: Option<Run>,
}

impl TableBuilder {
    /// Add one entry. Work goes in runs of one (type, length): the maps are touched once per
    /// run, not once per entry.
    pub(super) fn push(&mut self, ty: &str, hash: &[u8]) -> Result<(), StoreError> {
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

    pub(super) fn start(&mut self, ty: HashType, len: usize) -> Run {
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

    pub(super) fn finish(&mut self, r: Run) {
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

    pub(super) fn seal(mut self, kind: IndexKind) -> Tables {
        if let Some(r) = self.run.take() {
            self.finish(r);
        }
        Tables {
            exact: self.exact,
            bits: self
                .rows
                .into_iter()
                .map(|((ty, len), rows)| {
                    let idx = BitIndex::build_for(&ty, kind, len, &rows);
                    ((ty, len), idx)
                })
                .collect(),
            l2: self.l2,
            entries: self.entries,
        }
    }
}

/// Entries of one (type, length) being added to a list index.
pub(super) struct Run {
    pub(super) ty: HashType,
    pub(super) len: usize,
    pub(super) store: RunStore,
    pub(super) count: u64,
}

pub(super) enum RunStore {
    Exact(HashSet<Box<[u8]>>),
    /// Packed rows and words per row.
    Bits(Vec<u64>, usize),
    L2(Vec<u8>),
}

impl Run {
    pub(super) fn push(&mut self, hash: &[u8]) {
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
