//! List replication, the parts that are not transport: the signed form of a pull, the
//! writer's list-signing key, and applying a verified pull to a replica's store.
//!
//! A pull of list L from version `a` to `b` is a sequence of entry records (key, stored value)
//! followed by an end: L's metadata at `b`, `a`, `b`, the count, a SHA-256 digest chained over
//! the records, and an Ed25519 signature over [`signed_message`]. The replica stages records as
//! they arrive (bounded memory: a pull can be a whole 10M-entry list), feeds them to the same
//! digest, and commits only when the end's digest, count and signature check out against the
//! writer's public key it was configured with. Anything else drops the staged change, so a
//! list is always at a version the writer signed.
//!
//! The gRPC side (the writer's RPCs, the replica's follower loop, forwarding reports) lives in
//! `service::replication`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::reports::{PublicKey, Signer};
use crate::store::{ListMeta, Store, StoreError};

/// Key file of the writer's list-signing key in the data directory's `keys/`.
pub const LIST_KEY_FILE: &str = "list-signing.key";

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("list-signing key: {0}")]
    Key(String),
    #[error("pull of list {list} rejected: {reason}")]
    Rejected { list: String, reason: String },
}

pub type Result<T> = std::result::Result<T, ReplicationError>;

/// The running digest of a pull's records, in the order sent.
#[derive(Clone, Default)]
pub struct PullDigest {
    h: Sha256,
    n: u64,
}

impl PullDigest {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        // Length-prefixed, so no two different sequences hash alike.
        self.h.update((key.len() as u64).to_be_bytes());
        self.h.update(key);
        self.h.update((value.len() as u64).to_be_bytes());
        self.h.update(value);
        self.n += 1;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn finish(self) -> [u8; 32] {
        self.h.finalize().into()
    }
}

/// What the writer signs: a domain tag, the list's metadata bytes, the version range, the
/// number of records and their digest.
pub fn signed_message(list: &[u8], from: u64, to: u64, entries: u64, digest: &[u8]) -> Vec<u8> {
    let mut m = b"baken.list-pull.v1\n".to_vec();
    m.extend_from_slice(&Sha256::digest(list));
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(&to.to_be_bytes());
    m.extend_from_slice(&entries.to_be_bytes());
    m.extend_from_slice(digest);
    m
}

/// The end of a pull, as the writer signs it and the replica checks it.
#[derive(Debug, Clone)]
pub struct PullEnd {
    pub list: Vec<u8>,
    pub from: u64,
    pub to: u64,
    pub entries: u64,
    pub digest: [u8; 32],
    pub key_id: String,
    pub signature: Vec<u8>,
}

impl PullEnd {
    /// Sign the end of a pull whose records went through `digest`.
    pub fn sign(signer: &Signer, meta: &ListMeta, from: u64, digest: PullDigest) -> Result<Self> {
        let list = serde_json::to_vec(meta).map_err(|e| ReplicationError::Key(e.to_string()))?;
        let entries = digest.count();
        let digest = digest.finish();
        let signature = signer
            .sign(&signed_message(&list, from, meta.version, entries, &digest))
            .to_vec();
        Ok(PullEnd {
            list,
            from,
            to: meta.version,
            entries,
            digest,
            key_id: signer.public().key_id(),
            signature,
        })
    }
}

/// The writer's list-signing key: `configured`, else `<data>/keys/list-signing.key`, generated
/// (0600) on first use.
pub fn load_or_generate_key(data: &Path, configured: Option<&Path>) -> Result<Signer> {
    if let Some(p) = configured {
        return Signer::load(p).map_err(|e| ReplicationError::Key(e.to_string()));
    }
    let path = default_key_path(data);
    if path.exists() {
        return Signer::load(&path).map_err(|e| ReplicationError::Key(e.to_string()));
    }
    let s = Signer::generate().map_err(|e| ReplicationError::Key(e.to_string()))?;
    s.save(&path)
        .map_err(|e| ReplicationError::Key(e.to_string()))?;
    tracing::info!(key_id = %s.public().key_id(), path = %path.display(), "generated the list-signing key");
    Ok(s)
}

