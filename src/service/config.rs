//! The service's configuration: embedded defaults (so `baken serve` runs as is), overridden by a
//! TOML file (`--config FILE` or `BAKEN_CONFIG`), overridden by `BAKEN_*` environment variables.
//! `deploy/baken.toml` is a commented sample with every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ServeError;
use super::auth::{Auth, CertRule};
use crate::decode::DecodeLimits;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// gRPC address. Default `127.0.0.1:50051`.
    pub listen: String,
    /// A second, plaintext gRPC address serving only `grpc.health.v1.Health` (no other
    /// service, no credentials), for probes that cannot do TLS or client certificates (the
    /// kubelet's `grpc:` probes). Empty or "off": none (the default).
    pub health_listen: String,
    /// Data directory (RocksDB store). Default `./baken-data`.
    pub data: PathBuf,
    /// Build the list `demo` from generated, benign images when it is absent, writing the
    /// images to `demo_images` so there is something to scan at once. Default on.
    pub demo_list: bool,
    pub demo_images: PathBuf,
    /// Largest gRPC message, bytes (an image plus headroom). Default 64 MiB + 1 MiB.
    pub max_message_bytes: usize,
    /// Requests processed at once; more are refused with RESOURCE_EXHAUSTED. Default 64.
    pub max_in_flight: usize,
    /// Threads of the CPU pool (decode, hash, match). 0: one per core.
    pub cpu_threads: usize,
    /// Items of one ScanStream processed at once (and read ahead). 0: 2 × CPU threads.
    pub stream_concurrency: usize,
    /// How long shutdown waits for in-flight requests, seconds. Default 30.
    pub drain_timeout_secs: u64,
    /// How often the matching index picks up list changes made elsewhere, ms. Default 1000.
    pub refresh_interval_ms: u64,
    /// What Scan computes: hash types Baken can compute. Default pdq, md5, sha1, sha256.
    pub scan_algorithms: Vec<String>,
    pub limits: LimitsConfig,
    /// Video limits (`[video]`: max_input_bytes, max_dimension, max_pixels,
    /// max_duration_seconds, max_frames, max_decode_seconds, max_memory). The service's
    /// default max_input_bytes is 256 MiB (a `ScanUpload` holds the whole video in memory).
    pub video: crate::decode::video::VideoLimits,
    /// vPDQ sampling: one frame every this many seconds (0: every frame). Default 1.
    pub vpdq_seconds_per_hash: f64,
    pub matching: MatchingConfig,
    /// TLS (rustls). Absent: plaintext (allowed on loopback only).
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub reports: ReportsConfig,
    pub replication: ReplicationConfig,
}

/// A server's part in list replication.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Lists change here; nobody follows (default).
    #[default]
    Standalone,
    /// Lists change here; replicas pull them (ReplicationService) and send reports here.
    Writer,
    /// Lists come from `upstream` only; list changes are refused; reports go to the writer.
    Replica,
}

impl ReplicationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Standalone => "standalone",
            ReplicationMode::Writer => "writer",
            ReplicationMode::Replica => "replica",
        }
    }
}

/// `[replication]`: one writer owns list changes; replicas follow it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    pub mode: ReplicationMode,
    /// Writer: the Ed25519 key that signs pulls. Default `<data>/keys/list-signing.key`,
    /// generated on first start (`baken list public-key` prints its public half).
    pub list_signing_key: Option<PathBuf>,
    /// Replica: the writer's gRPC address, `http://host:port` or `https://host:port`.
    pub upstream: String,
    /// Replica: file holding a bearer token with the `replica` role on the writer.
    pub upstream_token_file: Option<PathBuf>,
    /// Replica: PEM CA bundle the writer's certificate chains to (with `https://`).
    pub upstream_ca: Option<PathBuf>,
    /// Replica: the writer's list-signing public key (PEM or hex). Pulls not signed by it are
    /// rejected. Required: it is what makes a replica trust what it serves.
    pub list_public_key: Option<PathBuf>,
    /// Replica: how often to ask the writer for new list versions, ms. Default 2000.
    pub poll_interval_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            mode: ReplicationMode::Standalone,
            list_signing_key: None,
            upstream: String::new(),
            upstream_token_file: None,
            upstream_ca: None,
            list_public_key: None,
            poll_interval_ms: 2000,
        }
    }
}

