//! The list model: lists, entries, audit records, change counts, and the store's errors.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Db(String),
    #[error("no list named {0:?}")]
    NoSuchList(String),
    #[error("a list named {0:?} already exists")]
    ListExists(String),
    #[error("invalid list name {0:?}: use 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadListName(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    HashValue(#[from] HashValueError),
    #[error("{0}")]
    Invalid(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Db(e.into_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A list of known hashes and its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListMeta {
    pub id: u32,
    pub name: String,
    /// Who curates it: NCMEC, ThreatExchange, StopNCII, Project VIC, own, …
    pub source: String,
    #[serde(default)]
    pub description: String,
    /// Hash types present in the list.
    #[serde(default)]
    pub hash_types: BTreeSet<HashType>,
    /// e.g. "ncmec" (A1/A2/B1/B2), "vics" (categories), "uk" (A/B/C).
    #[serde(default)]
    pub classification_scheme: Option<String>,
    pub version: u64,
    pub created: String,
    pub updated: String,
    /// Known false positives: a match here suppresses matches of the same query elsewhere.
    #[serde(default)]
    pub negative: bool,
    /// Per-type thresholds stricter than the defaults (`pdq` → 20, say).
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<HashType, u32>,
    /// When a video matches one of the list's videos (vPDQ).
    #[serde(default)]
    pub video: VideoRule,
    #[serde(default)]
    pub live_entries: u64,
    #[serde(default)]
    pub tombstones: u64,
}

/// What a caller gives to create a list.
#[derive(Debug, Clone, Default)]
pub struct NewList {
    pub name: String,
    pub source: String,
    pub description: String,
    pub classification_scheme: Option<String>,
    pub negative: bool,
    pub thresholds: std::collections::BTreeMap<HashType, u32>,
    pub video: VideoRule,
}

/// python-threatexchange's vPDQ verdict, per list: a query video matches a listed one when at
/// least `query_match_percent` of the query's usable frames are within the frame threshold of
/// some frame of it, and at least `compared_match_percent` of its frames of some query frame.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct VideoRule {
    pub query_match_percent: f64,
    pub compared_match_percent: f64,
}

impl Default for VideoRule {
    fn default() -> Self {
        VideoRule {
            query_match_percent: crate::hashing::vpdq::QUERY_MATCH_PERCENT,
            compared_match_percent: crate::hashing::vpdq::COMPARED_MATCH_PERCENT,
        }
    }
}

impl VideoRule {
    pub fn check(&self) -> Result<()> {
        let ok = |p: f64| (0.0..=100.0).contains(&p);
        if ok(self.query_match_percent) && ok(self.compared_match_percent) {
            Ok(())
        } else {
            Err(StoreError::Invalid(
                "vPDQ match percentages must be between 0 and 100".into(),
            ))
        }
    }
}

/// One entry as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryRecord {
    pub hash_type: HashType,
    /// Canonical text form of the value (hex; PhotoDNA as numbers).
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub added: String,
    pub updated: String,
    /// Where the record came from: format, file, line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// Set when the entry was withdrawn by its source or removed: a tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_reason: Option<String>,
    /// The list version that wrote this record.
    pub version: u64,
}

impl EntryRecord {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// A record as an importer produces it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Incoming {
    pub hash_type: Option<HashType>,
    pub hash: Vec<u8>,
    pub external_id: Option<String>,
    pub classification: Option<String>,
    pub media_type: Option<String>,
    pub tags: Vec<String>,
    pub provenance: Option<String>,
    /// The source withdrew it (NCMEC deletedImage, ThreatExchange should_delete, StopNCII
    /// withdrawn). With no hash, the tombstone applies to every entry with `external_id`.
    pub delete: bool,
}

/// The append-only audit log of list changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub list: String,
    pub version_from: u64,
    pub version_to: u64,
    #[serde(default)]
    pub counts: ChangeCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub tombstoned: u64,
    /// Tombstoned entries added again (counted in `added` too).
    #[serde(default)]
    pub restored: u64,
    /// Tombstones for hashes or ids the list did not hold.
    pub tombstone_unknown: u64,
    /// Records an importer could not read (counted here, listed in the import report).
    pub errors: u64,
}

/// Per-entry outcome of a staged put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Updated,
    Unchanged,
    Tombstoned,
    TombstoneUnknown,
}

pub(super) fn valid_list_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
