//! Who is calling, and may they? Identities come from bearer tokens (only their SHA-256 is
//! kept, in a tokens file) or from verified client certificates (mutual TLS), and carry roles.
//! Every RPC handler asks [`Auth::check`] with its [`Rpc`] before doing anything; the table in
//! [`Rpc::roles`] is the whole policy.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Hash, scan and match content.
    Scanner,
    /// Read and review reports.
    Reviewer,
    /// Create, import, change and export hash lists.
    ListAdmin,
    /// Read reports, statistics and the audit logs.
    Auditor,
    /// A replica server following this writer: pull list changes, submit reports and counts.
    Replica,
    /// Operations: online backups (AdminService). Grants nothing else.
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Scanner,
        Role::Reviewer,
        Role::ListAdmin,
        Role::Auditor,
        Role::Replica,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        crate::names::name(&self)
    }
}

impl Role {
    pub fn parse(s: &str) -> Result<Self, String> {
        crate::names::parse("role", s)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::parse(s)
    }
}

/// Every RPC of the API, for the authorisation table (health and reflection need no role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    HashImage,
    Scan,
    MatchHashes,
    ScanStream,
    ScanUpload,
    CreateList,
    GetList,
    ListLists,
    ImportList,
    RemoveEntries,
    TombstoneEntries,
    ExportList,
    ListStats,
    GetListAudit,
    GetReport,
    ListReports,
    ExportReport,
    ReviewReport,
    VerifyReports,
    ReportStatistics,
    GetReportAudit,
    ListVersions,
    PullChanges,
    SubmitReport,
    SubmitScanCounts,
    ReplicationStatus,
    Backup,
}

impl Rpc {
    pub const ALL: [Rpc; 27] = [
        Rpc::HashImage,
        Rpc::Scan,
        Rpc::MatchHashes,
        Rpc::ScanStream,
        Rpc::ScanUpload,
        Rpc::CreateList,
        Rpc::GetList,
        Rpc::ListLists,
        Rpc::ImportList,
        Rpc::RemoveEntries,
        Rpc::TombstoneEntries,
        Rpc::ExportList,
        Rpc::ListStats,
        Rpc::GetListAudit,
        Rpc::GetReport,
        Rpc::ListReports,
        Rpc::ExportReport,
        Rpc::ReviewReport,
        Rpc::VerifyReports,
        Rpc::ReportStatistics,
        Rpc::GetReportAudit,
        Rpc::ListVersions,
        Rpc::PullChanges,
        Rpc::SubmitReport,
        Rpc::SubmitScanCounts,
        Rpc::ReplicationStatus,
        Rpc::Backup,
    ];

    /// The roles allowed to call this RPC (any one suffices).
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Rpc::HashImage | Rpc::Scan | Rpc::MatchHashes | Rpc::ScanStream | Rpc::ScanUpload => {
                &[Scanner]
            }
            Rpc::CreateList
            | Rpc::ImportList
            | Rpc::RemoveEntries
            | Rpc::TombstoneEntries
            | Rpc::ExportList => &[ListAdmin],
            // Reading list metadata and the list audit log: administrators and auditors.
            Rpc::GetList | Rpc::ListLists | Rpc::ListStats | Rpc::GetListAudit => {
                &[ListAdmin, Auditor]
            }
            // Reviewers must read what they review; auditors read everything.
            Rpc::GetReport | Rpc::ListReports | Rpc::ExportReport => &[Reviewer, Auditor],
            Rpc::ReviewReport => &[Reviewer],
            Rpc::VerifyReports | Rpc::ReportStatistics | Rpc::GetReportAudit => &[Auditor],
            Rpc::ListVersions | Rpc::PullChanges | Rpc::SubmitReport | Rpc::SubmitScanCounts => {
                &[Replica]
            }
            Rpc::ReplicationStatus => &[ListAdmin, Auditor],
            // A backup copies everything, personal data and the signing key included.
            Rpc::Backup => &[Admin],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rpc::HashImage => "HashImage",
            Rpc::Scan => "Scan",
            Rpc::MatchHashes => "MatchHashes",
            Rpc::ScanStream => "ScanStream",
            Rpc::ScanUpload => "ScanUpload",
            Rpc::CreateList => "CreateList",
            Rpc::GetList => "GetList",
            Rpc::ListLists => "ListLists",
            Rpc::ImportList => "ImportList",
            Rpc::RemoveEntries => "RemoveEntries",
            Rpc::TombstoneEntries => "TombstoneEntries",
            Rpc::ExportList => "ExportList",
            Rpc::ListStats => "ListStats",
            Rpc::GetListAudit => "GetListAudit",
            Rpc::GetReport => "GetReport",
            Rpc::ListReports => "ListReports",
            Rpc::ExportReport => "ExportReport",
            Rpc::ReviewReport => "ReviewReport",
            Rpc::VerifyReports => "VerifyReports",
            Rpc::ReportStatistics => "ReportStatistics",
            Rpc::GetReportAudit => "GetReportAudit",
            Rpc::ListVersions => "ListVersions",
            Rpc::PullChanges => "PullChanges",
            Rpc::SubmitReport => "SubmitReport",
            Rpc::SubmitScanCounts => "SubmitScanCounts",
            Rpc::ReplicationStatus => "ReplicationStatus",
            Rpc::Backup => "Backup",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Recorded in audit logs as the actor (`token:NAME`, `cert:NAME`, or `anonymous`).
    pub name: String,
    pub roles: BTreeSet<Role>,
}