/// Reports: who the provider is and what the duties around reports are. The provider's fields
/// go into every report; a caller's `ReportContext` brings only what concerns one piece of
/// content. The defaults are for local use and say so: a server on a non-loopback address with
/// reports on must name its provider.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// Create reports for matches that come with a context. Default on.
    pub enabled: bool,
    pub provider: String,
    pub legal_representative: String,
    pub contact_first_name: String,
    pub contact_last_name: String,
    /// The recipient's contact at the provider (NCMEC's `reportingPerson` needs one).
    pub contact_email: String,
    pub contact_phone: String,
    pub legal_basis: String,
    /// Recipient organisation, e.g. `NCMEC` or `EU Centre`.
    pub recipient: String,
    pub recipient_country: String,
    /// `12m` (the maximum) or shorter: `6m`, `90d`.
    pub retention: String,
    /// Every report waits for a human decision (default). Off: matches of `confirmed_lists`
    /// at distance 0 may be ready to send without one.
    pub require_review: bool,
    pub confirmed_lists: Vec<String>,
    /// Ed25519 key file (PKCS#8 PEM, hex or raw 32 bytes). Default: generated at first start
    /// into `<data>/keys/report-signing.key` (0600).
    pub signing_key: Option<PathBuf>,
    /// How often expired reports are purged, seconds. Default 3600.
    pub purge_interval_secs: u64,
}

/// The provider name of the embedded defaults.
pub const UNCONFIGURED_PROVIDER: &str = "unconfigured provider (set [reports] provider)";

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            enabled: true,
            provider: UNCONFIGURED_PROVIDER.into(),
            legal_representative: String::new(),
            contact_first_name: String::new(),
            contact_last_name: String::new(),
            contact_email: "abuse@example.invalid".into(),
            contact_phone: String::new(),
            legal_basis: "Regulation (EU) 2021/1232, Art. 3".into(),
            recipient: "NCMEC".into(),
            recipient_country: "US".into(),
            retention: "12m".into(),
            require_review: true,
            confirmed_lists: Vec::new(),
            signing_key: None,
            purge_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_image_bytes: u64,
    pub max_pixels: u64,
    pub max_dimension: u32,
    pub max_alloc: u64,
    /// Hashes in one MatchHashes request. Default 64.
    pub max_hashes_per_request: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingConfig {
    /// PDQ hashes under this quality are not matched (answered in `skipped`). Default 50.
    pub quality_floor: u8,
    /// Default thresholds by hash type, e.g. `pdq = 31`; lists may be stricter.
    pub thresholds: BTreeMap<String, u32>,
    /// auto | scan | mih.
    pub index: String,
    /// Derived views of each image matched besides it: `["border"]` (the image inside a
    /// uniform border removed). Default none.
    pub candidates: Vec<String>,
    /// Derived views match within the smaller of this and the list's PDQ threshold. Default 24.
    pub candidate_threshold: u32,
    /// Derived views under this PDQ quality are not matched. Default 60.
    pub candidate_quality_floor: u8,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and private key of the server.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to (mutual TLS). Absent: no client
    /// certificates are asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse connections without a client certificate (default). `false`
    /// lets bearer-token callers connect without one.
    #[serde(default = "yes")]
    pub require_client_cert: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Unset: on when a tokens file or client-certificate rules are configured. `false` is
    /// refused on a non-loopback address.
    pub enabled: Option<bool>,
    /// TOML file of `[[token]] name, roles, sha256` (`baken token new` prints entries).
    pub tokens_file: Option<PathBuf>,
    /// Client-certificate identities (mutual TLS).
    pub client_cert: Vec<CertRule>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `/metrics` address; empty or "off": no metrics listener. Default `127.0.0.1:9090`.
    pub listen: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "127.0.0.1:50051".into(),
            health_listen: String::new(),
            data: PathBuf::from("./baken-data"),
            demo_list: true,
            demo_images: PathBuf::from("./baken-demo"),
            max_message_bytes: (64 << 20) + (1 << 20),
            max_in_flight: 64,
            cpu_threads: 0,
            stream_concurrency: 0,
            drain_timeout_secs: 30,
            refresh_interval_ms: 1000,
            scan_algorithms: ["pdq", "md5", "sha1", "sha256"].map(String::from).to_vec(),
            limits: LimitsConfig::default(),
            video: crate::decode::video::VideoLimits {
                max_input_bytes: 256 << 20,
                ..Default::default()
            },
            vpdq_seconds_per_hash: crate::hashing::vpdq::DEFAULT_SECONDS_PER_HASH,
            matching: MatchingConfig::default(),
            tls: None,
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            reports: ReportsConfig::default(),
            replication: ReplicationConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = DecodeLimits::default();
        LimitsConfig {
            max_image_bytes: d.max_input_bytes,
            max_pixels: d.max_pixels,
            max_dimension: d.max_dimension,
            max_alloc: d.max_alloc,
            max_hashes_per_request: 64,
        }
    }
}

