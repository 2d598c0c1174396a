//! Reports: a match becomes a structured, signed, chained report with a human-review workflow,
//! a retention deadline, transparency counters and an access audit.
//!
//! The model follows the report fields of the proposed CSA Regulation (COM(2022) 209, Art. 13),
//! the duties of Regulation (EU) 2021/1232 Art. 3 and NCMEC's CyberTipline (see
//! `docs/reports.md` and `schemas/report-v1.schema.json`).
//!
//! * [`ReportBody`] is what was reported: immutable once created, stored as its exact canonical
//!   bytes, signed through its digest, and the only place personal data lives.
//! * Every event — creation, review, purge — is one signed, hash-chained entry of the report
//!   ledger ([`sign`], [`store`]); a purge drops the body but keeps the entry, so verification
//!   tells "purged" from "tampered".
//! * [`ReportState`] is the current status, derived from the ledger and cross-checked by
//!   `verify`.
//!
//! No report ever holds image bytes: a file is described by its hashes and a provider-kept
//! `content_reference`.

pub mod export;
pub mod sign;
pub mod stats;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::db::{ColumnFamilySpec, Compression};
use crate::hashing::HashOutput;
use crate::index::Match;
use crate::store::StoreError;

pub use sign::{PublicKey, Signer};
pub use store::{DataDirRotation, KeyEpoch, KeyRotation, ReportStore, ScanCounts, VerifyOutcome};

/// The schema identifier written into every report body (and the JSON Schema's `$id` tail).
pub const SCHEMA_ID: &str = "baken.report/v1";

/// Column families this module keeps in the data directory's database (see `db`). All
/// uncompressed: small, and a byte scan of the directory sees exactly what a purge removed.
pub const COLUMN_FAMILIES: [ColumnFamilySpec; 6] = {
    const fn cf(name: &'static str) -> ColumnFamilySpec {
        ColumnFamilySpec {
            name,
            compression: Compression::None,
        }
    }
    [
        cf(store::CF_BODIES),
        cf(store::CF_LEDGER),
        cf(store::CF_STATE),
        cf(store::CF_AUDIT),
        cf(store::CF_COUNTERS),
        cf(store::CF_META),
    ]
};

