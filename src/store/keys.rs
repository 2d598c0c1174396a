//! The key and value codec of the entry, change-log and external-id column families
//! (all integers big-endian, so key order is numeric order).

use super::*;

/// Key prefix of an entry (without the version suffix).
pub fn entry_prefix(list: u32, ty: &HashType, hash: &[u8]) -> Vec<u8> {
    let t = ty.as_str().as_bytes();
    let mut k = Vec::with_capacity(4 + 1 + t.len() + 1 + hash.len() + 8);
    k.extend_from_slice(&list.to_be_bytes());
    k.push(t.len() as u8);
    k.extend_from_slice(t);
    k.push(hash.len() as u8);
    k.extend_from_slice(hash);
    k
}

/// Split an entry prefix back into (list, type, hash).
pub fn parse_entry_prefix(k: &[u8]) -> Option<(u32, &str, &[u8])> {
    let list = u32::from_be_bytes(k.get(0..4)?.try_into().ok()?);
    let tl = usize::from(*k.get(4)?);
    let ty = std::str::from_utf8(k.get(5..5 + tl)?).ok()?;
    let hl = usize::from(*k.get(5 + tl)?);
    let hash = k.get(6 + tl..6 + tl + hl)?;
    (k.len() == 6 + tl + hl).then_some((list, ty, hash))
}

pub(super) fn versioned(prefix: &[u8], version: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&(!version).to_be_bytes());
    k
}

/// An entry record as stored: without its type and value, which its key already holds (a third
/// of the bytes an import writes, flushes and compacts). Read owned (`S = String`), written
/// borrowed (`S = &str`: no copies on the import path).
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, T: Serialize + AsRef<[String]>",
    deserialize = "S: Deserialize<'de>, T: Deserialize<'de> + Default"
))]
pub(super) struct Stored<S, T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) external_id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) classification: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) media_type: Option<S>,
    #[serde(default, skip_serializing_if = "no_tags")]
    pub(super) tags: T,
    pub(super) added: S,
    /// Absent when equal to `added`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) updated: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) provenance: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deleted_at: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deleted_reason: Option<S>,
    pub(super) version: u64,
}

fn no_tags<T: AsRef<[String]>>(t: &T) -> bool {
    t.as_ref().is_empty()
}

pub(super) fn encode_record(r: &EntryRecord) -> Result<Vec<u8>> {
    let stored: Stored<&str, &[String]> = Stored {
        external_id: r.external_id.as_deref(),
        classification: r.classification.as_deref(),
        media_type: r.media_type.as_deref(),
        tags: &r.tags,
        added: &r.added,
        updated: (r.updated != r.added).then_some(r.updated.as_str()),
        provenance: r.provenance.as_deref(),
        deleted_at: r.deleted_at.as_deref(),
        deleted_reason: r.deleted_reason.as_deref(),
        version: r.version,
    };
    let mut v = Vec::with_capacity(160);
    v.push(u8::from(r.is_deleted()));
    serde_json::to_writer(&mut v, &stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(v)
}

/// The record stored under entry `prefix` (key without its version suffix).
pub(super) fn decode_record(prefix: &[u8], v: &[u8]) -> Result<EntryRecord> {
    let s: Stored<String, Vec<String>> = serde_json::from_slice(v.get(1..).unwrap_or_default())
        .map_err(|e| StoreError::Corrupt(format!("entry record: {e}")))?;
    let (_, ty, hash) =
        parse_entry_prefix(prefix).ok_or_else(|| StoreError::Corrupt("entry key".into()))?;
    let hash_type = HashType::new(ty)?;
    Ok(EntryRecord {
        hash: hash_type.format_value(hash),
        hash_type,
        external_id: s.external_id,
        classification: s.classification,
        media_type: s.media_type,
        tags: s.tags,
        updated: s.updated.unwrap_or_else(|| s.added.clone()),
        added: s.added,
        provenance: s.provenance,
        deleted_at: s.deleted_at,
        deleted_reason: s.deleted_reason,
        version: s.version,
    })
}

/// The version in a change-log key (list u32 · version u64 · seq u64).
pub(super) fn change_key_version(k: &[u8]) -> Option<u64> {
    k.get(4..12)?.try_into().ok().map(u64::from_be_bytes)
}

/// The entry prefixes of one change-log record (`u16` length, prefix, repeated).
pub(super) fn change_prefixes(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = v;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?));
        let p = rest.get(2..2 + len)?;
        rest = &rest[2 + len..];
        Some(p)
    })
}

pub(super) fn external_head(list: u32, external_id: &str) -> Vec<u8> {
    let mut k = list.to_be_bytes().to_vec();
    let id = external_id.as_bytes();
    k.extend_from_slice(&(id.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(&id[..id.len().min(u16::MAX as usize)]);
    k
}
