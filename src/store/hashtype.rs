//! Hash types a list can carry. Open-ended: besides the types Baken computes, a list may hold
//! a type we cannot compute (PhotoDNA, say) so that callers who compute it elsewhere can match.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How values of a type are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Equal bytes only (cryptographic hashes, unknown types).
    Exact,
    /// Bit vectors compared by Hamming distance.
    Hamming,
    /// Byte vectors compared by Euclidean distance (PhotoDNA: 144 bytes).
    L2,
}

/// A canonical hash type name: lowercase `[a-z0-9_-]`, 1–32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HashType(String);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HashValueError {
    #[error("hash type must be 1-32 characters of a-z, 0-9, '_' or '-'")]
    BadType,
    #[error("{ty} value is not valid hex")]
    NotHex { ty: String },
    #[error("{ty} value must be {want} bytes, got {got}")]
    Length { ty: String, want: usize, got: usize },
    #[error("photodna value must be 144 bytes (base64, hex, or 144 comma-separated numbers)")]
    PhotoDna,
    #[error("hash value is empty")]
    Empty,
}

impl TryFrom<String> for HashType {
    type Error = HashValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        HashType::new(&s)
    }
}

impl From<HashType> for String {
    fn from(t: HashType) -> String {
        t.0
    }
}

impl fmt::Display for HashType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl HashType {
    /// Canonicalise a name, accepting the spellings list formats use
    /// (`HASH_MD5`, `ImagePDQ`, `pdna`, `SHA-1`, …).
    pub fn new(name: &str) -> Result<Self, HashValueError> {
        let lower = name.trim().to_ascii_lowercase();
        let canon = match lower.as_str() {
            "pdq" | "hash_pdq" | "imagepdq" | "pdq_hash" => "pdq",
            "vpdq" | "hash_vpdq" | "videopdq" | "video_pdq" => "vpdq",
            "md5" | "hash_md5" | "videomd5" | "imagemd5" => "md5",
            "sha1" | "sha-1" | "hash_sha1" => "sha1",
            "sha256" | "sha-256" | "hash_sha256" => "sha256",
            "pdna" | "photodna" | "hash_photodna" => "photodna",
            "phash" | "dhash" | "ahash" | "blockhash" => lower.as_str(),
            other => other,
        };
        let ok = !canon.is_empty()
            && canon.len() <= 32
            && canon
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(HashType(canon.to_string()))
        } else {
            Err(HashValueError::BadType)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn metric(&self) -> Metric {
        match self.0.as_str() {
            "pdq" | "vpdq" | "phash" | "dhash" | "ahash" | "blockhash" => Metric::Hamming,
            "photodna" => Metric::L2,
            _ => Metric::Exact,
        }
    }

    /// Fixed byte lengths of the types we know; `None` = any length.
    pub fn byte_len(&self) -> Option<usize> {
        match self.0.as_str() {
            "pdq" | "sha256" => Some(32),
            // One frame: its PDQ (32 bytes) and the id of the video it belongs to (32 bytes,
            // see `index::VideoTable`); the distance is the frames' alone.
            "vpdq" => Some(64),
            "md5" => Some(16),
            "sha1" => Some(20),
            "photodna" => Some(144),
            _ => None,
        }
    }

    /// The default match threshold for a value of `bits` bits (Hamming) or the type (L2).
    pub fn default_threshold(&self, bits: usize) -> u32 {
        match self.0.as_str() {
            "pdq" | "vpdq" => 31,
            "photodna" => 1800,
            _ if self.metric() == Metric::Hamming => ((bits as u32) * 10).div_ceil(64),
            _ => 0,
        }
    }

    /// Parse a value as list formats write it: hex for everything, and for PhotoDNA also
    /// base64 or 144 comma-separated numbers.
    pub fn parse_value(&self, text: &str) -> Result<Vec<u8>, HashValueError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(HashValueError::Empty);
        }
        let bytes = if self.0 == "photodna" {
            parse_photodna(t)?
        } else {
            hex::decode(t).map_err(|_| HashValueError::NotHex { ty: self.0.clone() })?
        };
        if let Some(want) = self.byte_len()
            && bytes.len() != want
        {
            return Err(HashValueError::Length {
                ty: self.0.clone(),
                want,
                got: bytes.len(),
            });
        }
        if bytes.is_empty() || bytes.len() > 255 {
            return Err(HashValueError::Length {
                ty: self.0.clone(),
                want: 255,
                got: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// The canonical text form (hex; PhotoDNA as comma-separated numbers, as NCMEC writes it).
    pub fn format_value(&self, bytes: &[u8]) -> String {
        if self.0 == "photodna" {
            bytes
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(",")
        } else {
            hex::encode(bytes)
        }
    }
}

fn parse_photodna(t: &str) -> Result<Vec<u8>, HashValueError> {
    if t.contains(',') {
        return t
            .split(',')
            .map(|p| p.trim().parse::<u8>().map_err(|_| HashValueError::PhotoDna))
            .collect();
    }
    if t.len() == 288
        && let Ok(b) = hex::decode(t)
    {
        return Ok(b);
    }
    base64_decode(t).ok_or(HashValueError::PhotoDna)
}

/// Base64, standard or URL-safe alphabet, with or without padding (list files use all four).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let alphabet = if s.contains(['-', '_']) {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config).decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_canonicalise() {
        assert_eq!(HashType::new("HASH_MD5").unwrap().as_str(), "md5");
        assert_eq!(HashType::new("ImagePDQ").unwrap().as_str(), "pdq");
        assert_eq!(HashType::new("pdna").unwrap().as_str(), "photodna");
        assert_eq!(HashType::new("SHA-1").unwrap().as_str(), "sha1");
        assert_eq!(HashType::new("vendor_x").unwrap().metric(), Metric::Exact);
        assert!(HashType::new("bad type!").is_err());
        assert!(HashType::new("").is_err());
    }

    #[test]
    fn values_are_checked() {
        let md5 = HashType::new("md5").unwrap();
        assert_eq!(
            md5.parse_value("00112233445566778899AABBCCDDEEFF")
                .unwrap()
                .len(),
            16
        );
        assert!(md5.parse_value("0011").is_err());
        assert!(md5.parse_value("zz112233445566778899aabbccddeeff").is_err());
        let pdna = HashType::new("photodna").unwrap();
        let csv = (0..144)
            .map(|i| (i % 256).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let v = pdna.parse_value(&csv).unwrap();
        assert_eq!(v.len(), 144);
        assert_eq!(pdna.format_value(&v), csv);
        assert!(pdna.parse_value("1,2,3").is_err());
        assert_eq!(HashType::new("phash").unwrap().default_threshold(64), 10);
        assert_eq!(HashType::new("pdq").unwrap().default_threshold(256), 31);
    }
}