pub fn default_key_path(data: &Path) -> PathBuf {
    crate::datadir::DataDir::new(data)
        .keys()
        .join(LIST_KEY_FILE)
}

/// Read the writer's list-signing public keys: one or more PEM blocks or hex lines (as
/// `baken list public-key` prints them; `#` comments allowed). More than one key lets a
/// list-signing key be rotated without a gap: replicas trust old and new while the writer
/// switches.
pub fn load_public_keys(path: &Path) -> Result<Vec<PublicKey>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplicationError::Key(format!("reading {}: {e}", path.display())))?;
    let bad = |e: String| ReplicationError::Key(format!("{}: {e}", path.display()));
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    if text.contains("-----BEGIN") {
        for block in text
            .split_inclusive(END)
            .filter(|b| b.contains("-----BEGIN"))
        {
            keys.push(PublicKey::parse(block).map_err(|e| bad(e.to_string()))?);
        }
    } else {
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                keys.push(PublicKey::parse(line).map_err(|e| bad(e.to_string()))?);
            }
        }
    }
    if keys.is_empty() {
        return Err(bad("no public key in it".into()));
    }
    Ok(keys)
}

/// A pull being applied to a replica's store: records are staged as they arrive; [`finish`]
/// commits only if the end verifies. Dropping it unfinished rolls everything back.
///
/// [`finish`]: Applier::finish
pub struct Applier<'a> {
    change: crate::store::Change<'a>,
    digest: PullDigest,
    writer: ListMeta,
    from: u64,
}

impl<'a> Applier<'a> {
    /// Begin applying a pull of `writer` (the list's metadata at the pull's target version, as
    /// the pull's start announced it; the signed end must repeat it) from version `from`.
    pub fn begin(store: &'a Store, writer: &ListMeta, from: u64, actor: &str) -> Result<Self> {
        Ok(Applier {
            change: store.begin_replicated(writer, actor)?,
            digest: PullDigest::default(),
            writer: writer.clone(),
            from,
        })
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.digest.add(key, value);
        self.change.put_replicated(key, value)?;
        Ok(())
    }

    /// Check the end against the records received and the writer's keys (any one may have
    /// signed it), then commit.
    pub fn finish(self, end: &PullEnd, keys: &[PublicKey]) -> Result<ListMeta> {
        let reject = |reason: String| ReplicationError::Rejected {
            list: self.writer.name.clone(),
            reason,
        };
        let msg = signed_message(&end.list, end.from, end.to, end.entries, &end.digest);
        if !keys.iter().any(|k| k.verify(&msg, &end.signature)) {
            let trusted: Vec<String> = keys.iter().map(PublicKey::key_id).collect();
            return Err(reject(format!(
                "bad signature (signed by key {}, trusted keys {}): is list_public_key the \
                 writer's `baken list public-key`?",
                end.key_id,
                trusted.join(", ")
            )));
        }
        let meta: ListMeta =
            serde_json::from_slice(&end.list).map_err(|e| reject(format!("list metadata: {e}")))?;
        if meta != self.writer {
            return Err(reject(
                "the signed metadata differs from the pull's announced metadata".into(),
            ));
        }
        if end.from != self.from || end.to != self.change.version() {
            return Err(reject(format!(
                "signed for versions {}..{}, expected {}..{}",
                end.from,
                end.to,
                self.from,
                self.change.version()
            )));
        }
        if end.entries != self.digest.count() || end.digest != self.digest.clone().finish() {
            return Err(reject(format!(
                "records do not match the signed digest ({} received, {} signed)",
                self.digest.count(),
                end.entries
            )));
        }
        let (committed, _) = self.change.commit_replicated(
            meta,
            Some(format!(
                "from writer, versions {}..{}, {} records",
                end.from, end.to, end.entries
            )),
        )?;
        Ok(committed)
    }
}
