//! Multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with Multi-Index
//! Hashing", CVPR 2012): exact-recall Hamming radius search in sublinear time.
//!
//! A hash of `B` bits is cut into `m = ceil(B / 16)` substrings of 16 bits. If two hashes are
//! within distance `R`, then by the pigeonhole principle at least one substring `i` differs by
//! at most `r_i` bits, for any radii with `sum(r_i + 1) = R + 1` (PDQ at 31: 16 substrings,
//! radius 1 each). So each substring gets a table (hash value → entries with that substring)
//! and a query probes, per substring, every key within `r_i` of its own: 17 buckets per
//! substring for PDQ at 31. Every entry in a probed bucket is a candidate and is verified with
//! its full distance; nothing outside the probed buckets can be within `R`, so recall is exact.
//!
//! Memory: the hashes, row-major (one 64-byte line holds two PDQ hashes, so verifying a
//! candidate costs one cache miss), plus a `u32` entry number per entry per substring and
//! 2^16 + 1 offsets per substring. For PDQ that is 32 + 64 bytes per entry: three times the
//! raw hashes, for ~10× fewer memory reads per query at 10M entries than a scan. When the
//! radius makes the probes more expensive than a scan (large radii on short hashes), `search`
//! scans the rows instead; both return the same hits.

use rayon::prelude::*;

use super::scan::Hit;

const KEY_BITS: usize = 16;
const BUCKETS: usize = 1 << KEY_BITS;

/// Row storage aligned to cache lines, so a 32-byte row never straddles two.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u64; 8]);

