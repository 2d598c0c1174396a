//! `verify`: every signature, the chain, bodies, states and the audit log, checked in passes;
//! each problem names the entry and report it concerns.

use super::*;

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

impl ReportStore {
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

    pub(super) fn verify_quiet(&self, key: &PublicKey) -> Result<VerifyOutcome> {
        let db = self.store.database();
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
        for item in self.all(CF_LEDGER)? {
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
                            abuse_type: e
                                .abuse_type
                                .unwrap_or(crate::reports::AbuseType::KnownCsam),
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
        for item in self.all(CF_BODIES)? {
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
    pub(super) fn id_index(&self) -> Result<BTreeMap<u64, String>> {
        let mut out = BTreeMap::new();
        let mut it = self.store.database().raw_iterator_cf(self.cf(CF_META)?);
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

    pub(super) fn states_raw(&self) -> Result<Vec<(u64, Option<ReportState>)>> {
        let mut out = Vec::new();
        for item in self.all(CF_STATE)? {
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

    pub(super) fn verify_audit(&self, problems: &mut Vec<Problem>) -> Result<u64> {
        let db = self.store.database();
        let mut prev = [0u8; 32];
        let mut expected = 1u64;
        let mut n = 0;
        for item in self.all(CF_AUDIT)? {
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
