//! A running `baken serve` as the matcher (`baken scan --server`): only hashes travel, through
//! MatchHashes; images never leave the machine that hashed them.

use std::collections::BTreeSet;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::{EngineError, HashMatcher, Matched};
use crate::index::QueryHash;
use crate::service::convert;
use crate::service::pb;
use crate::service::pb::scan_service_client::ScanServiceClient;

pub struct RemoteMatcher {
    /// One call at a time from the caller's thread: a small runtime of its own.
    rt: tokio::runtime::Runtime,
    client: ScanServiceClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl RemoteMatcher {
    /// Connect to `addr` (`http://…`, or `https://…` with the PEM of the CA that signed the
    /// server's certificate: there are no built-in roots).
    pub fn connect(
        addr: &str,
        ca_pem: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<RemoteMatcher, EngineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Connect(format!("runtime: {e}")))?;
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| EngineError::Connect(format!("--server {addr}: {e}")))?;
        match ca_pem {
            Some(pem) => {
                endpoint = endpoint
                    .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                    .map_err(|e| EngineError::Connect(format!("TLS: {e}")))?;
            }
            None if addr.starts_with("https:") => {
                return Err(EngineError::Connect(format!(
                    "--server {addr}: give the CA that signed its certificate with --server-ca"
                )));
            }
            None => {}
        }
        let channel = rt
            .block_on(endpoint.connect())
            .map_err(|e| EngineError::Connect(format!("connecting to {addr}: {e}")))?;
        let authorization = token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    EngineError::Connect("the token is not a valid header value".into())
                })
            })
            .transpose()?;
        Ok(RemoteMatcher {
            rt,
            client: ScanServiceClient::new(channel),
            authorization,
        })
    }
}

impl HashMatcher for RemoteMatcher {
    fn hash_types(&self) -> Result<Option<BTreeSet<String>>, EngineError> {
        // The server's lists are not visible from here.
        Ok(None)
    }

    fn check_lists(&self, _lists: &[String]) -> Result<(), EngineError> {
        // The server answers NOT_FOUND for an unknown list on the first call.
        Ok(())
    }

    fn match_query(&self, query: &[QueryHash], only: Option<&[String]>) -> Matched {
        let mut req = tonic::Request::new(pb::MatchHashesRequest {
            hashes: query.iter().map(convert::hash_value_pb).collect(),
            lists: only.map(<[String]>::to_vec).unwrap_or_default(),
            context: None,
        });
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(client.match_hashes(req))
            .map_err(|s| EngineError::Remote {
                code: s.code(),
                message: s.message().to_string(),
            })?
            .into_inner();
        convert::match_result_from_pb(&resp.result.unwrap_or_default()).map_err(|s| {
            EngineError::Remote {
                code: s.code(),
                message: format!("the server's answer: {}", s.message()),
            }
        })
    }
}
