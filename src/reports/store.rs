//! Report persistence in the store's RocksDB: a signed, hash-chained ledger of report events,
//! the report bodies, derived states, an append-only hash-chained access audit, and counters
//! that outlive every purge.
//!
//! # Column families (all integers big-endian)
//! | cf | key | value |
//! |---|---|---|
//! | `report_ledger` | seq u64 | Ed25519 signature (64 bytes) · entry JSON ([`LedgerEntry`]) |
//! | `report_bodies` | report seq u64 | the body's canonical JSON (its SHA-256 is in the entry) |
//! | `report_state` | report seq u64 | [`ReportState`] JSON (no personal data; the redaction record after a purge) |
//! | `report_audit` | seq u64 | [`AuditEntry`] JSON, carrying the SHA-256 of the previous record |
//! | `report_counters` | `YYYY-MM-DD` · `/` · dimension | u64 |
//! | `report_meta` | `ledger_head`, `audit_head` → seq u64 · digest; `id/<report id>` → seq; `case/<key>` → first day | |
//!
//! # Chain
//! Entry `n` carries `prev_digest` = SHA-256 of entry `n-1`'s stored value (signature and
//! bytes), and is signed over its exact stored bytes. A report entry names its body by digest
//! only, so a purge can delete the body (and sign a purge entry) without breaking anything:
//! `verify` then says "purged", while a body changed or deleted without a signed purge, an
//! entry altered, removed or reordered, or a state that disagrees with the signed history is
//! reported with the entry and report it concerns. The heads in `report_meta` catch a
//! truncated tail; publishing the head digest elsewhere (it is in `verify`'s output) makes even
//! a rewrite by someone holding the key detectable.
//!
//! Every acknowledged write is one synced `WriteBatch`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::sign::{PublicKey, Signer, digest, rotation_statement};
use super::{
    CallerContext, Decision, FileHashes, HumanReview, PurgeReason, Purged, Report, ReportBody,
    ReportConfig, ReportError, ReportState, ReportStatus, Result, build_body, day, new_report_id,
    parse_time, rfc3339, valid_pseudonym,
};
use crate::index::Match;
use crate::store::Store;

pub const CF_BODIES: &str = "report_bodies";
pub const CF_LEDGER: &str = "report_ledger";
pub const CF_STATE: &str = "report_state";
pub const CF_AUDIT: &str = "report_audit";
pub const CF_COUNTERS: &str = "report_counters";
pub const CF_META: &str = "report_meta";

const LEDGER_HEAD: &[u8] = b"ledger_head";
const AUDIT_HEAD: &[u8] = b"audit_head";
const ID_PREFIX: &[u8] = b"id/";
const CASE_PREFIX: &[u8] = b"case/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Report,
    Review,
    Purge,
    /// The signing key changes: signed by the retiring key, naming the new one, with the new
    /// key's proof of possession. Every later entry is signed by the new key.
    KeyRotation,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Report => "report",
            EntryKind::Review => "review",
            EntryKind::Purge => "purge",
            EntryKind::KeyRotation => "key_rotation",
        }
    }
}

/// The `v` of report, review and purge entries (unchanged since the first ledgers).
pub const ENTRY_VERSION: u8 = 1;
/// The `v` of key-rotation entries: a verifier that predates rotation cannot read them.
pub const ROTATION_ENTRY_VERSION: u8 = 2;

/// One signed ledger entry. The signature covers the exact stored JSON bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// Entry format version: [`ENTRY_VERSION`], or [`ROTATION_ENTRY_VERSION`] for key rotations.
    pub v: u8,
    pub seq: u64,
    pub kind: EntryKind,
    pub report_id: String,
    /// The seq of the report's creation entry.
    pub report_seq: u64,
    pub at: String,
    /// SHA-256 (hex) of the previous entry's stored value; 64 zeros for the first.
    pub prev_digest: String,
    pub key_id: String,
    /// Report: SHA-256 (hex) of the body's canonical bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_digest: Option<String>,
    /// Report: the initial status; review: the resulting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReportStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse_type: Option<super::AbuseType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<HumanReview>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge: Option<Purged>,
    /// Key rotation: the retiring key (hex, 32 bytes), which signs this entry. Spelled out so
    /// that every key of the ledger is known from the ledger itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_public_key: Option<String>,
    /// Key rotation: the key (hex) that signs every later entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key_id: Option<String>,
    /// Key rotation: the new key's signature (hex) over the rotation statement
    /// (`sign::rotation_statement`: seq, prev_digest, old key, new key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key_proof: Option<String>,
}

impl LedgerEntry {
    fn new(kind: EntryKind, report_id: &str, report_seq: u64, at: &str) -> Self {
        LedgerEntry {
            v: ENTRY_VERSION,
            seq: 0,
            kind,
            report_id: report_id.to_string(),
            report_seq,
            at: at.to_string(),
            prev_digest: String::new(),
            key_id: String::new(),
            body_digest: None,
            status: None,
            auto_ready: None,
            retention_deadline: None,
            abuse_type: None,
            recipient: None,
            review: None,
            purge: None,
            old_public_key: None,
            new_public_key: None,
            new_key_id: None,
            new_key_proof: None,
        }
    }
}

/// A stored ledger entry with its signature, as read back (for exports and tools).
#[derive(Debug, Clone, PartialEq)]
pub struct SignedEntry {
    pub entry: LedgerEntry,
    /// The exact signed bytes (the entry JSON).
    pub bytes: Vec<u8>,
    pub signature: [u8; 64],
    /// SHA-256 of the stored value: what the next entry's `prev_digest` must be.
    pub digest: [u8; 32],
}

fn decode_entry(v: &[u8]) -> std::result::Result<SignedEntry, String> {
    if v.len() < 64 {
        return Err("shorter than a signature".into());
    }
    let (sig, bytes) = v.split_at(64);
    let entry: LedgerEntry =
        serde_json::from_slice(bytes).map_err(|e| format!("entry JSON: {e}"))?;
    let mut signature = [0u8; 64];
    signature.copy_from_slice(sig);
    Ok(SignedEntry {
        entry,
        bytes: bytes.to_vec(),
        signature,
        digest: digest(v),
    })
}

/// One access-audit record: who did what to which report, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    /// `report.create`, `report.read`, `report.list`, `report.export`, `report.review`,
    /// `report.purge`, `report.verify`, `report.stats`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// SHA-256 (hex) of the previous record's stored bytes.
    pub prev: String,
}

/// Outcomes of scanned content, for the volume figures. Nothing else about the content is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCounts {
    pub matched: u64,
    pub not_matched: u64,
    /// Matches all suppressed by a negative list (counted in `not_matched` too).
    pub suppressed: u64,
    /// Could not be read or decoded.
    pub failed: u64,
}