/// The longest retention the regulation allows: 12 months from detection
/// (Regulation (EU) 2021/1232 Art. 3(1)(i)).
pub const MAX_RETENTION_MONTHS: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no report {0:?}")]
    NotFound(String),
    #[error("invalid report input: {0}")]
    Invalid(String),
    #[error("report {id} cannot be {action}: its status is {status}")]
    WrongState {
        id: String,
        action: &'static str,
        status: String,
    },
    #[error("report {0} was purged ({1}); only its redaction record remains")]
    Purged(String, String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("no signing key is loaded, and this operation writes signed records")]
    NoSigningKey,
    #[error(
        "the signing key {key_id} is not the report ledger's active key {active}: it was rotated out or belongs to another ledger, and signing with it would fork the ledger; use the active key (`baken report public-key --all` lists the ledger's keys)"
    )]
    NotActiveKey { key_id: String, active: String },
    #[error("stored report data is corrupt: {0}")]
    Corrupt(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rocksdb::Error> for ReportError {
    fn from(e: rocksdb::Error) -> Self {
        ReportError::Store(StoreError::from(e))
    }
}

pub type Result<T> = std::result::Result<T, ReportError>;

// ---------------------------------------------------------------------------------------------
// The report body (schema baken.report/v1). Field order is the canonical order: the body is
// serialised once, compactly, in declaration order, and those exact bytes are stored and
// digested. No floats anywhere, maps are BTreeMaps, so the serialisation is deterministic.
// ---------------------------------------------------------------------------------------------

/// What was reported. Required fields carry no `default`; the schema says the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// Always [`SCHEMA_ID`].
    pub schema: String,
    /// Engine-assigned, unique (UUID v4 form).
    pub report_id: String,
    /// When the report was created (RFC 3339 with zone; engine).
    pub created_at: String,
    /// When the content was detected (caller, defaults to `created_at`).
    pub detected_at: String,
    /// Who reports (caller): CSAR 13(1)(a), NCMEC reporter.
    pub provider: Provider,
    /// Legal ground for the processing (caller): CSAR 13(1)(k).
    pub legal_basis: String,
    /// The organisation the report is for (caller): NCMEC, the EU Centre, a national body.
    pub recipient: Recipient,
    /// CSAR 13(1)(e); hash matches are `known_csam`.
    pub abuse_type: AbuseType,
    /// CSAR 13(1)(j); NCMEC `escalateToHighPriority`.
    pub urgency: Urgency,
    /// NCMEC report annotations (`sextortion`, `csamSolicitation`, …).
    #[serde(default)]
    pub report_tags: Vec<String>,
    /// The files reported, with their hashes and matches.
    pub files: Vec<ReportedFile>,
    /// Same content, same key: counts unique vs duplicate cases (see `case_key`).
    pub case_key: String,
    /// The user or account (caller): CSAR 13(1)(g).
    #[serde(default)]
    pub reported_user: Option<ReportedUser>,
    /// IP events of the user (caller): CSAR 13(1)(f).
    #[serde(default)]
    pub ip_events: Vec<IpEvent>,
    /// The user's estimated location (caller): CSAR 13(1)(g).
    #[serde(default)]
    pub estimated_location: Option<Location>,
    /// Whether the content was removed or blocked (caller): CSAR 13(1)(i).
    pub removal_status: RemovalStatus,
    /// Other authorities or organisations the content was reported to (caller): CSAR 13(1)(h).
    #[serde(default)]
    pub also_reported_to: Vec<String>,
    /// Whether and how the user was told, with redress avenues (caller): 2021/1232 Art. 3(1)(g)(vi).
    #[serde(default)]
    pub user_notified: Option<UserNotice>,
    /// Anything else the provider adds (caller): CSAR 13(1)(d).
    #[serde(default)]
    pub other_data: Option<String>,
    /// When this report and its personal data are purged (engine): 2021/1232 Art. 3(1)(i).
    pub retention_deadline: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(default)]
    pub legal_representative: Option<String>,
    pub contact_point: Contact,
}

/// A contact for the recipient (NCMEC `reportingPerson` needs an email).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// From the Commission's public list (2021/1232 Art. 7), e.g. `NCMEC`, `EU Centre`.
    pub organisation: String,
    #[serde(default)]
    pub country_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbuseType {
    KnownCsam,
    NewCsam,
    Solicitation,
}

