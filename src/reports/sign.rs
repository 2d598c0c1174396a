//! The report signing key: Ed25519, generated at first use into the data directory (0600 in a
//! 0700 directory) or supplied by file; the public key is exportable as PEM (SPKI) or hex.
//!
//! Key files are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm
//! ed25519` writes), 64 hex characters, or the raw 32-byte seed. PKCS#8 and SPKI for Ed25519
//! are one fixed DER prefix followed by the 32 key bytes (RFC 8410), so they are read and
//! written here without an ASN.1 library.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::Digest;

use super::{ReportError, Result};
use crate::datadir::DataDir;

/// Where a generated key lives inside the data directory.
pub const KEY_FILE: &str = "report-signing.key";

/// RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key (then the 32-byte seed).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// RFC 8410 SubjectPublicKeyInfo prefix of an Ed25519 public key (then the 32 key bytes).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Signatures cover this prefix and the entry bytes, so a ledger signature can never be
/// replayed as a signature over anything else made with the same key.
const DOMAIN: &[u8] = b"baken-report-ledger-v1\0";

/// A new key's proof of possession in a key-rotation entry is made under its own domain, so it
/// can never pass for a ledger-entry signature (nor the other way round).
const ROTATION_DOMAIN: &[u8] = b"baken-key-rotation-v1\0";

/// What a new key signs when it is rotated in: the position in the ledger (seq and the digest
/// of the entry before), the key it replaces and itself. Signed by the new key, it makes the
/// new key vouch for its predecessor and for the whole ledger before it, so a verifier who
/// trusts only the newest key can walk the chain of trust back to the first one.
pub fn rotation_statement(
    seq: u64,
    prev_digest: &[u8; 32],
    old: &PublicKey,
    new: &PublicKey,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + 32 + 32 + 32);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev_digest);
    m.extend_from_slice(&old.to_bytes());
    m.extend_from_slice(&new.to_bytes());
    m
}

/// SHA-256.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// The private half. Never logged, never serialised except into its own file.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public().key_id())
    }
}

impl Signer {
    /// A fresh key from the OS random source.
    pub fn generate() -> Result<Signer> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| ReportError::Key(format!("random source: {e}")))?;
        let s = Signer::from_seed(seed);
        seed.fill(0);
        Ok(s)
    }

    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The default key file of a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        DataDir::new(data_dir).keys().join(KEY_FILE)
    }

    /// Where a rotation puts the data directory's new key until the ledger names it; then it
    /// replaces the default key file (see `ReportStore::rotate_key` and the CLI).
    pub fn next_path(data_dir: &Path) -> PathBuf {
        DataDir::new(data_dir)
            .keys()
            .join(format!("{KEY_FILE}.next"))
    }

    /// Where `--keep-old-key` keeps a retired key of the data directory.
    pub fn retired_path(data_dir: &Path, key_id: &str) -> PathBuf {
        DataDir::new(data_dir)
            .keys()
            .join(format!("report-signing.{key_id}.retired"))
    }

    /// Load the data directory's key, generating it on first use. Returns whether it was
    /// generated.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Signer, bool)> {
        let path = Signer::default_path(data_dir);
        if path.exists() {
            return Ok((Signer::load(&path)?, false));
        }
        let s = Signer::generate()?;
        s.save(&path)?;
        tracing::info!(key_id = %s.public().key_id(), path = %path.display(), "generated the report signing key");
        Ok((s, true))
    }

    /// Read a key file (PKCS#8 PEM, hex seed or raw seed). Refuses files that others can read.
    pub fn load(path: &Path) -> Result<Signer> {
        check_private(path)?;
        let bytes = std::fs::read(path)
            .map_err(|e| ReportError::Key(format!("reading {}: {e}", path.display())))?;
        parse_private(&bytes).map_err(|e| ReportError::Key(format!("{}: {e}", path.display())))
    }

    /// Write the key as PKCS#8 PEM: file 0600, directory 0700, never over an existing file.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(self.key.as_bytes());
        let pem = pem("PRIVATE KEY", &der);
        der.fill(0);
        // A crash never leaves a half-written key, and an existing key is never overwritten.
        let written = crate::datadir::write_new(path, pem.as_bytes(), 0o600);
        written.map_err(|e| ReportError::Key(format!("writing {}: {e}", path.display())))?;
        Ok(())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// Sign ledger-entry bytes (domain-separated).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(msg);
        self.key.sign(&m).to_bytes()
    }

    /// Sign a [`rotation_statement`] naming this key as the new one (proof of possession).
    pub fn sign_rotation(&self, statement: &[u8]) -> [u8; 64] {
        let mut m = ROTATION_DOMAIN.to_vec();
        m.extend_from_slice(statement);
        self.key.sign(&m).to_bytes()
    }
}