/// One problem `verify` found, naming the ledger entry and report it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// `missing_entry`, `truncated`, `bad_signature`, `wrong_key`, `retired_key`,
    /// `bad_rotation`, `chain_break`,
    /// `body_altered`, `body_missing`, `unsigned_body`, `state_mismatch`, `state_missing`,
    /// `unsigned_state`, `unreadable`, `audit_chain`.
    pub kind: &'static str,
    pub message: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyOutcome {
    pub ok: bool,
    /// The key verification started from (the trust anchor).
    pub key_id: String,
    /// The key that signs the next entry (the newest key validly rotated in).
    pub active_key_id: String,
    /// Every key of the ledger, oldest first, as its valid rotation entries establish them.
    pub keys: Vec<KeyEpoch>,
    pub entries: u64,
    pub reports: u64,
    /// Reports whose body was purged by a signed purge entry (not a problem).
    pub purged: u64,
    pub head_seq: u64,
    /// Publish this elsewhere to make a rewrite of the whole ledger detectable.
    pub head_digest: String,
    pub audit_records: u64,
    pub problems: Vec<Problem>,
}

/// One signing key of the ledger and the entries it signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyEpoch {
    pub key_id: String,
    /// Hex (32 bytes).
    pub public_key: String,
    /// The first ledger entry this key signs.
    pub active_from_seq: u64,
    /// The key-rotation entry that retired it (the last entry it signs); `None` while active.
    pub retired_at_seq: Option<u64>,
}

/// A key rotation as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRotation {
    /// The seq of the key-rotation entry.
    pub seq: u64,
    pub at: String,
    pub old_key_id: String,
    pub new_key_id: String,
}

/// A rotation of the data directory's own key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDirRotation {
    #[serde(flatten)]
    pub rotation: KeyRotation,
    /// Where the active key now is.
    pub key_file: std::path::PathBuf,
    /// Where the retired private key was kept, if asked.
    pub retired_key_file: Option<std::path::PathBuf>,
}

/// A key-rotation entry's claims, as read (not yet verified).
struct RotationClaim {
    old: Option<PublicKey>,
    new: Option<PublicKey>,
}

/// The outcome of a purge run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeSummary {
    pub purged: Vec<String>,
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn be(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn read_head(v: Option<Vec<u8>>) -> Result<(u64, [u8; 32])> {
    match v {
        None => Ok((0, [0; 32])),
        Some(v) if v.len() == 40 => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&v[..8]);
            let mut d = [0u8; 32];
            d.copy_from_slice(&v[8..]);
            Ok((u64::from_be_bytes(seq), d))
        }
        Some(_) => Err(ReportError::Corrupt("head record".into())),
    }
}

fn head_value(seq: u64, d: &[u8; 32]) -> Vec<u8> {
    let mut v = be(seq).to_vec();
    v.extend_from_slice(d);
    v
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ReportError::Corrupt(e.to_string()))
}

/// Writes of one operation, committed as one synced batch under the writer lock.
struct Tx<'a> {
    rs: &'a ReportStore,
    batch: WriteBatch,
    ledger: (u64, [u8; 32]),
    audit: (u64, [u8; 32]),
    counters: BTreeMap<Vec<u8>, u64>,
    ledger_changed: bool,
    audit_changed: bool,
}

impl Tx<'_> {
    fn append(&mut self, mut e: LedgerEntry) -> Result<u64> {
        let guard = self.rs.signer.read().unwrap_or_else(|p| p.into_inner());
        let signer = guard.as_ref().ok_or(ReportError::NoSigningKey)?;
        let seq = self.ledger.0 + 1;
        e.seq = seq;
        if e.kind == EntryKind::Report {
            e.report_seq = seq;
        }
        e.prev_digest = hex::encode(self.ledger.1);
        e.key_id = signer.public().key_id();
        let bytes = json(&e)?;
        let mut value = signer.sign(&bytes).to_vec();
        value.extend_from_slice(&bytes);
        self.ledger = (seq, digest(&value));
        self.ledger_changed = true;
        self.batch.put_cf(self.rs.cf(CF_LEDGER)?, be(seq), value);
        Ok(seq)
    }

    fn audit(
        &mut self,
        at: &str,
        actor: &str,
        action: &str,
        report_id: Option<&str>,
        detail: Option<String>,
    ) -> Result<()> {
        let seq = self.audit.0 + 1;
        let rec = AuditEntry {
            seq,
            at: at.to_string(),
            actor: actor.to_string(),
            action: action.to_string(),
            report_id: report_id.map(str::to_string),
            detail,
            prev: hex::encode(self.audit.1),
        };
        let v = json(&rec)?;
        self.audit = (seq, digest(&v));
        self.audit_changed = true;
        self.batch.put_cf(self.rs.cf(CF_AUDIT)?, be(seq), v);
        Ok(())
    }

    fn count(&mut self, day: &str, dim: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut k = day.as_bytes().to_vec();
        k.push(b'/');
        k.extend_from_slice(dim.as_bytes());
        *self.counters.entry(k).or_default() += n;
    }

    fn put_state(&mut self, s: &ReportState) -> Result<()> {
        self.batch
            .put_cf(self.rs.cf(CF_STATE)?, be(s.seq), json(s)?);
        Ok(())
    }

    fn commit(mut self) -> Result<()> {
        let db = self.rs.store.db();
        let counters = self.rs.cf(CF_COUNTERS)?;
        for (k, n) in std::mem::take(&mut self.counters) {
            let cur = db
                .get_cf(counters, &k)?
                .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            self.batch
                .put_cf(counters, &k, cur.saturating_add(n).to_be_bytes());
        }
        let meta = self.rs.cf(CF_META)?;
        if self.ledger_changed {
            self.batch
                .put_cf(meta, LEDGER_HEAD, head_value(self.ledger.0, &self.ledger.1));
        }
        if self.audit_changed {
            self.batch
                .put_cf(meta, AUDIT_HEAD, head_value(self.audit.0, &self.audit.1));
        }
        db.write_opt(std::mem::take(&mut self.batch), &synced())?;
        Ok(())
    }
}

/// Reports over a [`Store`]. One writer at a time (its own lock); reads never wait.
pub struct ReportStore {
    store: Arc<Store>,
    /// Replaced only by a key rotation, under the writer lock.
    signer: RwLock<Option<Signer>>,
    config: ReportConfig,
    writer: Mutex<()>,
}

impl ReportStore {
    /// `signer` may be `None` for read-only use (listing, verifying with a public key); writes
    /// that sign then fail with [`ReportError::NoSigningKey`]. Reads still write audit records.
    ///
    /// A signer must be the ledger's active key ([`ReportError::NotActiveKey`] otherwise): a
    /// rotated-out key, or a key restored from an older copy of the secret, would fork the
    /// ledger. One exception is repaired here: a rotation interrupted after its ledger entry
    /// was written but before the new key file replaced the old one (see [`Signer::next_path`]).
    pub fn new(store: Arc<Store>, signer: Option<Signer>, config: ReportConfig) -> Result<Self> {
        config.retention.validate().map_err(ReportError::Invalid)?;
        let rs = ReportStore {
            store,
            signer: RwLock::new(None),
            config,
            writer: Mutex::new(()),
        };
        if let Some(s) = signer {
            let s = rs.check_active(s)?;
            *rs.signer.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
        }
        Ok(rs)
    }

