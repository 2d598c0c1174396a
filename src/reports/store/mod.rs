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

mod ledger;
mod rotation;
mod verify;

use ledger::*;
pub use ledger::{
    AuditEntry, ENTRY_VERSION, EntryKind, LedgerEntry, ROTATION_ENTRY_VERSION, SignedEntry,
};
use rotation::*;
pub use rotation::{DataDirRotation, KeyEpoch, KeyRotation};
pub use verify::{Problem, VerifyOutcome};

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

    /// The ledger head: last seq and the SHA-256 (hex) of its stored entry.
    pub fn ledger_head(&self) -> Result<(u64, String)> {
        let (seq, d) = read_head(
            self.store
                .database()
                .get_cf(self.cf(CF_META)?, LEDGER_HEAD)?,
        )?;
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
        Ok(self.store.database().cf(name)?)
    }

    /// Every record of one of this module's column families, in key order.
    fn all(&self, name: &str) -> Result<rocksdb::DBIteratorWithThreadMode<'_, rocksdb::DB>> {
        Ok(self
            .store
            .database()
            .iterator_cf(self.cf(name)?, IteratorMode::Start))
    }

    fn begin(&self) -> Result<(std::sync::MutexGuard<'_, ()>, Tx<'_>)> {
        // Batches are atomic, so a panic under the lock leaves nothing half-written.
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.store.database();
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
        if self.store.database().get_cf(meta, &ck)?.is_some() {
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
        let db = self.store.database();
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
            .database()
            .get_cf(self.cf(CF_STATE)?, be(seq))?
            .ok_or_else(|| ReportError::NotFound(seq.to_string()))?;
        serde_json::from_slice(&v).map_err(|e| ReportError::Corrupt(format!("state {seq}: {e}")))
    }

    fn body_at(&self, seq: u64) -> Result<Option<ReportBody>> {
        match self.store.database().get_cf(self.cf(CF_BODIES)?, be(seq))? {
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
            .database()
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
        for item in self.all(CF_STATE)? {
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
        let db = self.store.database();
        // All column families in one flush: the old log is obsolete only when every family
        // that wrote to it is flushed (and this is one atomic flush where that is enabled).
        let cfs = crate::db::column_families()
            .map(|spec| self.cf(spec.name))
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
        for item in self.all(CF_AUDIT)? {
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
        let mut it = self.store.database().raw_iterator_cf(self.cf(CF_COUNTERS)?);
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
