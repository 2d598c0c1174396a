//! Exact-recall Hamming radius search over a [`BitTable`]: every entry within the radius of
//! any query variant is returned with its smallest distance. All variants (PDQ's 8 dihedrals)
//! are checked in one pass, so the table is read from memory once per query.
//!
//! The table is stored in blocks of 8 entries, word-planar (`block[word][lane]`), so one SIMD
//! register holds the same word of 8 entries: XOR with the broadcast query word, per-lane
//! popcount, add across words, and 8 distances come out at once with no horizontal sums.
//! x86-64 CPUs with AVX-512 VPOPCNTDQ get that path, picked at run time; everything else runs
//! the portable loop (the same arithmetic, which the compiler vectorises as it can).

use super::BitTable;

pub const LANES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub index: usize,
    pub distance: u32,
    pub variant: usize,
}

/// Which implementation `hamming_scan` uses on this CPU.
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_available() {
            return "avx512-vpopcntdq";
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            return "popcnt";
        }
    }
    "portable"
}

#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

/// All entries within `radius` of any of `queries` (each `table.words` long).
pub fn hamming_scan(table: &BitTable, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
    if queries.is_empty() || table.is_empty() {
        return Vec::new();
    }
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_available() {
            // SAFETY: the CPU supports AVX-512F and VPOPCNTDQ (checked just above).
            return unsafe { scan_avx512(table, queries, radius) };
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports POPCNT (checked just above).
            return unsafe { scan_popcnt(table, queries, radius) };
        }
    }
    scan_portable(table, queries, radius)
}

/// The portable loop; also the reference the SIMD path is tested against.
pub fn scan_portable(table: &BitTable, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
    scan_generic(table, queries, radius)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn scan_popcnt(table: &BitTable, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
    scan_generic(table, queries, radius)
}

#[inline(always)]
fn scan_generic(table: &BitTable, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
    let words = table.words;
    let mut hits = Vec::new();
    for (b, block) in table.data.chunks_exact(words * LANES).enumerate() {
        let mut best = [u32::MAX; LANES];
        for q in queries {
            let mut d = [0u32; LANES];
            for (w, qw) in q.iter().enumerate().take(words) {
                let plane = &block[w * LANES..(w + 1) * LANES];
                for (dl, e) in d.iter_mut().zip(plane) {
                    *dl += (e ^ qw).count_ones();
                }
            }
            for (bl, dl) in best.iter_mut().zip(d) {
                *bl = (*bl).min(dl);
            }
        }
        collect(table, queries, radius, b, &best, &mut hits);
    }
    hits
}

/// Turn a block's per-lane minimum distances into hits (ignoring padding lanes), finding
/// which variant matched only for the rare lanes within the radius.
#[inline(always)]
fn collect(
    table: &BitTable,
    queries: &[Vec<u64>],
    radius: u32,
    block: usize,
    best: &[u32; LANES],
    hits: &mut Vec<Hit>,
) {
    for (lane, &d) in best.iter().enumerate() {
        let index = block * LANES + lane;
        if d <= radius && index < table.len {
            let variant = queries
                .iter()
                .position(|q| table.distance(index, q) == d)
                .unwrap_or(0);
            hits.push(Hit {
                index,
                distance: d,
                variant,
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn scan_avx512(table: &BitTable, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
    use std::arch::x86_64::*;
    let words = table.words;
    let nq = queries.len();
    let mut hits = Vec::new();
    // Broadcast every query word once.
    let qv: Vec<__m512i> = queries
        .iter()
        .flat_map(|q| (0..words).map(move |w| _mm512_set1_epi64(q[w] as i64)))
        .collect();
    let r = _mm512_set1_epi64(i64::from(radius));
    // Exact pruning: the distance over the first `head` words is a lower bound of the full
    // distance, so a block where no lane is within the radius on the head alone cannot match.
    // Half the words (128 of PDQ's 256 bits) rule out nearly every block of unrelated hashes.
    let head = if words >= 4 { words / 2 } else { words };
    let mut partial = vec![_mm512_setzero_si512(); nq];
    for (b, block) in table.data.chunks_exact(words * LANES).enumerate() {
        let plane = |w: usize| {
            // SAFETY: `block` holds words*8 u64, so plane w (< words) is 8 in-bounds u64;
            // unaligned loads are allowed.
            unsafe { _mm512_loadu_si512(block.as_ptr().add(w * LANES).cast()) }
        };
        let mut best = _mm512_set1_epi64(i64::MAX);
        for (qi, d) in partial.iter_mut().enumerate() {
            let mut acc = _mm512_setzero_si512();
            for w in 0..head {
                let x = _mm512_xor_si512(plane(w), qv[qi * words + w]);
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
            }
            *d = acc;
            best = _mm512_min_epu64(best, acc);
        }
        if _mm512_cmple_epu64_mask(best, r) == 0 {
            continue;
        }
        if head < words {
            best = _mm512_set1_epi64(i64::MAX);
            for (qi, d) in partial.iter().enumerate() {
                let mut acc = *d;
                for w in head..words {
                    let x = _mm512_xor_si512(plane(w), qv[qi * words + w]);
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
                }
                best = _mm512_min_epu64(best, acc);
            }
            if _mm512_cmple_epu64_mask(best, r) == 0 {
                continue;
            }
        }
        let mut lanes = [0u64; LANES];
        // SAFETY: `lanes` is 64 bytes.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), best) };
        let best32: [u32; LANES] = std::array::from_fn(|i| lanes[i] as u32);
        collect(table, queries, radius, b, &best32, &mut hits);
    }
    hits
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The oracle: every entry within `radius` of any variant, with its smallest distance and
    /// the first variant at that distance, by brute force over the bytes.
    pub(crate) fn brute_force(entries: &[Vec<u8>], variants: &[Vec<u8>], radius: u32) -> Vec<Hit> {
        let mut want = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let ds: Vec<u32> = variants
                .iter()
                .map(|v| e.iter().zip(v).map(|(a, b)| (a ^ b).count_ones()).sum())
                .collect();
            let d = *ds.iter().min().unwrap();
            if d <= radius {
                let variant = ds.iter().position(|&x| x == d).unwrap();
                want.push(Hit {
                    index: i,
                    distance: d,
                    variant,
                });
            }
        }
        want
    }

    #[test]
    fn every_path_agrees_with_brute_force() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for (bytes, n) in [(32usize, 1003usize), (8, 517), (18, 64)] {
            let mut t = BitTable::new(bytes);
            let entries: Vec<Vec<u8>> = (0..n)
                .map(|_| (0..bytes).map(|_| next() as u8).collect())
                .collect();
            for e in &entries {
                t.push(e);
            }
            for round in 0..20 {
                let base = &entries[(next() as usize) % n];
                let mut q = base.clone();
                for _ in 0..(round * 3) {
                    let bit = (next() as usize) % (bytes * 8);
                    q[bit / 8] ^= 1 << (bit % 8);
                }
                let variants = [q, (0..bytes).map(|_| next() as u8).collect()];
                let packed: Vec<Vec<u64>> = variants
                    .iter()
                    .map(|v| super::super::pack(v, t.words))
                    .collect();
                let radius = (bytes * 8 / 8) as u32;
                let want = brute_force(&entries, &variants, radius);
                assert_eq!(scan_portable(&t, &packed, radius), want);
                assert_eq!(hamming_scan(&t, &packed, radius), want, "{}", kernel_name());
                for h in &want {
                    assert_eq!(t.entry_bytes(h.index), entries[h.index]);
                }
            }
        }
    }
}