    /// `signer` if it is the ledger's active key (or the ledger is empty).
    fn check_active(&self, signer: Signer) -> Result<Signer> {
        let Some(active) = self.active_key_id()? else {
            return Ok(signer);
        };
        let key_id = signer.public().key_id();
        if key_id == active {
            return Ok(signer);
        }
        // An interrupted rotation of the data directory's own key: the ledger already names
        // the new key, which waits next to the old one. Finish the swap.
        let dir = self.store.dir();
        let default = Signer::default_path(dir);
        let next = Signer::next_path(dir);
        if next.exists()
            && Signer::load(&default).is_ok_and(|d| d.public() == signer.public())
            && let Ok(n) = Signer::load(&next)
            && n.public().key_id() == active
        {
            std::fs::rename(&next, &default)?;
            tracing::warn!(key_id = %active, path = %default.display(), "finished an interrupted key rotation: the new key replaced the retired one");
            return Ok(n);
        }
        Err(ReportError::NotActiveKey { key_id, active })
    }

    /// The id of the key that signs the next ledger entry: the signer of the last entry, or
    /// the new key when the last entry is a rotation. `None` for an empty ledger. (Unverified:
    /// `verify` checks the whole chain; an unreadable last entry is left to it.)
    pub fn active_key_id(&self) -> Result<Option<String>> {
        let db = self.store.db();
        let Some(item) = db
            .iterator_cf(self.cf(CF_LEDGER)?, IteratorMode::End)
            .next()
        else {
            return Ok(None);
        };
        let (_, v) = item?;
        Ok(decode_entry(&v).ok().map(|se| match se.entry.kind {
            EntryKind::KeyRotation => se.entry.new_key_id.unwrap_or_default(),
            _ => se.entry.key_id,
        }))
    }

    /// The public key that signed entries naming `key_id`: the loaded signer's, or one the
    /// ledger's rotation entries spell out. For export integrity blocks.
    pub fn public_key_for(&self, key_id: &str) -> Result<Option<PublicKey>> {
        if let Some(k) = self.public_key().filter(|k| k.key_id() == key_id) {
            return Ok(Some(k));
        }
        Ok(self
            .rotation_claims()?
            .into_iter()
            .flat_map(|c| [c.old, c.new])
            .flatten()
            .find(|k| k.key_id() == key_id))
    }

    /// The claims of every key-rotation entry, in ledger order (unverified).
    fn rotation_claims(&self) -> Result<Vec<RotationClaim>> {
        let mut out = Vec::new();
        let parse = |h: &Option<String>| h.as_deref().and_then(|h| PublicKey::parse(h).ok());
        for item in self
            .store
            .db()
            .iterator_cf(self.cf(CF_LEDGER)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            // Most entries are not rotations: skip them without parsing.
            const MARK: &[u8] = b"\"kind\":\"key_rotation\"";
            if !v.windows(MARK.len()).any(|w| w == MARK) {
                continue;
            }
            if let Ok(se) = decode_entry(&v)
                && se.entry.kind == EntryKind::KeyRotation
            {
                out.push(RotationClaim {
                    old: parse(&se.entry.old_public_key),
                    new: parse(&se.entry.new_public_key),
                });
            }
        }
        Ok(out)
    }

    /// Rotate the signing key: append a key-rotation entry signed by the current key that
    /// names `new` and carries `new`'s proof of possession, then sign with `new` from here on.
    /// The old private key is not needed afterwards: verification knows every public key from
    /// the ledger. A key this ledger used before is refused (a retired key never comes back).
    pub fn rotate_key(&self, new: Signer, actor: &str, now: OffsetDateTime) -> Result<KeyRotation> {
        let (_g, mut tx) = self.begin()?;
        let old = self.public_key().ok_or(ReportError::NoSigningKey)?;
        let new_pub = new.public();
        let (old_id, new_id) = (old.key_id(), new_pub.key_id());
        if new_pub == old {
            return Err(ReportError::Invalid(format!(
                "the new key is the current key ({old_id})"
            )));
        }
        let mut used: BTreeSet<String> = self
            .rotation_claims()?
            .into_iter()
            .flat_map(|c| [c.old, c.new])
            .flatten()
            .map(|k| k.key_id())
            .collect();
        if let Some(item) = self
            .store
            .db()
            .iterator_cf(self.cf(CF_LEDGER)?, IteratorMode::Start)
            .next()
            && let Ok(se) = decode_entry(&item?.1)
        {
            used.insert(se.entry.key_id);
        }
        if used.contains(&new_id) {
            return Err(ReportError::Invalid(format!(
                "key {new_id} already signed this ledger; a retired key is never rotated in again"
            )));
        }
        let seq = tx.ledger.0 + 1;
        let statement = rotation_statement(seq, &tx.ledger.1, &old, &new_pub);
        let at = rfc3339(now);
        let mut e = LedgerEntry::new(EntryKind::KeyRotation, "", 0, &at);
        e.v = ROTATION_ENTRY_VERSION;
        e.old_public_key = Some(old.to_hex());
        e.new_public_key = Some(new_pub.to_hex());
        e.new_key_id = Some(new_id.clone());
        e.new_key_proof = Some(hex::encode(new.sign_rotation(&statement)));
        let seq = tx.append(e)?;
        tx.audit(
            &at,
            actor,
            "report.rotate_key",
            None,
            Some(format!(
                "key {old_id} retired, key {new_id} active from ledger entry {}",
                seq + 1
            )),
        )?;
        tx.commit()?;
        // Still under the writer lock: no entry can be signed by the old key after this.
        *self.signer.write().unwrap_or_else(|p| p.into_inner()) = Some(new);
        tracing::info!(seq, old_key = %old_id, new_key = %new_id, "report signing key rotated");
        Ok(KeyRotation {
            seq,
            at,
            old_key_id: old_id,
            new_key_id: new_id,
        })
    }