impl MatchingConfig {
    /// The derived views `candidates` names, or which name is unknown.
    pub fn candidate_options(
        &self,
    ) -> Result<crate::hashing::candidates::CandidateOptions, String> {
        crate::hashing::candidates::CandidateOptions::from_kinds(&self.candidates)
            .map_err(|e| format!("matching.candidates: {e}"))
    }
}

impl Default for MatchingConfig {
    fn default() -> Self {
        MatchingConfig {
            quality_floor: 50,
            thresholds: BTreeMap::new(),
            index: "auto".into(),
            candidates: Vec::new(),
            candidate_threshold: crate::index::DEFAULT_CANDIDATE_THRESHOLD,
            candidate_quality_floor: crate::index::DEFAULT_CANDIDATE_QUALITY_FLOOR,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

/// The environment variables [`ServiceConfig::apply_env`] reads, with what they set.
pub const ENV_VARS: [(&str, &str); 16] = [
    ("BAKEN_LISTEN", "listen"),
    ("BAKEN_HEALTH_LISTEN", "health_listen (\"off\" disables)"),
    ("BAKEN_DATA", "data"),
    ("BAKEN_DEMO_LIST", "demo_list (on/off)"),
    ("BAKEN_MAX_IN_FLIGHT", "max_in_flight"),
    ("BAKEN_MAX_MESSAGE_BYTES", "max_message_bytes"),
    ("BAKEN_CPU_THREADS", "cpu_threads"),
    ("BAKEN_METRICS_LISTEN", "metrics.listen (\"off\" disables)"),
    ("BAKEN_AUTH", "auth.enabled (on/off)"),
    ("BAKEN_TOKENS_FILE", "auth.tokens_file"),
    ("BAKEN_TLS_CERT", "tls.cert"),
    ("BAKEN_TLS_KEY", "tls.key"),
    ("BAKEN_TLS_CLIENT_CA", "tls.client_ca"),
    ("BAKEN_MAX_IMAGE_BYTES", "limits.max_image_bytes"),
    (
        "BAKEN_REPLICATION_MODE",
        "replication.mode (standalone, writer, replica)",
    ),
    ("BAKEN_UPSTREAM", "replication.upstream"),
];

fn on_off(var: &str, v: &str) -> Result<bool, ServeError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Ok(true),
        "0" | "off" | "false" | "no" => Ok(false),
        _ => Err(ServeError::Config(format!("{var}={v:?}: use on or off"))),
    }
}

fn number<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ServeError> {
    v.trim()
        .parse()
        .map_err(|_| ServeError::Config(format!("{var}={v:?} is not a number")))
}

impl ServiceConfig {
    /// Parse a TOML configuration (missing keys keep their defaults).
    pub fn from_toml(text: &str) -> Result<ServiceConfig, ServeError> {
        toml::from_str(text).map_err(|e| ServeError::Config(e.to_string()))
    }

