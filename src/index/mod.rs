//! The in-memory matching index, built from the store.
//!
//! Per list, per hash type: a hash set for exact types, a flat bit-vector table for Hamming
//! types (searched with exact recall: every entry within the radius is returned), a flat byte
//! table for L2 types. Entry metadata stays in RocksDB and is read only for hits.
//!
//! Readers take an immutable [`Snapshot`] (an `Arc` swapped atomically); a list change builds
//! that list's new index off to the side and swaps it in, so matching never waits for an import
//! and sees each list at one committed version.

mod list;
mod matcher;
pub mod mih;
pub mod scan;
pub mod snapshot;
mod tables;

pub use list::ListIndex;
pub use matcher::{Matcher, Refresher, Snapshot, snapshot_dir};
use tables::*;
pub use tables::{BitIndex, BitTable, Tables, VideoTable, pack, pack_into, unpack};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::store::{
    HashType, ListMeta, Metric, Store, StoreError, VideoRule, entry_prefix, parse_entry_prefix,
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
    /// Derived views of an image (a removed border, …) match within the smaller of this and
    /// the list's PDQ threshold: a view is a guess at the original framing, and each guess
    /// adds a chance of a false match.
    pub candidate_threshold: u32,
    /// And only with at least this PDQ quality (flat crops hash to noise).
    pub candidate_quality_floor: u8,
}

/// See [`MatchConfig::candidate_threshold`].
pub const DEFAULT_CANDIDATE_THRESHOLD: u32 = 24;
/// See [`MatchConfig::candidate_quality_floor`].
pub const DEFAULT_CANDIDATE_QUALITY_FLOOR: u8 = 60;

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            thresholds: BTreeMap::new(),
            pdq_quality_floor: 50,
            index: IndexKind::Auto,
            snapshot_min_entries: Some(100_000),
            candidate_threshold: DEFAULT_CANDIDATE_THRESHOLD,
            candidate_quality_floor: DEFAULT_CANDIDATE_QUALITY_FLOOR,
        }
    }
}

/// The search structure of a Hamming-distance table. Both give exact recall; they trade memory
/// for speed (figures in docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Multi-index hashing for tables of at least [`AUTO_MULTI_INDEX_MIN`] entries, a scan
    /// below that.
    #[default]
    Auto,
    /// SIMD linear scan: memory = the raw hashes.
    Scan,
    /// Multi-index hashing: sublinear queries, memory = 3× the raw PDQ hashes.
    #[serde(rename = "mih", alias = "multi-index")]
    MultiIndex,
}

crate::from_str_by_name!(IndexKind, "index kind");

/// Below this many entries a scan is as fast as probing (and costs a third of the memory).
pub const AUTO_MULTI_INDEX_MIN: usize = 16_384;

/// One hash of a query, with its variants (PDQ: the 8 dihedral hashes, original first).
#[derive(Debug, Clone)]
pub struct QueryHash {
    pub hash_type: HashType,
    pub variants: Vec<Vec<u8>>,
    pub quality: Option<u8>,
    /// Set for a video's frames: the variants are the video's usable frame hashes (type
    /// `vpdq` against video lists, `pdq` against image lists), these their timestamps.
    pub timestamps: Option<Vec<f64>>,
    /// Set for a derived view of the image ([`crate::hashing::candidates`]): its name.
    pub candidate: Option<&'static str>,
}

impl QueryHash {
    /// One hash with its variants (no frames).
    pub fn new(hash_type: HashType, variants: Vec<Vec<u8>>, quality: Option<u8>) -> QueryHash {
        QueryHash {
            hash_type,
            variants,
            quality,
            timestamps: None,
            candidate: None,
        }
    }
}

/// How a video matched: the shares of frames (python-threatexchange's rule) and where in the
/// query video the matching frames are.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VideoMatch {
    /// Percent of the query's usable frames within the threshold of a frame of the entry
    /// (absent for a frame matched against an image list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_match_percent: Option<f64>,
    /// Percent of the listed video's frames within the threshold of a query frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_match_percent: Option<f64>,
    /// Timestamps (seconds) of the query frames that matched, ascending.
    pub timestamps: Vec<f64>,
    /// The counts behind the shares: usable query frames, and how many matched.
    pub query_frames: u32,
    pub query_frames_matched: u32,
    /// The listed video's frames, and how many matched (vPDQ lists only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_frames: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_frames_matched: Option<u64>,
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
    /// Set when the query is a video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoMatch>,
    /// Set when a derived view of the image matched (`border_removed`, …), not the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<&'static str>,
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
