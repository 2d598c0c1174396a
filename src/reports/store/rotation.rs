//! Signing-key rotation: a rotation entry signed by the old and the new key, the ledger's
//! key epochs, and the data directory's key file swap.

use super::*;

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
pub(super) struct RotationClaim {
    pub(super) old: Option<PublicKey>,
    pub(super) new: Option<PublicKey>,
}

impl ReportStore {
    /// `signer` if it is the ledger's active key (or the ledger is empty).
    pub(super) fn check_active(&self, signer: Signer) -> Result<Signer> {
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
            crate::datadir::rename_durable(&next, &default)?;
            tracing::warn!(key_id = %active, path = %default.display(), "finished an interrupted key rotation: the new key replaced the retired one");
            return Ok(n);
        }
        Err(ReportError::NotActiveKey { key_id, active })
    }

    /// The id of the key that signs the next ledger entry: the signer of the last entry, or
    /// the new key when the last entry is a rotation. `None` for an empty ledger. (Unverified:
    /// `verify` checks the whole chain; an unreadable last entry is left to it.)
    pub fn active_key_id(&self) -> Result<Option<String>> {
        let db = self.store.database();
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
    pub(super) fn rotation_claims(&self) -> Result<Vec<RotationClaim>> {
        let mut out = Vec::new();
        let parse = |h: &Option<String>| h.as_deref().and_then(|h| PublicKey::parse(h).ok());
        for item in self.all(CF_LEDGER)? {
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
        if let Some(item) = self.all(CF_LEDGER)?.next()
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
        crate::datadir::rename_durable(&next, &default)?;
        Ok(DataDirRotation {
            rotation,
            key_file: default,
            retired_key_file: retired,
        })
    }
}

/// Check a key-rotation entry at `seq` against the key active there: signed by it (`signed`),
/// naming it as the old key, naming a valid new key that never signed this ledger before, and
/// carrying the new key's signature over the rotation statement. The new key, or why not.
pub(super) fn check_rotation(
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