impl AbuseType {
    pub fn as_str(self) -> &'static str {
        match self {
            AbuseType::KnownCsam => "known_csam",
            AbuseType::NewCsam => "new_csam",
            AbuseType::Solicitation => "solicitation",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Urgency {
    pub urgent: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// One reported file: hashes, matches and a pointer the provider keeps. Never the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedFile {
    /// Cryptographic hashes of the file as uploaded (engine).
    pub original_file_hashes: Vec<TypedHash>,
    /// Perceptual hashes (engine).
    pub perceptual_hashes: Vec<PerceptualHash>,
    /// Why it was reported (engine).
    pub matches: Vec<MatchDetail>,
    /// Where the provider keeps the evidence (caller): an opaque pointer, never content.
    pub content_reference: String,
    #[serde(default)]
    pub original_file_name: Option<String>,
    #[serde(default)]
    pub location_url: Option<String>,
    #[serde(default)]
    pub ip_event: Option<IpEvent>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub file_viewed_by_provider: Option<bool>,
    #[serde(default)]
    pub exif_viewed_by_provider: Option<bool>,
    #[serde(default)]
    pub publicly_available: Option<bool>,
    /// EXIF fields the caller chose to pass on.
    #[serde(default)]
    pub exif: BTreeMap<String, String>,
    pub file_relevance: FileRelevance,
    /// NCMEC file annotations.
    #[serde(default)]
    pub annotations: Vec<String>,
    /// A1/A2/B1/B2 when a matched entry carries one (engine, from the list).
    #[serde(default)]
    pub industry_classification: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedHash {
    /// `MD5`, `SHA1` or `SHA256` (NCMEC's spelling).
    #[serde(rename = "type")]
    pub hash_type: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerceptualHash {
    /// `pdq`, `phash`, … (Baken's hash-type names).
    pub algo: String,
    pub value: String,
    #[serde(default)]
    pub quality: Option<u8>,
}

/// One list hit, as the matcher produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDetail {
    pub list: String,
    pub list_version: u64,
    pub entry: String,
    pub hash_type: String,
    pub distance: u32,
    pub threshold: u32,
    #[serde(default)]
    pub transform: Option<String>,
    #[serde(default)]
    pub classification: Option<String>,
    /// A video's match: which of its frames matched (absent for images and hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoDetail>,
    /// The derived view of the image that matched (`border_removed`, …), when not the image
    /// itself: the reviewer sees the match came through a re-framing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
}

/// Where in a video the match is, in integers (a signed body has no floats to canonicalise):
/// frame counts behind the vPDQ shares and the matched frames' times in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoDetail {
    pub query_frames: u32,
    pub query_frames_matched: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_frames: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_frames_matched: Option<u64>,
    pub timestamps_ms: Vec<u64>,
}

impl From<&Match> for MatchDetail {
    fn from(m: &Match) -> Self {
        MatchDetail {
            list: m.list.clone(),
            list_version: m.list_version,
            entry: m.entry.clone(),
            hash_type: m.hash_type.as_str().to_string(),
            distance: m.distance,
            threshold: m.threshold,
            transform: m.transform.map(str::to_string),
            candidate: m.candidate.map(str::to_string),
            classification: m.classification.clone(),
            video: m.video.as_ref().map(|v| VideoDetail {
                query_frames: v.query_frames,
                query_frames_matched: v.query_frames_matched,
                listed_frames: v.listed_frames,
                listed_frames_matched: v.listed_frames_matched,
                timestamps_ms: v
                    .timestamps
                    .iter()
                    .map(|t| (t * 1000.0).round().max(0.0) as u64)
                    .collect(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRelevance {
    #[default]
    Reported,
    SupplementalReported,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedUser {
    #[serde(default)]
    pub esp_id: Option<String>,
    #[serde(default)]
    pub screen_name: Option<String>,
    #[serde(default)]
    pub display_names: Vec<String>,
    #[serde(default)]
    pub profile_urls: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub esp_service: Option<String>,
    #[serde(default)]
    pub prior_ct_reports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpEvent {
    pub ip: String,
    #[serde(default)]
    pub port: Option<u16>,
    /// RFC 3339 with zone.
    pub at: String,
    pub event: IpEventKind,
    #[serde(default)]
    pub possible_proxy: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpEventKind {
    Login,
    Registration,
    Purchase,
    Upload,
    Other,
    Unknown,
}

impl IpEventKind {
    /// NCMEC's `eventName`.
    pub fn ncmec(self) -> &'static str {
        match self {
            IpEventKind::Login => "Login",
            IpEventKind::Registration => "Registration",
            IpEventKind::Purchase => "Purchase",
            IpEventKind::Upload => "Upload",
            IpEventKind::Other => "Other",
            IpEventKind::Unknown => "Unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default)]
    pub country_code: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalStatus {
    Removed,
    Blocked,
    Pending,
    NotRemoved,
    #[default]
    Unknown,
}

impl RemovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalStatus::Removed => "removed",
            RemovalStatus::Blocked => "blocked",
            RemovalStatus::Pending => "pending",
            RemovalStatus::NotRemoved => "not_removed",
            RemovalStatus::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserNotice {
    pub notified: bool,
    #[serde(default)]
    pub at: Option<String>,
    /// How the user can complain or seek redress.
    #[serde(default)]
    pub redress_information: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// What the caller supplies, and what the engine derives.
// ---------------------------------------------------------------------------------------------

/// Fields only the provider knows, for one file. `baken match --report --context FILE.json`
/// reads this shape; the gRPC service will fill it from its request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerContext {
    pub provider: Provider,
    pub legal_basis: String,
    pub recipient: Recipient,
    /// The pointer to the evidence the provider keeps (required per file; the CLI defaults it
    /// to `file:<path>`).
    #[serde(default)]
    pub content_reference: Option<String>,
    /// Defaults to `known_csam`, what a hash match is.
    #[serde(default)]
    pub abuse_type: Option<AbuseType>,
    #[serde(default)]
    pub urgency: Urgency,
    #[serde(default)]
    pub report_tags: Vec<String>,
    /// RFC 3339; defaults to the creation time.
    #[serde(default)]
    pub detected_at: Option<String>,
    #[serde(default)]
    pub original_file_name: Option<String>,
    #[serde(default)]
    pub location_url: Option<String>,
    #[serde(default)]
    pub file_ip_event: Option<IpEvent>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub file_viewed_by_provider: Option<bool>,
    #[serde(default)]
    pub exif_viewed_by_provider: Option<bool>,
    #[serde(default)]
    pub publicly_available: Option<bool>,
    #[serde(default)]
    pub exif: BTreeMap<String, String>,
    #[serde(default)]
    pub file_annotations: Vec<String>,
    #[serde(default)]
    pub reported_user: Option<ReportedUser>,
    #[serde(default)]
    pub ip_events: Vec<IpEvent>,
    #[serde(default)]
    pub estimated_location: Option<Location>,
    #[serde(default)]
    pub removal_status: RemovalStatus,
    #[serde(default)]
    pub also_reported_to: Vec<String>,
    #[serde(default)]
    pub user_notified: Option<UserNotice>,
    #[serde(default)]
    pub other_data: Option<String>,
}

/// The hashes of one file, as the engine computed them. Only files that matched get here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileHashes {
    pub md5: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub perceptual: Vec<PerceptualHash>,
}

impl From<&HashOutput> for FileHashes {
    fn from(o: &HashOutput) -> Self {
        let mut perceptual = Vec::new();
        if let Some(p) = &o.pdq {
            perceptual.push(PerceptualHash {
                algo: "pdq".into(),
                value: p.hash.clone(),
                quality: Some(p.quality),
            });
        }
        for (algo, v) in [
            ("phash", &o.phash),
            ("dhash", &o.dhash),
            ("ahash", &o.ahash),
            ("blockhash", &o.blockhash),
        ] {
            if let Some(v) = v {
                perceptual.push(PerceptualHash {
                    algo: algo.into(),
                    value: v.clone(),
                    quality: None,
                });
            }
        }
        FileHashes {
            md5: o.md5.clone(),
            sha1: o.sha1.clone(),
            sha256: o.sha256.clone(),
            perceptual,
        }
    }
}

impl FileHashes {
    fn typed(&self) -> Vec<TypedHash> {
        [
            ("MD5", &self.md5),
            ("SHA1", &self.sha1),
            ("SHA256", &self.sha256),
        ]
        .into_iter()
        .filter_map(|(t, v)| {
            v.as_ref().map(|v| TypedHash {
                hash_type: t.into(),
                value: v.clone(),
            })
        })
        .collect()
    }
}

/// How long reports are kept: at most [`MAX_RETENTION_MONTHS`] from detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Months(u32),
    Days(u32),
}

impl Default for Retention {
    fn default() -> Self {
        Retention::Months(MAX_RETENTION_MONTHS)
    }
}

impl std::str::FromStr for Retention {
    type Err = String;
    /// `12m` (months) or `90d` (days).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (n, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u32 = n
            .parse()
            .map_err(|_| format!("retention {s:?}: expected e.g. 12m or 90d"))?;
        let r = match unit {
            "m" => Retention::Months(n),
            "d" => Retention::Days(n),
            _ => return Err(format!("retention {s:?}: expected e.g. 12m or 90d")),
        };
        r.validate()?;
        Ok(r)
    }
}

impl Retention {
    pub fn validate(self) -> std::result::Result<(), String> {
        match self {
            Retention::Months(0) | Retention::Days(0) => Err("retention must be positive".into()),
            Retention::Months(n) if n > MAX_RETENTION_MONTHS => Err(format!(
                "retention of {n} months exceeds the {MAX_RETENTION_MONTHS} months allowed"
            )),
            _ => Ok(()),
        }
    }

    /// The deadline for content detected at `detected`, never later than 12 months after it.
    pub fn deadline(self, detected: OffsetDateTime) -> OffsetDateTime {
        let max = add_months(detected, MAX_RETENTION_MONTHS);
        let d = match self {
            Retention::Months(n) => add_months(detected, n),
            Retention::Days(n) => detected + time::Duration::days(i64::from(n)),
        };
        d.min(max)
    }

    /// `12m` / `90d`, for counters and statistics.
    pub fn label(self) -> String {
        match self {
            Retention::Months(n) => format!("{n}m"),
            Retention::Days(n) => format!("{n}d"),
        }
    }
}

/// Calendar months later, the day clamped to the target month's length (31 Jan + 1 = 28/29 Feb).
pub fn add_months(t: OffsetDateTime, n: u32) -> OffsetDateTime {
    let m0 = i64::from(u8::from(t.month())) - 1 + i64::from(n);
    let year = t.year() + (m0 / 12) as i32;
    let month = time::Month::try_from((m0 % 12 + 1) as u8).unwrap_or(time::Month::December);
    let day = t.day().min(time::util::days_in_month(month, year));
    time::Date::from_calendar_date(year, month, day)
        .map(|d| t.replace_date(d))
        .unwrap_or(t)
}

/// Who may skip human review. Default: nobody (`require_review`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewPolicy {
    /// Every report waits for a human decision before it is ready to send.
    pub require_review: bool,
    /// Lists whose entries are human-verified material (e.g. NCMEC's, IWF's). Only matches of
    /// these lists can make a report ready without review, and only when `require_review` is
    /// off.
    pub confirmed_lists: BTreeSet<String>,
    /// The largest distance of such a match that counts as "this is the confirmed item"
    /// (cryptographic matches are always 0). Default 0: identical hashes only.
    pub auto_ready_max_distance: u32,
}

impl Default for ReviewPolicy {
    fn default() -> Self {
        ReviewPolicy {
            require_review: true,
            confirmed_lists: BTreeSet::new(),
            auto_ready_max_distance: 0,
        }
    }
}

impl ReviewPolicy {
    /// Whether a report of known material with these matches may skip review: the policy
    /// allows it and one match is a classified entry of a confirmed list, at distance within
    /// the limit. New material and solicitation never skip review (2021/1232 Art. 3(1)(g)).
    pub fn auto_ready(&self, abuse: AbuseType, matches: &[MatchDetail]) -> Option<String> {
        if self.require_review || abuse != AbuseType::KnownCsam {
            return None;
        }
        matches
            .iter()
            .find(|m| {
                self.confirmed_lists.contains(&m.list)
                    && m.classification.is_some()
                    && m.distance <= self.auto_ready_max_distance
            })
            .map(|m| {
                format!(
                    "policy: confirmed entry {} of list {} ({} distance {})",
                    m.entry, m.list, m.hash_type, m.distance
                )
            })
    }
}

/// Settings of the report store.
#[derive(Debug, Clone, Default)]
pub struct ReportConfig {
    pub review: ReviewPolicy,
    pub retention: Retention,
}

// ---------------------------------------------------------------------------------------------
// State and review.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Waiting for a human decision; not to be sent.
    PendingReview,
    /// Confirmed (or allowed by policy): may be exported and sent.
    ReadyToSend,
    /// A reviewer found a false positive; its personal data is purged.
    Rejected,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::PendingReview => "pending_review",
            ReportStatus::ReadyToSend => "ready_to_send",
            ReportStatus::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for ReportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    #[serde(alias = "confirm")]
    Confirmed,
    #[serde(alias = "reject", alias = "false-positive", alias = "false_positive")]
    Rejected,
}

crate::from_str_by_name!(Decision, "decision");

/// A human decision (2021/1232 Art. 3(1)(g)(ii)-(iii)). The reviewer is a pseudonym: the
/// engine refuses anything that looks like an email address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanReview {
    pub decision: Decision,
    pub reviewer_pseudonym: String,
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeReason {
    /// The retention deadline passed.
    RetentionExpired,
    /// Rejected on review: personal data goes at once.
    FalsePositive,
}

impl PurgeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeReason::RetentionExpired => "retention_expired",
            PurgeReason::FalsePositive => "false_positive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purged {
    pub at: String,
    pub reason: PurgeReason,
}

/// The current state of a report: no personal data, kept after a purge as the redaction
/// record. Derived from the ledger; `verify` checks the two agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportState {
    /// The ledger sequence of the report's creation entry (also its key).
    pub seq: u64,
    pub report_id: String,
    pub created_at: String,
    pub retention_deadline: String,
    pub status: ReportStatus,
    /// Why it became ready without review, when the policy allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_review: Option<HumanReview>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<Purged>,
    pub abuse_type: AbuseType,
    pub recipient: String,
}

/// A report as read back: its state, and its body unless purged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub state: ReportState,
    pub body: Option<ReportBody>,
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// RFC 3339 in UTC (`…Z`), whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn parse_time(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ReportError::Invalid(format!("time {s:?} is not RFC 3339 with a zone: {e}")))
}

/// `YYYY-MM-DD` of a time in UTC: the day bucket of counters.
pub fn day(t: OffsetDateTime) -> String {
    let d = t.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The case key: SHA-256 over the sorted set of matched (list, entry) pairs. Uploads matching
/// the same known items are one case, however often they recur or however they were
/// re-encoded; it is derived from list entries only, never from the user's file.
pub fn case_key(matches: &[MatchDetail]) -> String {
    use sha2::Digest;
    let set: BTreeSet<(&str, &str)> = matches
        .iter()
        .map(|m| (m.list.as_str(), m.entry.as_str()))
        .collect();
    let mut h = sha2::Sha256::new();
    h.update(b"baken-case-v1");
    for (l, e) in set {
        h.update([0]);
        h.update(l.as_bytes());
        h.update([0]);
        h.update(e.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A new report id: UUID v4 text from the OS random source.
pub fn new_report_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| ReportError::Key(format!("random source: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn non_empty(what: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(ReportError::Invalid(format!("{what} is required")));
    }
    Ok(())
}

/// Build the body of a report for one matched file. Checks what the caller must supply.
pub fn build_body(
    ctx: &CallerContext,
    file: &FileHashes,
    matches: &[Match],
    report_id: String,
    now: OffsetDateTime,
    retention: Retention,
) -> Result<ReportBody> {
    if matches.is_empty() {
        return Err(ReportError::Invalid(
            "a report needs at least one match; non-matching content is only counted".into(),
        ));
    }
    non_empty("provider.name", &ctx.provider.name)?;
    non_empty(
        "provider.contact_point.email",
        &ctx.provider.contact_point.email,
    )?;
    non_empty("legal_basis", &ctx.legal_basis)?;
    non_empty("recipient.organisation", &ctx.recipient.organisation)?;
    let content_reference = ctx
        .content_reference
        .clone()
        .ok_or_else(|| ReportError::Invalid("content_reference is required".into()))?;
    non_empty("content_reference", &content_reference)?;
    let detected = match &ctx.detected_at {
        Some(s) => parse_time(s)?,
        None => now,
    };
    if detected > now + time::Duration::minutes(5) {
        return Err(ReportError::Invalid(
            "detected_at lies in the future".into(),
        ));
    }
    for e in ctx.ip_events.iter().chain(&ctx.file_ip_event) {
        parse_time(&e.at)?;
        e.ip.parse::<std::net::IpAddr>()
            .map_err(|_| ReportError::Invalid(format!("ip {:?} is not an IP address", e.ip)))?;
    }
    let details: Vec<MatchDetail> = matches.iter().map(MatchDetail::from).collect();
    let industry_classification = details
        .iter()
        .filter_map(|m| m.classification.as_deref())
        .find(|c| matches!(*c, "A1" | "A2" | "B1" | "B2"))
        .map(str::to_string);
    let abuse_type = ctx.abuse_type.unwrap_or(AbuseType::KnownCsam);
    let case_key = case_key(&details);
    Ok(ReportBody {
        schema: SCHEMA_ID.into(),
        report_id,
        created_at: rfc3339(now),
        detected_at: rfc3339(detected),
        provider: ctx.provider.clone(),
        legal_basis: ctx.legal_basis.clone(),
        recipient: ctx.recipient.clone(),
        abuse_type,
        urgency: ctx.urgency.clone(),
        report_tags: ctx.report_tags.clone(),
        files: vec![ReportedFile {
            original_file_hashes: file.typed(),
            perceptual_hashes: file.perceptual.clone(),
            matches: details,
            content_reference,
            original_file_name: ctx.original_file_name.clone(),
            location_url: ctx.location_url.clone(),
            ip_event: ctx.file_ip_event.clone(),
            device_id: ctx.device_id.clone(),
            file_viewed_by_provider: ctx.file_viewed_by_provider,
            exif_viewed_by_provider: ctx.exif_viewed_by_provider,
            publicly_available: ctx.publicly_available,
            exif: ctx.exif.clone(),
            file_relevance: FileRelevance::Reported,
            annotations: ctx.file_annotations.clone(),
            industry_classification,
        }],
        case_key,
        reported_user: ctx.reported_user.clone(),
        ip_events: ctx.ip_events.clone(),
        estimated_location: ctx.estimated_location.clone(),
        removal_status: ctx.removal_status,
        also_reported_to: ctx.also_reported_to.clone(),
        user_notified: ctx.user_notified.clone(),
        other_data: ctx.other_data.clone(),
        retention_deadline: rfc3339(retention.deadline(detected)),
    })
}

/// A reviewer id must be a pseudonym: 1-64 of `[A-Za-z0-9._:-]`, so no email address, no
/// spaces (a full name) slips in.
pub fn valid_pseudonym(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn months_clamp_and_never_exceed_twelve() {
        let t = datetime!(2024-01-31 10:00 UTC);
        assert_eq!(add_months(t, 1), datetime!(2024-02-29 10:00 UTC));
        assert_eq!(add_months(t, 12), datetime!(2025-01-31 10:00 UTC));
        assert_eq!(add_months(t, 14), datetime!(2025-03-31 10:00 UTC));
        assert_eq!(
            Retention::Days(400).deadline(t),
            datetime!(2025-01-31 10:00 UTC)
        );
        assert!("13m".parse::<Retention>().is_err());
        assert!("0d".parse::<Retention>().is_err());
        assert_eq!("90d".parse::<Retention>(), Ok(Retention::Days(90)));
    }

    #[test]
    fn pseudonyms_refuse_addresses_and_names() {
        assert!(valid_pseudonym("rev-07"));
        assert!(!valid_pseudonym("jane@example.org"));
        assert!(!valid_pseudonym("Jane Doe"));
        assert!(!valid_pseudonym(""));
    }

    #[test]
    fn report_ids_are_uuid_v4() {
        let id = new_report_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_report_id().unwrap());
    }
}
