//! The ledger's entries (signed, chained) and the access audit's records, and [`Tx`]: the
//! one synced batch every acknowledged write is.

use super::*;

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
    pub(super) fn as_str(self) -> &'static str {
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
    pub abuse_type: Option<crate::reports::AbuseType>,
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
    pub(super) fn new(kind: EntryKind, report_id: &str, report_seq: u64, at: &str) -> Self {
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

pub(super) fn decode_entry(v: &[u8]) -> std::result::Result<SignedEntry, String> {
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

/// Writes of one operation, committed as one synced batch under the writer lock.
pub(super) struct Tx<'a> {
    pub(super) rs: &'a ReportStore,
    pub(super) batch: WriteBatch,
    pub(super) ledger: (u64, [u8; 32]),
    pub(super) audit: (u64, [u8; 32]),
    pub(super) counters: BTreeMap<Vec<u8>, u64>,
    pub(super) ledger_changed: bool,
    pub(super) audit_changed: bool,
}

impl Tx<'_> {
    pub(super) fn append(&mut self, mut e: LedgerEntry) -> Result<u64> {
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

    pub(super) fn audit(
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

    pub(super) fn count(&mut self, day: &str, dim: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut k = day.as_bytes().to_vec();
        k.push(b'/');
        k.extend_from_slice(dim.as_bytes());
        *self.counters.entry(k).or_default() += n;
    }

    pub(super) fn put_state(&mut self, s: &ReportState) -> Result<()> {
        self.batch
            .put_cf(self.rs.cf(CF_STATE)?, be(s.seq), json(s)?);
        Ok(())
    }

    pub(super) fn commit(mut self) -> Result<()> {
        let db = self.rs.store.database();
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