    /// [`ReportStore::rotate_key`] for the data directory's own key file
    /// (`<data>/keys/report-signing.key`), which must be the current signer. The new key is
    /// written next to it first ([`Signer::next_path`], 0600, synced), then the rotation entry
    /// is appended, then the new key replaces the old file in one rename. The retired private
    /// key is kept as [`Signer::retired_path`] when `keep_old`, otherwise it is gone with the
    /// rename: verification needs only public keys, and the ledger holds them. A crash between
    /// the entry and the rename is finished by the next [`ReportStore::new`].
    pub fn rotate_data_dir_key(
        &self,
        new: Signer,
        keep_old: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<DataDirRotation> {
        let dir = self.store.dir().to_path_buf();
        let default = Signer::default_path(&dir);
        let current = self.public_key().ok_or(ReportError::NoSigningKey)?;
        if !Signer::load(&default).is_ok_and(|d| d.public() == current) {
            return Err(ReportError::Invalid(format!(
                "the current signing key is not {}; a key supplied from elsewhere is rotated by naming the new key (and then configuring it)",
                default.display()
            )));
        }
        let next = Signer::next_path(&dir);
        // A leftover from an attempt that never reached the ledger (the current key is still
        // the active one, checked when this store was opened).
        if next.exists() {
            std::fs::remove_file(&next)?;
        }
        new.save(&next)?;
        let rotation = match self.rotate_key(new, actor, now) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&next);
                return Err(e);
            }
        };
        let retired = if keep_old {
            let p = Signer::retired_path(&dir, &rotation.old_key_id);
            match std::fs::hard_link(&default, &p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            Some(p)
        } else {
            None
        };
        std::fs::rename(&next, &default)?;
        if let Ok(d) = std::fs::File::open(default.parent().unwrap_or(&dir)) {
            let _ = d.sync_all();
        }
        Ok(DataDirRotation {
            rotation,
            key_file: default,
            retired_key_file: retired,
        })
    }

    /// The ledger head: last seq and the SHA-256 (hex) of its stored entry.
    pub fn ledger_head(&self) -> Result<(u64, String)> {
        let (seq, d) = read_head(self.store.db().get_cf(self.cf(CF_META)?, LEDGER_HEAD)?)?;
        Ok((seq, hex::encode(d)))
    }

    fn has_signer(&self) -> bool {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &ReportConfig {
        &self.config
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Signer::public)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        Ok(self.store.cf(name)?)
    }

    fn begin(&self) -> Result<(std::sync::MutexGuard<'_, ()>, Tx<'_>)> {
        // Batches are atomic, so a panic under the lock leaves nothing half-written.
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.store.db();
        let meta = self.cf(CF_META)?;
        let ledger = read_head(db.get_cf(meta, LEDGER_HEAD)?)?;
        let audit = read_head(db.get_cf(meta, AUDIT_HEAD)?)?;
        Ok((
            guard,
            Tx {
                rs: self,
                batch: WriteBatch::default(),
                ledger,
                audit,
                counters: BTreeMap::new(),
                ledger_changed: false,
                audit_changed: false,
            },
        ))
    }

    /// Turn the matches of one file into a report: signed, chained, `pending_review` unless the
    /// review policy lets confirmed known material through. Counts the report, its matches and
    /// its case (unique or duplicate), and audits the creation — all in one synced batch.
    pub fn create(
        &self,
        ctx: &CallerContext,
        file: &FileHashes,
        matches: &[Match],
        now: OffsetDateTime,
        actor: &str,
    ) -> Result<Report> {
        if !self.has_signer() {
            return Err(ReportError::NoSigningKey);
        }
        let body = build_body(
            ctx,
            file,
            matches,
            new_report_id()?,
            now,
            self.config.retention,
        )?;
        let bytes = json(&body)?;
        let details = &body.files[0].matches;
        let auto_ready = self.config.review.auto_ready(body.abuse_type, details);
        let status = if auto_ready.is_some() {
            ReportStatus::ReadyToSend
        } else {
            ReportStatus::PendingReview
        };
        let (_g, mut tx) = self.begin()?;
        let mut e = LedgerEntry::new(EntryKind::Report, &body.report_id, 0, &body.created_at);
        e.body_digest = Some(hex::encode(digest(&bytes)));
        e.status = Some(status);
        e.auto_ready = auto_ready.clone();
        e.retention_deadline = Some(body.retention_deadline.clone());
        e.abuse_type = Some(body.abuse_type);
        e.recipient = Some(body.recipient.organisation.clone());
        let seq = tx.append(e)?;
        let state = ReportState {
            seq,
            report_id: body.report_id.clone(),
            created_at: body.created_at.clone(),
            retention_deadline: body.retention_deadline.clone(),
            status,
            auto_ready,
            human_review: None,
            purged: None,
            abuse_type: body.abuse_type,
            recipient: body.recipient.organisation.clone(),
        };
        tx.put_state(&state)?;
        tx.batch.put_cf(self.cf(CF_BODIES)?, be(seq), &bytes);
        let meta = self.cf(CF_META)?;
        let mut idk = ID_PREFIX.to_vec();
        idk.extend_from_slice(body.report_id.as_bytes());
        tx.batch.put_cf(meta, idk, be(seq));
        let d = day(now);
        let mut ck = CASE_PREFIX.to_vec();
        ck.extend_from_slice(body.case_key.as_bytes());
        if self.store.db().get_cf(meta, &ck)?.is_some() {
            tx.count(&d, "case.duplicate", 1);
        } else {
            tx.batch.put_cf(meta, ck, d.as_bytes());
            tx.count(&d, "case.unique", 1);
        }
        tx.count(&d, "report.created", 1);
        tx.count(
            &d,
            &format!("report.abuse_type.{}", body.abuse_type.as_str()),
            1,
        );
        tx.count(
            &d,
            &format!("report.recipient.{}", body.recipient.organisation),
            1,
        );
        tx.count(&d, &format!("report.legal_basis.{}", body.legal_basis), 1);
        tx.count(
            &d,
            &format!("report.retention.{}", self.config.retention.label()),
            1,
        );
        if body.urgency.urgent {
            tx.count(&d, "report.urgent", 1);
        }
        if state.auto_ready.is_some() {
            tx.count(&d, "report.auto_ready", 1);
        }
        for m in details {
            tx.count(&d, "match.total", 1);
            tx.count(&d, &format!("match.hash_type.{}", m.hash_type), 1);
            tx.count(&d, &format!("match.list.{}", m.list), 1);
        }
        tx.audit(
            &body.created_at,
            actor,
            "report.create",
            Some(&body.report_id),
            Some(format!("status {status}")),
        )?;
        tx.commit()?;
        tracing::info!(report = %body.report_id, seq, %status, "report created");
        Ok(Report {
            state,
            body: Some(body),
        })
    }

    /// Count scanned content. Only counters: no hash, id or metadata of the content is stored.
    pub fn record_scans(&self, counts: &ScanCounts, now: OffsetDateTime) -> Result<()> {
        let (_g, mut tx) = self.begin()?;
        let d = day(now);
        let processed = counts.matched + counts.not_matched + counts.failed;
        tx.count(&d, "scan.processed", processed);
        tx.count(&d, "scan.matched", counts.matched);
        tx.count(&d, "scan.not_matched", counts.not_matched);
        tx.count(&d, "scan.suppressed", counts.suppressed);
        tx.count(&d, "scan.failed", counts.failed);
        if tx.counters.is_empty() {
            return Ok(());
        }
        tx.commit()
    }

    /// Find a report's sequence by report id or by its sequence number.
    pub fn resolve(&self, id_or_seq: &str) -> Result<u64> {
        let db = self.store.db();
        if let Ok(seq) = id_or_seq.parse::<u64>()
            && db.get_cf(self.cf(CF_STATE)?, be(seq))?.is_some()
        {
            return Ok(seq);
        }
        let mut k = ID_PREFIX.to_vec();
        k.extend_from_slice(id_or_seq.as_bytes());
        db.get_cf(self.cf(CF_META)?, k)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .ok_or_else(|| ReportError::NotFound(id_or_seq.to_string()))
    }

    fn state_at(&self, seq: u64) -> Result<ReportState> {
        let v = self
            .store
            .db()
            .get_cf(self.cf(CF_STATE)?, be(seq))?
            .ok_or_else(|| ReportError::NotFound(seq.to_string()))?;
        serde_json::from_slice(&v).map_err(|e| ReportError::Corrupt(format!("state {seq}: {e}")))
    }

    fn body_at(&self, seq: u64) -> Result<Option<ReportBody>> {
        match self.store.db().get_cf(self.cf(CF_BODIES)?, be(seq))? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    ReportError::Corrupt(format!("body {seq}: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// The signed ledger entry at `seq`.
    pub fn entry(&self, seq: u64) -> Result<SignedEntry> {
        let v = self
            .store
            .db()
            .get_cf(self.cf(CF_LEDGER)?, be(seq))?
            .ok_or_else(|| ReportError::NotFound(format!("ledger entry {seq}")))?;
        decode_entry(&v).map_err(|e| ReportError::Corrupt(format!("ledger entry {seq}: {e}")))
    }

    fn audit_only(
        &self,
        now: OffsetDateTime,
        actor: &str,
        action: &str,
        report_id: Option<&str>,
        detail: Option<String>,
    ) -> Result<()> {
        let (_g, mut tx) = self.begin()?;
        tx.audit(&rfc3339(now), actor, action, report_id, detail)?;
        tx.commit()
    }

    /// Read one report (audited as `report.read`).
    pub fn get(&self, id_or_seq: &str, actor: &str, now: OffsetDateTime) -> Result<Report> {
        let seq = self.resolve(id_or_seq)?;
        let state = self.state_at(seq)?;
        self.audit_only(now, actor, "report.read", Some(&state.report_id), None)?;
        let body = self.body_at(seq)?;
        Ok(Report { state, body })
    }

    /// Read one report for export: audited as `report.export` with the format, counted per
    /// recipient. Only `ready_to_send` reports, unless `draft`; never a purged one.
    pub fn get_for_export(
        &self,
        id_or_seq: &str,
        format: &str,
        draft: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(Report, SignedEntry)> {
        let seq = self.resolve(id_or_seq)?;
        // Under the writer lock: a concurrent review or purge cannot slip in between the checks
        // and the read.
        let (_g, mut tx) = self.begin()?;
        let state = self.state_at(seq)?;
        if let Some(p) = &state.purged {
            return Err(ReportError::Purged(
                state.report_id,
                format!("{} on {}", p.reason.as_str(), p.at),
            ));
        }
        if state.status != ReportStatus::ReadyToSend && !draft {
            return Err(ReportError::WrongState {
                id: state.report_id,
                action: "exported for sending (use a draft export to preview)",
                status: state.status.to_string(),
            });
        }
        let body = self
            .body_at(seq)?
            .ok_or_else(|| ReportError::Corrupt(format!("report {seq} has no body")))?;
        let entry = self.entry(seq)?;
        tx.audit(
            &rfc3339(now),
            actor,
            "report.export",
            Some(&state.report_id),
            Some(format!("{format}{}", if draft { " draft" } else { "" })),
        )?;
        if !draft {
            let d = day(now);
            tx.count(&d, "export.total", 1);
            tx.count(&d, &format!("export.recipient.{}", state.recipient), 1);
        }
        tx.commit()?;
        Ok((
            Report {
                state,
                body: Some(body),
            },
            entry,
        ))
    }

    /// Every report's state, oldest first (audited once as `report.list`).
    pub fn list(&self, actor: &str, now: OffsetDateTime) -> Result<Vec<ReportState>> {
        let out = self.states()?;
        self.audit_only(
            now,
            actor,
            "report.list",
            None,
            Some(format!("{} reports", out.len())),
        )?;
        Ok(out)
    }

    fn states(&self) -> Result<Vec<ReportState>> {
        let mut out = Vec::new();
        for item in self
            .store
            .db()
            .iterator_cf(self.cf(CF_STATE)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| ReportError::Corrupt(format!("state: {e}")))?,
            );
        }
        Ok(out)
    }

    /// A human decision. `confirmed` makes the report ready to send; `rejected` marks a false
    /// positive, counts it against each (hash type, list, threshold) that produced it, and
    /// purges the report's personal data at once. The reviewer id must be a pseudonym.
    pub fn review(
        &self,
        id_or_seq: &str,
        decision: Decision,
        reviewer: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<ReportState> {
        if !valid_pseudonym(reviewer) {
            return Err(ReportError::Invalid(
                "the reviewer id must be a pseudonym: 1-64 of letters, digits, '.', '_', ':', '-' (no names, no email addresses)".into(),
            ));
        }
        if !self.has_signer() {
            return Err(ReportError::NoSigningKey);
        }
        let seq = self.resolve(id_or_seq)?;
        let (_g, mut tx) = self.begin()?;
        // Read under the lock: two reviewers racing cannot both decide.
        let mut state = self.state_at(seq)?;
        if let Some(p) = &state.purged {
            return Err(ReportError::Purged(
                state.report_id,
                format!("{} on {}", p.reason.as_str(), p.at),
            ));
        }
        if state.human_review.is_some() {
            return Err(ReportError::WrongState {
                id: state.report_id,
                action: "reviewed again",
                status: state.status.to_string(),
            });
        }
        let body = self
            .body_at(seq)?
            .ok_or_else(|| ReportError::Corrupt(format!("report {seq} has no body")))?;
        let at = rfc3339(now);
        let review = HumanReview {
            decision,
            reviewer_pseudonym: reviewer.to_string(),
            at: at.clone(),
        };
        let status = match decision {
            Decision::Confirmed => ReportStatus::ReadyToSend,
            Decision::Rejected => ReportStatus::Rejected,
        };
        let mut e = LedgerEntry::new(EntryKind::Review, &state.report_id, seq, &at);
        e.status = Some(status);
        e.review = Some(review.clone());
        tx.append(e)?;
        state.status = status;
        state.human_review = Some(review);
        let d = day(now);
        let word = match decision {
            Decision::Confirmed => "confirmed",
            Decision::Rejected => "rejected",
        };
        tx.count(&d, &format!("review.{word}"), 1);
        // One count per distinct technology, list and threshold that produced this report.
        let mut types = BTreeSet::new();
        let mut lists = BTreeSet::new();
        let mut thresholds = BTreeSet::new();
        for m in body.files.iter().flat_map(|f| &f.matches) {
            types.insert(m.hash_type.clone());
            lists.insert(m.list.clone());
            thresholds.insert(format!("{}@{}", m.hash_type, m.threshold));
        }
        for t in types {
            tx.count(&d, &format!("review.{word}.hash_type.{t}"), 1);
        }
        for l in lists {
            tx.count(&d, &format!("review.{word}.list.{l}"), 1);
        }
        for t in thresholds {
            tx.count(&d, &format!("review.{word}.threshold.{t}"), 1);
        }
        tx.audit(
            &at,
            actor,
            "report.review",
            Some(&state.report_id),
            Some(format!("{word} by {reviewer}")),
        )?;
        if decision == Decision::Rejected {
            self.stage_purge(&mut tx, &mut state, PurgeReason::FalsePositive, now, actor)?;
        } else {
            tx.put_state(&state)?;
        }
        tx.commit()?;
        drop(_g);
        if decision == Decision::Rejected {
            self.scrub()?;
        }
        Ok(state)
    }

    fn stage_purge(
        &self,
        tx: &mut Tx<'_>,
        state: &mut ReportState,
        reason: PurgeReason,
        now: OffsetDateTime,
        actor: &str,
    ) -> Result<()> {
        let at = rfc3339(now);
        let purged = Purged {
            at: at.clone(),
            reason,
        };
        let mut e = LedgerEntry::new(EntryKind::Purge, &state.report_id, state.seq, &at);
        e.purge = Some(purged.clone());
        tx.append(e)?;
        state.purged = Some(purged);
        tx.put_state(state)?;
        tx.batch.delete_cf(self.cf(CF_BODIES)?, be(state.seq));
        tx.count(&day(now), &format!("purge.{}", reason.as_str()), 1);
        tx.audit(
            &at,
            actor,
            "report.purge",
            Some(&state.report_id),
            Some(reason.as_str().to_string()),
        )?;
        Ok(())
    }

    /// Purge every report whose retention deadline is at or before `now`: the body (all
    /// personal data) goes, a signed purge entry and the redaction state stay. Each report is
    /// its own synced batch; the deleted data is then flushed and compacted out of the files.
    pub fn purge_expired(&self, now: OffsetDateTime, actor: &str) -> Result<PurgeSummary> {
        if !self.has_signer() {
            return Err(ReportError::NoSigningKey);
        }
        let mut summary = PurgeSummary::default();
        for s in self.states()? {
            if s.purged.is_some() {
                continue;
            }
            // One unreadable deadline must not keep every other report past its own.
            match parse_time(&s.retention_deadline) {
                Ok(deadline) if deadline > now => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(report = %s.report_id, error = %e, "unreadable retention deadline; verify the ledger");
                    continue;
                }
            }
            let (_g, mut tx) = self.begin()?;
            let mut state = self.state_at(s.seq)?;
            if state.purged.is_some() {
                continue;
            }
            self.stage_purge(
                &mut tx,
                &mut state,
                PurgeReason::RetentionExpired,
                now,
                actor,
            )?;
            tx.commit()?;
            summary.purged.push(state.report_id);
        }
        if !summary.purged.is_empty() {
            tracing::info!(purged = summary.purged.len(), "expired reports purged");
            self.scrub()?;
        }
        Ok(summary)
    }

    /// Make deleted bodies physically gone: flush every memtable (so no WAL file still holds
    /// them and RocksDB deletes the old logs) and compact the bodies down to the last level.
    fn scrub(&self) -> Result<()> {
        let db = self.store.db();
        // All column families in one flush: the old log is obsolete only when every family
        // that wrote to it is flushed (and this is one atomic flush where that is enabled).
        let cfs = Store::column_families()
            .map(|n| self.cf(n))
            .collect::<Result<Vec<_>>>()?;
        db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        db.compact_range_cf_opt(self.cf(CF_BODIES)?, None::<&[u8]>, None::<&[u8]>, &o);
        Ok(())
    }

    /// Run [`ReportStore::purge_expired`] every `interval` on a background thread, with the
    /// wall clock, until the returned guard is dropped.
    pub fn spawn_purger(this: &Arc<ReportStore>, interval: std::time::Duration) -> Purger {
        let weak = Arc::downgrade(this);
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("baken-report-purge".into())
            .spawn(move || {
                loop {
                    {
                        let (lock, cv) = &*stop2;
                        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                        let (guard, _) = cv
                            .wait_timeout_while(guard, interval, |stopped| !*stopped)
                            .unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            break;
                        }
                    }
                    let Some(rs) = weak.upgrade() else { break };
                    if let Err(e) = rs.purge_expired(OffsetDateTime::now_utc(), "retention-task") {
                        tracing::error!(error = %e, "purging expired reports failed");
                    }
                }
            })
            .ok();
        Purger { stop, handle }
    }

    /// The access audit, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for item in self
            .store
            .db()
            .iterator_cf(self.cf(CF_AUDIT)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| ReportError::Corrupt(format!("audit record: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Counters summed over the days `from..=to` (`YYYY-MM-DD`), by dimension.
    pub fn counters(&self, from: &str, to: &str) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        let mut it = self.store.db().raw_iterator_cf(self.cf(CF_COUNTERS)?);
        it.seek(from.as_bytes());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some((d, dim)) = std::str::from_utf8(k).ok().and_then(|k| k.split_once('/')) else {
                return Err(ReportError::Corrupt("counter key".into()));
            };
            if d > to {
                break;
            }
            let n = v
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| ReportError::Corrupt("counter value".into()))?;
            *out.entry(dim.to_string()).or_default() += n;
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Record a statistics run in the audit (stats read only counters).
    pub fn audit_stats(
        &self,
        from: &str,
        to: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        self.audit_only(
            now,
            actor,
            "report.stats",
            None,
            Some(format!("{from}..{to}")),
        )
    }

    /// Check every signature, the chain, the bodies, the states and the audit chain. Needs only
    /// the public key. Audited as `report.verify`.
    pub fn verify(
        &self,
        key: &PublicKey,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<VerifyOutcome> {
        let out = self.verify_quiet(key)?;
        self.audit_only(
            now,
            actor,
            "report.verify",
            None,
            Some(if out.ok {
                "ok".to_string()
            } else {
                format!("{} problems", out.problems.len())
            }),
        )?;
        Ok(out)
    }

    /// [`ReportStore::verify`] without its audit record: for a copy opened read-only (a
    /// backup being checked), where nothing may be written.
    pub fn verify_read_only(&self, key: &PublicKey) -> Result<VerifyOutcome> {
        self.verify_quiet(key)
    }

    fn verify_quiet(&self, key: &PublicKey) -> Result<VerifyOutcome> {
        let db = self.store.db();
        let key_id = key.key_id();
        // The keys as the rotation entries claim them: the first rotation spells out the first
        // key. The anchor may be any of them: every rotation below is checked both ways (the
        // old key signs it, the new key signs the statement naming the old key and the ledger
        // before it), so trust runs from any key of the chain to all the others. An anchor
        // outside the chain verifies nothing but entries it signed itself.
        let claims = self.rotation_claims()?;
        let genesis = match claims.first().and_then(|c| c.old.clone()) {
            Some(g) if g == *key || claims.iter().any(|c| c.new.as_ref() == Some(key)) => g,
            _ => key.clone(),
        };
        let mut active = genesis.clone();
        let mut retired: BTreeMap<String, u64> = BTreeMap::new();
        let mut keys = vec![KeyEpoch {
            key_id: genesis.key_id(),
            public_key: genesis.to_hex(),
            active_from_seq: 1,
            retired_at_seq: None,
        }];
        let mut problems = Vec::new();
        let mut prev = [0u8; 32];
        let mut expected = 1u64;
        let mut last = 0u64;
        let mut entries = 0u64;
        let mut derived: BTreeMap<u64, ReportState> = BTreeMap::new();
        let mut body_digests: BTreeMap<u64, String> = BTreeMap::new();
        let states: BTreeMap<u64, ReportState> = self
            .states_raw()?
            .into_iter()
            .filter_map(|(k, v)| v.map(|s| (k, s)))
            .collect();
        // The id index survives an attacker who deleted a report's entry, body and state
        // together; it names the report whose entry is gone.
        let ids = self.id_index()?;
        let name_of = |seq: u64| {
            states
                .get(&seq)
                .map(|s| s.report_id.clone())
                .or_else(|| ids.get(&seq).cloned())
        };
        let mut prev_report: Option<String> = None;
        for item in db.iterator_cf(self.cf(CF_LEDGER)?, IteratorMode::Start) {
            let (k, v) = item?;
            let seq = k
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| ReportError::Corrupt("ledger key".into()))?;
            entries += 1;
            let gap = seq != expected;
            if gap {
                let after = prev_report
                    .as_deref()
                    .map(|r| format!(", after an entry of report {r}"))
                    .unwrap_or_default();
                for missing in expected..seq {
                    let named = name_of(missing);
                    problems.push(Problem {
                        seq: Some(missing),
                        message: match &named {
                            Some(id) => format!(
                                "ledger entry {missing} (report {id}) is missing: it was deleted{after}"
                            ),
                            None => {
                                format!("ledger entry {missing} is missing: it was deleted{after}")
                            }
                        },
                        report_id: named,
                        kind: "missing_entry",
                    });
                }
            }
            expected = seq + 1;
            last = seq;
            let se = match decode_entry(&v) {
                Ok(se) => se,
                Err(e) => {
                    problems.push(Problem {
                        seq: Some(seq),
                        report_id: name_of(seq),
                        kind: "unreadable",
                        message: format!("ledger entry {seq} cannot be read: {e}"),
                    });
                    prev = digest(&v);
                    continue;
                }
            };
            let e = &se.entry;
            let rotation = e.kind == EntryKind::KeyRotation;
            let who = if rotation {
                format!(
                    "ledger entry {seq} (key rotation to key {})",
                    e.new_key_id.as_deref().unwrap_or("?")
                )
            } else {
                format!(
                    "ledger entry {seq} ({} of report {})",
                    e.kind.as_str(),
                    e.report_id
                )
            };
            let rid = (!rotation).then(|| e.report_id.clone());
            let active_id = active.key_id();
            let signed = e.key_id == active_id && active.verify(&se.bytes, &se.signature);
            if rotation {
                match check_rotation(&se, seq, signed, &active, &retired) {
                    Ok(new) => {
                        retired.insert(active_id, seq);
                        if let Some(k) = keys.last_mut() {
                            k.retired_at_seq = Some(seq);
                        }
                        keys.push(KeyEpoch {
                            key_id: new.key_id(),
                            public_key: new.to_hex(),
                            active_from_seq: seq + 1,
                            retired_at_seq: None,
                        });
                        active = new;
                    }
                    Err(why) => problems.push(Problem {
                        seq: Some(seq),
                        report_id: None,
                        kind: "bad_rotation",
                        message: format!("{who}: {why}; the key it names is not trusted"),
                    }),
                }
            } else if e.key_id != active_id {
                problems.push(match retired.get(&e.key_id) {
                    Some(at) => Problem {
                        seq: Some(seq),
                        report_id: rid.clone(),
                        kind: "retired_key",
                        message: format!(
                            "{who} is signed by key {}, which was retired at entry {at}: written with a rotated-out key",
                            e.key_id
                        ),
                    },
                    None => Problem {
                        seq: Some(seq),
                        report_id: rid.clone(),
                        kind: "wrong_key",
                        message: format!("{who} names key {}, not {active_id}", e.key_id),
                    },
                });
            } else if !signed || e.seq != seq {
                problems.push(Problem {
                    seq: Some(seq),
                    report_id: rid.clone(),
                    kind: "bad_signature",
                    message: format!("{who}: the signature does not match: the entry was altered"),
                });
            }
            if !gap && e.prev_digest != hex::encode(prev) {
                problems.push(Problem {
                    seq: Some(seq),
                    report_id: rid.clone(),
                    kind: "chain_break",
                    message: format!(
                        "{who} does not follow entry {}: that entry was altered or replaced",
                        seq.saturating_sub(1)
                    ),
                });
            }
            prev = se.digest;
            if rotation {
                continue;
            }
            prev_report = Some(e.report_id.clone());
            match e.kind {
                EntryKind::Report => {
                    if let Some(d) = &e.body_digest {
                        body_digests.insert(seq, d.clone());
                    }
                    derived.insert(
                        seq,
                        ReportState {
                            seq,
                            report_id: e.report_id.clone(),
                            created_at: e.at.clone(),
                            retention_deadline: e.retention_deadline.clone().unwrap_or_default(),
                            status: e.status.unwrap_or(ReportStatus::PendingReview),
                            auto_ready: e.auto_ready.clone(),
                            human_review: None,
                            purged: None,
                            abuse_type: e.abuse_type.unwrap_or(super::AbuseType::KnownCsam),
                            recipient: e.recipient.clone().unwrap_or_default(),
                        },
                    );
                }
                EntryKind::KeyRotation => {}
                EntryKind::Review | EntryKind::Purge => {
                    let Some(s) = derived.get_mut(&e.report_seq) else {
                        problems.push(Problem {
                            seq: Some(seq),
                            report_id: Some(e.report_id.clone()),
                            kind: "missing_entry",
                            message: format!(
                                "{who} refers to report entry {}, which is missing",
                                e.report_seq
                            ),
                        });
                        continue;
                    };
                    if let Some(r) = &e.review {
                        s.human_review = Some(r.clone());
                    }
                    if let Some(st) = e.status {
                        s.status = st;
                    }
                    if let Some(p) = &e.purge {
                        s.purged = Some(p.clone());
                    }
                }
            }
        }
        let (head_seq, head_digest) = read_head(db.get_cf(self.cf(CF_META)?, LEDGER_HEAD)?)?;
        if head_seq > last {
            problems.push(Problem {
                seq: Some(last + 1),
                report_id: name_of(last + 1),
                kind: "truncated",
                message: format!(
                    "ledger entries {}..={head_seq} are missing (the ledger head says {head_seq} entries){}",
                    last + 1,
                    name_of(last + 1)
                        .map(|id| format!(": the entry of report {id} was cut off"))
                        .unwrap_or_default()
                ),
            });
        } else if head_seq < last || (last > 0 && head_digest != prev) {
            problems.push(Problem {
                seq: Some(last),
                report_id: None,
                kind: "chain_break",
                message: format!(
                    "the ledger head (entry {head_seq}) does not match the last entry ({last})"
                ),
            });
        }
        // Bodies: present ones must match their signed digest; absent ones need a signed purge.
        let mut bodies = BTreeSet::new();
        for item in db.iterator_cf(self.cf(CF_BODIES)?, IteratorMode::Start) {
            let (k, v) = item?;
            let seq = k
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| ReportError::Corrupt("body key".into()))?;
            bodies.insert(seq);
            let id = derived.get(&seq).map(|s| s.report_id.clone());
            match body_digests.get(&seq) {
                None => problems.push(Problem {
                    seq: Some(seq),
                    report_id: id.or_else(|| name_of(seq)),
                    kind: "unsigned_body",
                    message: format!("report body {seq} has no signed creation entry"),
                }),
                Some(d) if *d != hex::encode(digest(&v)) => problems.push(Problem {
                    seq: Some(seq),
                    message: format!(
                        "report {}: its body does not match the signed digest: it was altered",
                        id.as_deref().unwrap_or("?")
                    ),
                    report_id: id,
                    kind: "body_altered",
                }),
                Some(_) => {
                    if derived.get(&seq).is_some_and(|s| s.purged.is_some()) {
                        problems.push(Problem {
                            seq: Some(seq),
                            report_id: id.clone(),
                            kind: "body_missing",
                            message: format!(
                                "report {}: purged, yet its body is still stored",
                                id.as_deref().unwrap_or("?")
                            ),
                        });
                    }
                }
            }
        }
        let mut purged = 0;
        for (seq, s) in &derived {
            if s.purged.is_some() {
                purged += 1;
            } else if !bodies.contains(seq) {
                problems.push(Problem {
                    seq: Some(*seq),
                    report_id: Some(s.report_id.clone()),
                    kind: "body_missing",
                    message: format!(
                        "report {}: its body was deleted without a signed purge",
                        s.report_id
                    ),
                });
            }
            match states.get(seq) {
                None => problems.push(Problem {
                    seq: Some(*seq),
                    report_id: Some(s.report_id.clone()),
                    kind: "state_missing",
                    message: format!("report {}: its state record was deleted", s.report_id),
                }),
                Some(st) if st != s => problems.push(Problem {
                    seq: Some(*seq),
                    report_id: Some(s.report_id.clone()),
                    kind: "state_mismatch",
                    message: format!(
                        "report {}: its stored state (status {}) does not match its signed history (status {})",
                        s.report_id, st.status, s.status
                    ),
                }),
                Some(_) => {}
            }
        }
        for (seq, st) in &states {
            if !derived.contains_key(seq) && !problems.iter().any(|p| p.seq == Some(*seq)) {
                problems.push(Problem {
                    seq: Some(*seq),
                    report_id: Some(st.report_id.clone()),
                    kind: "unsigned_state",
                    message: format!(
                        "report {} has a state but no signed creation entry",
                        st.report_id
                    ),
                });
            }
        }
        let audit_records = self.verify_audit(&mut problems)?;
        problems.sort_by_key(|p| p.seq.unwrap_or(u64::MAX));
        Ok(VerifyOutcome {
            ok: problems.is_empty(),
            key_id,
            active_key_id: active.key_id(),
            keys,
            entries,
            reports: derived.len() as u64,
            purged,
            head_seq: last,
            head_digest: hex::encode(prev),
            audit_records,
            problems,
        })
    }

    /// Report seq → report id, from the id index in `report_meta`.
    fn id_index(&self) -> Result<BTreeMap<u64, String>> {
        let mut out = BTreeMap::new();
        let mut it = self.store.db().raw_iterator_cf(self.cf(CF_META)?);
        it.seek(ID_PREFIX);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some(id) = k.strip_prefix(ID_PREFIX) else {
                break;
            };
            if let Ok(seq) = v.try_into().map(u64::from_be_bytes) {
                out.insert(seq, String::from_utf8_lossy(id).into_owned());
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn states_raw(&self) -> Result<Vec<(u64, Option<ReportState>)>> {
        let mut out = Vec::new();
        for item in self
            .store
            .db()
            .iterator_cf(self.cf(CF_STATE)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let seq = k
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| ReportError::Corrupt("state key".into()))?;
            out.push((seq, serde_json::from_slice(&v).ok()));
        }
        Ok(out)
    }

    fn verify_audit(&self, problems: &mut Vec<Problem>) -> Result<u64> {
        let db = self.store.db();
        let mut prev = [0u8; 32];
        let mut expected = 1u64;
        let mut n = 0;
        for item in db.iterator_cf(self.cf(CF_AUDIT)?, IteratorMode::Start) {
            let (k, v) = item?;
            n += 1;
            let seq = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            let rec: Option<AuditEntry> = serde_json::from_slice(&v).ok();
            let linked = rec
                .as_ref()
                .is_some_and(|r| r.seq == seq && r.prev == hex::encode(prev));
            if seq != expected || !linked {
                problems.push(Problem {
                    seq: None,
                    report_id: rec.and_then(|r| r.report_id),
                    kind: "audit_chain",
                    message: format!(
                        "audit record {seq} does not follow record {}: the audit log was altered or records were deleted",
                        expected.saturating_sub(1)
                    ),
                });
            }
            prev = digest(&v);
            expected = seq + 1;
        }
        let (head, head_digest) = read_head(db.get_cf(self.cf(CF_META)?, AUDIT_HEAD)?)?;
        if head != expected - 1 || (head > 0 && head_digest != prev) {
            problems.push(Problem {
                seq: None,
                report_id: None,
                kind: "audit_chain",
                message: format!(
                    "the audit head says {head} records, the log ends at {}",
                    expected - 1
                ),
            });
        }
        Ok(n)
    }
}

/// Check a key-rotation entry at `seq` against the key active there: signed by it (`signed`),
/// naming it as the old key, naming a valid new key that never signed this ledger before, and
/// carrying the new key's signature over the rotation statement. The new key, or why not.
fn check_rotation(
    se: &SignedEntry,
    seq: u64,
    signed: bool,
    active: &PublicKey,
    retired: &BTreeMap<String, u64>,
) -> std::result::Result<PublicKey, String> {
    let e = &se.entry;
    let active_id = active.key_id();
    if e.key_id != active_id {
        return Err(format!(
            "signed by key {}, not by the key active at that point ({active_id}): a forged rotation",
            e.key_id
        ));
    }
    if !signed || e.seq != seq {
        return Err(format!(
            "the signature of the active key {active_id} does not match: the entry was altered or forged"
        ));
    }
    if e.old_public_key.as_deref() != Some(active.to_hex().as_str()) {
        return Err(format!(
            "it does not name the active key {active_id} as the key it retires"
        ));
    }
    let new = e
        .new_public_key
        .as_deref()
        .and_then(|h| PublicKey::parse(h).ok())
        .ok_or("it names no valid new public key")?;
    let new_id = new.key_id();
    if e.new_key_id.as_deref() != Some(new_id.as_str()) {
        return Err("its new_key_id does not match its new public key".into());
    }
    if new_id == active_id || retired.contains_key(&new_id) {
        return Err(format!("key {new_id} already signed this ledger"));
    }
    let prev: [u8; 32] = hex::decode(&e.prev_digest)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or("its prev_digest is not a SHA-256")?;
    let proof = e
        .new_key_proof
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    if !new.verify_rotation(&rotation_statement(seq, &prev, active, &new), &proof) {
        return Err(format!(
            "key {new_id} did not sign the rotation statement: no proof that its holder made this rotation"
        ));
    }
    Ok(new)
}

/// Stops the purge thread when dropped.
pub struct Purger {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Purger {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