    pub fn from_file(path: &std::path::Path) -> Result<ServiceConfig, ServeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServeError::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))
    }

    /// Apply `BAKEN_*` variables (see [`ENV_VARS`]); `get` reads one (tests pass a map).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ServeError> {
        for (var, _) in ENV_VARS {
            let Some(v) = get(var) else { continue };
            match var {
                "BAKEN_LISTEN" => self.listen = v,
                "BAKEN_HEALTH_LISTEN" => self.health_listen = v,
                "BAKEN_DATA" => self.data = v.into(),
                "BAKEN_DEMO_LIST" => self.demo_list = on_off(var, &v)?,
                "BAKEN_MAX_IN_FLIGHT" => self.max_in_flight = number(var, &v)?,
                "BAKEN_MAX_MESSAGE_BYTES" => self.max_message_bytes = number(var, &v)?,
                "BAKEN_CPU_THREADS" => self.cpu_threads = number(var, &v)?,
                "BAKEN_METRICS_LISTEN" => self.metrics.listen = v,
                "BAKEN_AUTH" => self.auth.enabled = Some(on_off(var, &v)?),
                "BAKEN_TOKENS_FILE" => self.auth.tokens_file = Some(v.into()),
                "BAKEN_TLS_CERT" | "BAKEN_TLS_KEY" | "BAKEN_TLS_CLIENT_CA" => {
                    let tls = self.tls.get_or_insert_with(|| TlsConfig {
                        cert: PathBuf::new(),
                        key: PathBuf::new(),
                        client_ca: None,
                        require_client_cert: true,
                    });
                    match var {
                        "BAKEN_TLS_CERT" => tls.cert = v.into(),
                        "BAKEN_TLS_KEY" => tls.key = v.into(),
                        _ => tls.client_ca = Some(v.into()),
                    }
                }
                "BAKEN_MAX_IMAGE_BYTES" => self.limits.max_image_bytes = number(var, &v)?,
                "BAKEN_REPLICATION_MODE" => {
                    self.replication.mode = match v.trim() {
                        "standalone" => ReplicationMode::Standalone,
                        "writer" => ReplicationMode::Writer,
                        "replica" => ReplicationMode::Replica,
                        _ => {
                            return Err(ServeError::Config(format!(
                                "{var}={v:?}: use standalone, writer or replica"
                            )));
                        }
                    }
                }
                "BAKEN_UPSTREAM" => self.replication.upstream = v,
                _ => {}
            }
        }
        Ok(())
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_input_bytes: self.limits.max_image_bytes,
            max_pixels: self.limits.max_pixels,
            max_dimension: self.limits.max_dimension,
            max_alloc: self.limits.max_alloc,
        }
    }

    pub fn health_listen(&self) -> Option<&str> {
        let l = self.health_listen.trim();
        (!l.is_empty() && l != "off").then_some(l)
    }

    pub fn metrics_listen(&self) -> Option<&str> {
        let l = self.metrics.listen.trim();
        (!l.is_empty() && l != "off").then_some(l)
    }

    /// Whether authorisation is on: explicit, or implied by configured credentials.
    pub fn auth_enabled(&self) -> bool {
        self.auth
            .enabled
            .unwrap_or(self.auth.tokens_file.is_some() || !self.auth.client_cert.is_empty())
    }

    /// Refuse configurations that are unsafe or cannot work.
    pub fn validate(&self) -> Result<(), ServeError> {
        let addr: SocketAddr = self.listen.parse().map_err(|_| {
            ServeError::Config(format!(
                "listen = {:?}: give an IP address and port, e.g. 127.0.0.1:50051",
                self.listen
            ))
        })?;
        if !addr.ip().is_loopback() && !self.auth_enabled() {
            return Err(ServeError::Config(format!(
                "listening on {addr} (not loopback) needs authorisation: set auth.tokens_file or [[auth.client_cert]] rules (see deploy/baken.toml)"
            )));
        }
        self.matching
            .candidate_options()
            .map_err(ServeError::Config)?;
        if let Some(h) = self.health_listen() {
            h.parse::<SocketAddr>().map_err(|_| {
                ServeError::Config(format!(
                    "health_listen = {h:?}: give an IP address and port or \"off\""
                ))
            })?;
        }
        if let Some(m) = self.metrics_listen() {
            m.parse::<SocketAddr>().map_err(|_| {
                ServeError::Config(format!(
                    "metrics.listen = {m:?}: give an IP address and port or \"off\""
                ))
            })?;
        }
        if let Some(t) = &self.tls
            && (t.cert.as_os_str().is_empty() || t.key.as_os_str().is_empty())
        {
            return Err(ServeError::Config(
                "TLS needs both tls.cert and tls.key (BAKEN_TLS_CERT, BAKEN_TLS_KEY)".into(),
            ));
        }
        if !self.auth.client_cert.is_empty()
            && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return Err(ServeError::Config(
                "[[auth.client_cert]] rules need mutual TLS: set tls.client_ca".into(),
            ));
        }
        let min = self.limits.max_image_bytes.saturating_add(4096);
        if (self.max_message_bytes as u64) < min {
            return Err(ServeError::Config(format!(
                "max_message_bytes ({}) must exceed limits.max_image_bytes ({}) by some headroom",
                self.max_message_bytes, self.limits.max_image_bytes
            )));
        }
        self.scan_hash_algorithms()?;
        if !(self.vpdq_seconds_per_hash.is_finite() && self.vpdq_seconds_per_hash >= 0.0) {
            return Err(ServeError::Config(
                "vpdq_seconds_per_hash must be 0 (every frame) or a positive number of seconds"
                    .into(),
            ));
        }
        self.validate_replication()?;
        // A replica's reports are made on the writer, with the writer's provider identity.
        if self.reports.enabled && self.replication.mode != ReplicationMode::Replica {
            if !addr.ip().is_loopback() && self.reports.provider == UNCONFIGURED_PROVIDER {
                return Err(ServeError::Config(format!(
                    "listening on {addr} with reports on needs the provider's identity: set [reports] provider, contact_email, legal_basis, recipient (see deploy/baken.toml), or reports.enabled = false"
                )));
            }
            if self.reports.contact_email.trim().is_empty() {
                return Err(ServeError::Config(
                    "reports.contact_email is required (recipients need a contact)".into(),
                ));
            }
            super::report_store::report_config(&self.reports)
                .map_err(|e| ServeError::Config(format!("reports.retention: {e}")))?;
        }
        Ok(())
    }

    fn validate_replication(&self) -> Result<(), ServeError> {
        let r = &self.replication;
        if r.mode != ReplicationMode::Replica {
            return Ok(());
        }
        let scheme_ok = r.upstream.starts_with("http://") || r.upstream.starts_with("https://");
        if !scheme_ok {
            return Err(ServeError::Config(format!(
                "replication.upstream = {:?}: a replica needs the writer's address, e.g. http://baken-writer:50051",
                r.upstream
            )));
        }
        if r.list_public_key.is_none() {
            return Err(ServeError::Config(
                "replication.list_public_key is required on a replica: the writer's list-signing public key (`baken list public-key` on the writer)".into(),
            ));
        }
        if r.upstream.starts_with("https://") && r.upstream_ca.is_none() {
            return Err(ServeError::Config(
                "replication.upstream is https: set replication.upstream_ca to the CA bundle of the writer's certificate".into(),
            ));
        }
        if r.poll_interval_ms == 0 {
            return Err(ServeError::Config(
                "replication.poll_interval_ms must be positive".into(),
            ));
        }
        Ok(())
    }

    /// `scan_algorithms`, parsed.
    pub fn scan_hash_algorithms(&self) -> Result<Vec<crate::hashing::Algorithm>, ServeError> {
        crate::hashing::parse_algorithms(&self.scan_algorithms.join(","))
            .map_err(|e| ServeError::Config(format!("scan_algorithms: {e}")))
    }

    /// The authorisation state this configuration describes.
    pub fn build_auth(&self) -> Result<Auth, ServeError> {
        if !self.auth_enabled() {
            return Ok(Auth::disabled());
        }
        let tokens = match &self.auth.tokens_file {
            Some(p) => Auth::read_tokens(p).map_err(|e| ServeError::Config(e.to_string()))?,
            None => Vec::new(),
        };
        Auth::new(tokens, self.auth.client_cert.clone())
            .map_err(|e| ServeError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_local_and_valid() {
        let c = ServiceConfig::default();
        c.validate().unwrap();
        assert!(!c.auth_enabled());
    }

    #[test]
    fn a_public_address_needs_auth() {
        let mut c = ServiceConfig {
            listen: "0.0.0.0:50051".into(),
            ..ServiceConfig::default()
        };
        assert!(c.validate().is_err());
        c.auth.tokens_file = Some("tokens.toml".into());
        // Reports on a public address must name the provider.
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("[reports] provider"), "{e}");
        c.reports.provider = "Example Photos".into();
        c.validate().unwrap();
        c.auth.enabled = Some(false);
        assert!(c.validate().is_err());
    }

    #[test]
    fn retention_beyond_twelve_months_is_refused() {
        let mut c = ServiceConfig::default();
        c.reports.retention = "13m".into();
        assert!(c.validate().is_err());
        c.reports.retention = "90d".into();
        c.validate().unwrap();
    }

    #[test]
    fn the_sample_configuration_parses_and_validates() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/baken.toml");
        let c = ServiceConfig::from_file(&p).unwrap();
        assert_eq!(c.listen, "0.0.0.0:50051");
        assert_eq!(c.health_listen(), Some("0.0.0.0:8081"));
        assert_eq!(c.auth.client_cert.len(), 2);
        assert!(c.tls.as_ref().is_some_and(|t| !t.require_client_cert));
        c.validate().unwrap();
    }

    /// The `baken.toml` block of a ConfigMap in deploy/k8s (no YAML parser needed: the block
    /// is the lines indented under `  baken.toml: |`).
    fn configmap_toml(yaml: &str) -> String {
        let mut out = String::new();
        let mut inside = false;
        for l in yaml.lines() {
            if inside {
                if let Some(t) = l.strip_prefix("    ") {
                    out.push_str(t);
                } else if !l.trim().is_empty() {
                    break;
                }
                out.push('\n');
            } else if l.trim_end() == "  baken.toml: |" {
                inside = true;
            }
        }
        out
    }

    #[test]
    fn the_deployment_configurations_parse_and_validate() {
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let read = |p: &str| std::fs::read_to_string(deploy.join(p)).unwrap();
        let configs = [
            ("compose/baken.toml", read("compose/baken.toml")),
            (
                "k8s/10-config-writer.yaml",
                configmap_toml(&read("k8s/10-config-writer.yaml")),
            ),
            (
                "k8s/11-config-replica.yaml",
                configmap_toml(&read("k8s/11-config-replica.yaml")),
            ),
        ];
        for (name, text) in configs {
            assert!(text.contains("listen = "), "{name}: no configuration found");
            let c = ServiceConfig::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.starts_with("k8s/") {
                assert!(
                    !c.demo_list,
                    "{name}: the demo list must be off in production"
                );
                assert!(c.tls.is_some() && c.auth_enabled(), "{name}");
                assert_eq!(c.health_listen(), Some("0.0.0.0:8081"), "{name}");
                assert_eq!(c.data, PathBuf::from("/var/lib/baken"), "{name}");
            }
        }
    }

    #[test]
    fn toml_and_env_override_defaults() {
        let mut c = ServiceConfig::from_toml(
            "listen = \"127.0.0.1:6000\"\nmax_in_flight = 8\n[limits]\nmax_pixels = 1000\n[metrics]\nlisten = \"off\"\n",
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.limits.max_pixels, 1000);
        assert_eq!(c.metrics_listen(), None);
        c.apply_env(|k| match k {
            "BAKEN_MAX_IN_FLIGHT" => Some("3".into()),
            "BAKEN_AUTH" => Some("on".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.max_in_flight, 3);
        assert!(c.auth_enabled());
        assert!(ServiceConfig::from_toml("no_such_key = 1").is_err());
        assert!(
            c.apply_env(|k| (k == "BAKEN_AUTH").then(|| "maybe".into()))
                .is_err()
        );
    }
}