#[derive(Debug, Default)]
struct Substring {
    /// `offsets[k]..offsets[k + 1]` is the range of `ids` whose substring equals `k`.
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct MultiIndex {
    pub bytes: usize,
    pub words: usize,
    pub len: usize,
    lines: Vec<Line>,
    subs: Vec<Substring>,
}

impl MultiIndex {
    /// Build from row-major packed hashes (`words` big-endian u64 per entry, see `pack`).
    /// Panics never; more than `u32::MAX` entries is refused by the caller (lists that large
    /// do not fit this machine's memory anyway).
    pub fn build(bytes: usize, words: usize, rows: &[u64]) -> MultiIndex {
        let len = rows.len().checked_div(words).unwrap_or(0);
        let mut lines = vec![Line::default(); (len * words).div_ceil(8)];
        for (i, w) in rows.iter().enumerate() {
            lines[i / 8].0[i % 8] = *w;
        }
        let m = (bytes * 8).div_ceil(KEY_BITS);
        let subs = (0..m)
            .into_par_iter()
            .map(|c| {
                let mut offsets = vec![0u32; BUCKETS + 1];
                for row in rows.chunks_exact(words) {
                    offsets[substring(row, c) + 1] += 1;
                }
                for k in 0..BUCKETS {
                    offsets[k + 1] += offsets[k];
                }
                let mut next = offsets.clone();
                let mut ids = vec![0u32; len];
                for (i, row) in rows.chunks_exact(words).enumerate() {
                    let k = substring(row, c);
                    ids[next[k] as usize] = i as u32;
                    next[k] += 1;
                }
                Substring { offsets, ids }
            })
            .collect();
        MultiIndex {
            bytes,
            words,
            len,
            lines,
            subs,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub(crate) fn word(&self, i: usize, w: usize) -> u64 {
        let at = i * self.words + w;
        self.lines[at / 8].0[at % 8]
    }

    /// Bytes of RAM held: rows, entry numbers and offsets.
    pub fn memory_bytes(&self) -> usize {
        self.lines.len() * 64
            + self
                .subs
                .iter()
                .map(|s| (s.offsets.len() + s.ids.len()) * 4)
                .sum::<usize>()
    }

    /// The stored bytes of entry `i`.
    pub fn entry_bytes(&self, i: usize) -> Vec<u8> {
        super::unpack(self.words, self.bytes, |w| self.word(i, w))
    }

    /// Per-substring probe radii for a search radius (`None`: the substring need not be
    /// probed), and the number of buckets they probe per query variant.
    fn plan(&self, radius: u32) -> (Vec<Option<u32>>, usize) {
        let m = self.subs.len();
        let need = radius as usize + 1;
        let (base, extra) = (need / m, need % m);
        let radii: Vec<Option<u32>> = (0..m)
            .map(|c| {
                let s = base + usize::from(c < extra);
                s.checked_sub(1).map(|r| r as u32)
            })
            .collect();
        let probes = radii
            .iter()
            .flatten()
            .map(|&r| ball(r))
            .fold(0usize, usize::saturating_add);
        (radii, probes)
    }

    /// All entries within `radius` of any of `queries` (each `words` long), each once with its
    /// smallest distance and the first variant at that distance, sorted by entry.
    pub fn search(&self, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
        if queries.is_empty() || self.len == 0 {
            return Vec::new();
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("popcnt") {
                // SAFETY: the CPU supports POPCNT (checked just above).
                return unsafe { self.search_popcnt(queries, radius) };
            }
        }
        self.search_generic(queries, radius)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn search_popcnt(&self, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
        self.search_generic(queries, radius)
    }

    #[inline(always)]
    fn search_generic(&self, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
        let (radii, probes) = self.plan(radius);
        // Expected candidates per variant: probes × entries per bucket. Past a quarter of the
        // table a scan reads less memory and wastes no work on duplicates.
        let expected = probes.saturating_mul(self.len) / BUCKETS;
        let mut hits = if expected > self.len / 4 {
            self.scan_rows(queries, radius)
        } else {
            let mut hits = Vec::new();
            // Gather a variant's candidates from all its buckets first, then verify them in
            // one run: the prefetches then stay ahead across bucket boundaries, and the rows'
            // cache misses overlap instead of queueing one after another.
            let mut candidates: Vec<u32> = Vec::new();
            for (vi, q) in queries.iter().enumerate() {
                candidates.clear();
                for (c, r) in radii.iter().enumerate() {
                    let Some(r) = *r else { continue };
                    let key = substring(q, c);
                    let sub = &self.subs[c];
                    for &mask in masks(r) {
                        let k = key ^ usize::from(mask);
                        candidates.extend_from_slice(
                            &sub.ids[sub.offsets[k] as usize..sub.offsets[k + 1] as usize],
                        );
                    }
                }
                self.verify(&candidates, q, vi, radius, &mut hits);
            }
            hits
        };
        // A true neighbour is found once per substring within its radius and per variant.
        hits.sort_unstable_by_key(|h| (h.index, h.distance, h.variant));
        hits.dedup_by_key(|h| h.index);
        hits
    }

    #[inline(always)]
    fn verify(&self, ids: &[u32], q: &[u64], variant: usize, radius: u32, hits: &mut Vec<Hit>) {
        const AHEAD: usize = 16;
        if self.words == 4 && q.len() >= 4 {
            // PDQ: two rows per line, a fixed four-word distance.
            let q4 = [q[0], q[1], q[2], q[3]];
            for (j, &id) in ids.iter().enumerate() {
                if let Some(&next) = ids.get(j + AHEAD) {
                    self.prefetch(next as usize);
                }
                let i = id as usize;
                let Some(line) = self.lines.get(i >> 1) else {
                    continue;
                };
                let row = if i & 1 == 0 {
                    &line.0[..4]
                } else {
                    &line.0[4..]
                };
                let d = (row[0] ^ q4[0]).count_ones()
                    + (row[1] ^ q4[1]).count_ones()
                    + (row[2] ^ q4[2]).count_ones()
                    + (row[3] ^ q4[3]).count_ones();
                if d <= radius {
                    hits.push(Hit {
                        index: i,
                        distance: d,
                        variant,
                    });
                }
            }
            return;
        }
        for (j, &id) in ids.iter().enumerate() {
            if let Some(&next) = ids.get(j + AHEAD) {
                self.prefetch(next as usize);
            }
            let i = id as usize;
            let d: u32 = (0..self.words)
                .map(|w| (self.word(i, w) ^ q[w]).count_ones())
                .sum();
            if d <= radius {
                hits.push(Hit {
                    index: i,
                    distance: d,
                    variant,
                });
            }
        }
    }

    #[inline(always)]
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let at = i * self.words;
            if let Some(line) = self.lines.get(at / 8) {
                // SAFETY: a prefetch is a hint with no architectural effect; the pointer is to
                // a live element of `lines`.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        (line as *const Line).cast(),
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Linear scan over the rows (the fallback for radii too large to probe).
    fn scan_rows(&self, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
        let mut hits = Vec::new();
        for i in 0..self.len {
            let mut best: Option<(u32, usize)> = None;
            for (vi, q) in queries.iter().enumerate() {
                let d: u32 = (0..self.words)
                    .map(|w| (self.word(i, w) ^ q[w]).count_ones())
                    .sum();
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, vi));
                }
            }
            if let Some((d, vi)) = best
                && d <= radius
            {
                hits.push(Hit {
                    index: i,
                    distance: d,
                    variant: vi,
                });
            }
        }
        hits
    }
}

/// Substring `c` (16 bits, most significant first) of a packed hash; bits past the hash's
/// length are zero padding in every hash and query alike.
#[inline(always)]
fn substring(row: &[u64], c: usize) -> usize {
    let w = c / 4;
    let shift = 48 - 16 * (c % 4);
    row.get(w).map_or(0, |x| ((x >> shift) & 0xFFFF) as usize)
}

/// Number of 16-bit keys within Hamming distance `r` of a key.
fn ball(r: u32) -> usize {
    let mut total = 0usize;
    let mut c = 1usize; // C(16, k)
    for k in 0..=r.min(16) as usize {
        total += c;
        c = c * (16 - k) / (k + 1);
    }
    total
}

/// [`masks_within`], computed once per radius.
fn masks(r: u32) -> &'static [u16] {
    static MASKS: [std::sync::OnceLock<Vec<u16>>; 17] = [const { std::sync::OnceLock::new() }; 17];
    let r = r.min(16);
    MASKS[r as usize].get_or_init(|| masks_within(r))
}

/// Every 16-bit mask with at most `r` bits set, fewest bits first.
fn masks_within(r: u32) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::with_capacity(ball(r));
    for k in 0..=r.min(16) {
        out.extend((0..=u16::MAX).filter(|m| m.count_ones() == k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    #[test]
    fn ball_counts_match_masks() {
        for r in 0..4 {
            assert_eq!(ball(r), masks_within(r).len());
        }
        assert_eq!(ball(1), 17);
        assert_eq!(ball(2), 137);
    }

    #[test]
    fn plan_satisfies_the_pigeonhole_bound() {
        let idx = MultiIndex::build(32, 4, &[0; 4]);
        for radius in 0..80u32 {
            let (radii, _) = idx.plan(radius);
            let sum: u32 = radii.iter().map(|r| r.map_or(0, |r| r + 1)).sum();
            assert_eq!(sum, radius + 1, "radius {radius}");
        }
    }

    #[test]
    fn agrees_with_brute_force_at_every_radius() {
        let mut next = rng(0x9E37_79B9_7F4A_7C15);
        for (bytes, n) in [(32usize, 3000usize), (8, 2000), (18, 500)] {
            let words = bytes.div_ceil(8);
            let entries: Vec<Vec<u8>> = (0..n)
                .map(|_| (0..bytes).map(|_| next() as u8).collect())
                .collect();
            let rows: Vec<u64> = entries
                .iter()
                .flat_map(|e| super::super::pack(e, words))
                .collect();
            let idx = MultiIndex::build(bytes, words, &rows);
            for round in 0..40 {
                let base = &entries[(next() as usize) % n];
                let mut q = base.clone();
                for _ in 0..round {
                    let bit = (next() as usize) % (bytes * 8);
                    q[bit / 8] ^= 1 << (bit % 8);
                }
                let variants = [q, (0..bytes).map(|_| next() as u8).collect()];
                let packed: Vec<Vec<u64>> = variants
                    .iter()
                    .map(|v| super::super::pack(v, words))
                    .collect();
                let radius = [0u32, 1, 7, 15, 31, 40, 70][round % 7].min(bytes as u32 * 8);
                let want = super::super::scan::tests::brute_force(&entries, &variants, radius);
                assert_eq!(idx.search(&packed, radius), want, "{bytes} bytes r{radius}");
                assert_eq!(idx.scan_rows(&packed, radius), want);
                for h in &want {
                    assert_eq!(idx.entry_bytes(h.index), entries[h.index]);
                }
            }
        }
    }
}