/// The public half: verifies ledger entries; exportable.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl PublicKey {
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// `-----BEGIN PUBLIC KEY-----` (SPKI), what `openssl pkey -pubout` prints.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.key.to_bytes());
        pem("PUBLIC KEY", &der)
    }

    /// Names the key in every ledger entry: the first 8 bytes of SHA-256 of the public key, hex.
    pub fn key_id(&self) -> String {
        hex::encode(&digest(&self.key.to_bytes())[..8])
    }

    /// Parse a PEM (SPKI) public key or 64 hex characters.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let t = text.trim();
        let raw: Vec<u8> = if t.starts_with("-----BEGIN") {
            let der = unpem(t, "PUBLIC KEY").map_err(ReportError::Key)?;
            der.strip_prefix(&SPKI_PREFIX[..])
                .ok_or_else(|| ReportError::Key("not an Ed25519 public key (SPKI)".into()))?
                .to_vec()
        } else {
            hex::decode(t).map_err(|_| ReportError::Key("public key: not PEM or hex".into()))?
        };
        let arr: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| ReportError::Key("public key: not 32 bytes".into()))?;
        let key = VerifyingKey::from_bytes(&arr)
            .map_err(|_| ReportError::Key("public key: not a valid Ed25519 point".into()))?;
        Ok(PublicKey { key })
    }

    /// Check a ledger-entry signature (strict: no malleable or small-order forms).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_in(DOMAIN, msg, sig)
    }

    /// Check a new key's signature over a [`rotation_statement`].
    pub fn verify_rotation(&self, statement: &[u8], sig: &[u8]) -> bool {
        self.verify_in(ROTATION_DOMAIN, statement, sig)
    }

    fn verify_in(&self, domain: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        let mut m = domain.to_vec();
        m.extend_from_slice(msg);
        self.key
            .verify_strict(&m, &Signature::from_bytes(&sig))
            .is_ok()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str, label: &str) -> std::result::Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no {begin} block"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no {end} line"))?
        + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "PEM body is not base64".to_string())
}

fn parse_private(bytes: &[u8]) -> std::result::Result<Signer, String> {
    let seed: Vec<u8> = if bytes.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(bytes).map_err(|_| "PEM is not text".to_string())?;
        let der = unpem(text, "PRIVATE KEY")?;
        der.strip_prefix(&PKCS8_PREFIX[..])
            .filter(|s| s.len() == 32)
            .ok_or("not an Ed25519 PKCS#8 private key")?
            .to_vec()
    } else if bytes.len() == 32 {
        bytes.to_vec()
    } else {
        let t = std::str::from_utf8(bytes).map_err(|_| "key is not PEM, hex or 32 raw bytes")?;
        hex::decode(t.trim()).map_err(|_| "key is not PEM, hex or 32 raw bytes")?
    };
    let arr: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| "the key seed is not 32 bytes")?;
    Ok(Signer::from_seed(arr))
}

/// A private key readable or writable by anyone but its owner is refused, as ssh does.
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| ReportError::Key(format!("{}: {e}", path.display())))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(ReportError::Key(format!(
            "{} is accessible to others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files_and_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (s, created) = Signer::load_or_generate(dir.path()).unwrap();
        assert!(created);
        let (again, created) = Signer::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(s.public(), again.public());
        use std::os::unix::fs::PermissionsExt;
        let path = Signer::default_path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let p = s.public();
        assert_eq!(PublicKey::parse(&p.to_pem()).unwrap(), p);
        assert_eq!(PublicKey::parse(&p.to_hex()).unwrap(), p);
        let sig = s.sign(b"entry");
        assert!(p.verify(b"entry", &sig));
        assert!(!p.verify(b"entrY", &sig));
        // Too open: refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Signer::load(&path).is_err());
    }

    #[test]
    fn rfc8410_test_vector() {
        // RFC 8410 §10.3 private key, and its public key from §10.1.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let s = parse_private(pem.as_bytes()).unwrap();
        assert_eq!(
            s.public().to_hex(),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
    }
}