impl Identity {
    /// The identity of every caller when authorisation is off (local use only).
    pub fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            roles: Role::ALL.into_iter().collect(),
        }
    }
}

/// One line of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub roles: Vec<Role>,
    /// SHA-256 of the token, hex. The token itself is never stored.
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// A client-certificate identity: matched by SAN (DNS or URI), subject common name, or the
/// SHA-256 fingerprint of the certificate (DER); the first rule that matches wins.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertRule {
    pub name: String,
    pub roles: Vec<Role>,
    #[serde(default)]
    pub san: Option<String>,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("reading tokens file {path}: {message}")]
    Read { path: String, message: String },
    #[error("tokens file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The authorisation state of a server.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// `false`: every caller is [`Identity::anonymous`] (local use; the server refuses this on
    /// a non-loopback address).
    pub enabled: bool,
    tokens: HashMap<[u8; 32], Identity>,
    certs: Vec<CertRule>,
}

/// SHA-256 of a token, hex: what the tokens file stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (256 bits, hex) from the OS's CSPRNG.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(format!("bkn_{}", hex::encode(b)))
}

impl Auth {
    pub fn disabled() -> Auth {
        Auth::default()
    }

    pub fn new(tokens: Vec<TokenEntry>, certs: Vec<CertRule>) -> Result<Auth, AuthConfigError> {
        let mut map = HashMap::new();
        for t in tokens {
            let digest: [u8; 32] = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    AuthConfigError::Invalid(format!(
                        "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token, not the token)",
                        t.name
                    ))
                })?;
            if t.roles.is_empty() {
                return Err(AuthConfigError::Invalid(format!(
                    "token {:?} has no roles",
                    t.name
                )));
            }
            let id = Identity {
                name: format!("token:{}", t.name),
                roles: t.roles.into_iter().collect(),
            };
            if map.insert(digest, id).is_some() {
                return Err(AuthConfigError::Invalid(format!(
                    "token {:?}: the same token hash appears twice",
                    t.name
                )));
            }
        }
        for c in &certs {
            if c.san.is_none() && c.common_name.is_none() && c.sha256.is_none() {
                return Err(AuthConfigError::Invalid(format!(
                    "client certificate rule {:?} names no san, common_name or sha256",
                    c.name
                )));
            }
        }
        Ok(Auth {
            enabled: true,
            tokens: map,
            certs,
        })
    }

    /// Read a tokens file (TOML: `[[token]] name = …, roles = […], sha256 = "…"`).
    pub fn read_tokens(path: &Path) -> Result<Vec<TokenEntry>, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let f: TokensFile = toml::from_str(&text).map_err(|e| AuthConfigError::Parse {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?;
        Ok(f.token)
    }

    /// Authenticate the caller of `req` and check that it may call `rpc`.
    pub fn check<T>(&self, req: &Request<T>, rpc: Rpc) -> Result<Identity, Status> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        let id = self.identify(req)?;
        if rpc.roles().iter().any(|r| id.roles.contains(r)) {
            Ok(id)
        } else {
            let need: Vec<&str> = rpc.roles().iter().map(|r| r.as_str()).collect();
            tracing::info!(caller = %id.name, rpc = rpc.name(), "permission denied");
            Err(Status::permission_denied(format!(
                "{} may not call {}: needs role {}",
                id.name,
                rpc.name(),
                need.join(" or ")
            )))
        }
    }

    fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        if let Some(v) = req.metadata().get("authorization") {
            let text = v.to_str().map_err(|_| {
                Status::unauthenticated("the authorization header is not valid ASCII")
            })?;
            let token = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization header must be `Bearer <token>`")
                })?
                .trim();
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            // A hash-table look-up on the digest: timing reveals nothing usable about the token.
            return self
                .tokens
                .get(&digest)
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown bearer token"));
        }
        if let Some(certs) = req.peer_certs()
            && let Some(leaf) = certs.first()
        {
            // The TLS layer has verified the chain against the configured client CA.
            return self.cert_identity(leaf.as_ref()).ok_or_else(|| {
                Status::unauthenticated(
                    "the client certificate is valid but mapped to no identity (see [[auth.client_cert]] in the config)",
                )
            });
        }
        Err(Status::unauthenticated(
            "no credentials: send `authorization: Bearer <token>` or a client certificate",
        ))
    }

    /// The identity of a verified client certificate (DER), by the configured rules.
    pub fn cert_identity(&self, der: &[u8]) -> Option<Identity> {
        let fingerprint = hex::encode(Sha256::digest(der));
        let owned = rustls_pki_types::CertificateDer::from(der);
        let parsed = webpki::EndEntityCert::try_from(&owned).ok();
        let sans: Vec<String> = parsed
            .as_ref()
            .map(|c| {
                c.valid_dns_names()
                    .chain(c.valid_uri_names())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let cn = parsed.as_ref().and_then(|c| common_name(c.subject()));
        self.certs.iter().find_map(|rule| {
            let hit = rule
                .sha256
                .as_ref()
                .is_some_and(|h| h.eq_ignore_ascii_case(&fingerprint))
                || rule
                    .san
                    .as_ref()
                    .is_some_and(|s| sans.iter().any(|x| x == s))
                || rule
                    .common_name
                    .as_ref()
                    .is_some_and(|n| cn.as_deref() == Some(n.as_str()));
            hit.then(|| Identity {
                name: format!("cert:{}", rule.name),
                roles: rule.roles.iter().copied().collect(),
            })
        })
    }
}

/// The subject's common name (OID 2.5.4.3) from the DER of a Name's contents (a sequence of
/// SETs of `SEQUENCE { OID, value }`). Minimal DER reading: definite lengths only.
fn common_name(subject: &[u8]) -> Option<String> {
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    let mut rest = subject;
    while !rest.is_empty() {
        let (tag, set, after) = der_item(rest)?;
        rest = after;
        if tag != 0x31 {
            continue;
        }
        let mut inner = set;
        while !inner.is_empty() {
            let (tag, seq, after) = der_item(inner)?;
            inner = after;
            if tag != 0x30 {
                continue;
            }
            let (otag, oid, value) = der_item(seq)?;
            if otag == 0x06 && oid == CN {
                let (_, v, _) = der_item(value)?;
                return std::str::from_utf8(v).ok().map(str::to_string);
            }
        }
    }
    None
}

/// One DER item: (tag, contents, rest).
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let body = b.get(head..head.checked_add(len)?)?;
    Some((tag, body, &b[head + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_roles() {
        let auth = Auth::new(
            vec![TokenEntry {
                name: "scan-bot".into(),
                roles: vec![Role::Scanner],
                sha256: token_hash("secret-1"),
            }],
            vec![],
        )
        .unwrap();
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer secret-1".parse().unwrap());
        assert_eq!(auth.check(&req, Rpc::Scan).unwrap().name, "token:scan-bot");
        assert_eq!(
            auth.check(&req, Rpc::CreateList).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert("authorization", "Bearer secret-2".parse().unwrap());
        assert_eq!(
            auth.check(&bad, Rpc::Scan).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.check(&Request::new(()), Rpc::Scan).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn plaintext_tokens_are_refused_as_hashes() {
        let e = Auth::new(
            vec![TokenEntry {
                name: "x".into(),
                roles: vec![Role::Scanner],
                sha256: "not-a-hash".into(),
            }],
            vec![],
        );
        assert!(e.is_err());
    }

    #[test]
    fn every_rpc_has_roles() {
        for rpc in Rpc::ALL {
            assert!(!rpc.roles().is_empty(), "{rpc:?}");
        }
    }

    #[test]
    fn fresh_tokens_differ() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
    }
}
