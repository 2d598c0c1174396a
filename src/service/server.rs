//! [`Server`]: everything a running service is made of, assembled in one place, so that
//! `baken serve`, the tests and an embedding program start the same thing.

use std::sync::Arc;
use std::time::Duration;

use super::config::{ReplicationMode, UNCONFIGURED_PROVIDER};
use super::{ReportBackend, Running, ServeError, ServiceConfig, replication, report_store};
use crate::reports::sign::Signer;
use crate::reports::store::{Purger, ReportStore};
use crate::store::Store;

/// Where the server's reports go.
enum Reports {
    /// As the configuration says: the signed ledger in the data directory (with its retention
    /// task), the writer's for a replica, or none when `[reports] enabled = false`.
    FromConfig,
    /// A backend of the embedder's (or none).
    Given(Option<Arc<dyn ReportBackend>>),
}

/// A service to start: `Server::new(config).start().await`.
pub struct Server {
    config: ServiceConfig,
    store: Option<Arc<Store>>,
    reports: Reports,
}

impl Server {
    pub fn new(config: ServiceConfig) -> Server {
        Server {
            config,
            store: None,
            reports: Reports::FromConfig,
        }
    }

    /// Serve this (already open) store instead of opening `config.data`.
    pub fn store(mut self, store: Arc<Store>) -> Server {
        self.store = Some(store);
        self
    }

    /// Use this report backend (or none) instead of the one the configuration describes.
    pub fn reports(mut self, backend: Option<Arc<dyn ReportBackend>>) -> Server {
        self.reports = Reports::Given(backend);
        self
    }

    /// Open what is not given, bind the listeners and serve. Must run on a multi-threaded
    /// tokio runtime (a replica's report forwarding blocks on it from the blocking pool).
    pub async fn start(self) -> Result<Running, ServeError> {
        let config = self.config;
        config.validate()?;
        let store = match self.store {
            Some(s) => s,
            None => super::open_store(&config)?,
        };
        let (reports, purger) = match self.reports {
            Reports::Given(b) => (b, None),
            Reports::FromConfig => report_backend(&config, &store)?,
        };
        let mut running = super::start(config, store, reports).await?;
        running.purger = purger;
        Ok(running)
    }
}

/// The backend the configuration describes, and the retention task of a local store.
type ConfiguredReports = (Option<Arc<dyn ReportBackend>>, Option<Purger>);

fn report_backend(
    config: &ServiceConfig,
    store: &Arc<Store>,
) -> Result<ConfiguredReports, ServeError> {
    let r = &config.reports;
    if !r.enabled {
        return Ok((None, None));
    }
    if config.replication.mode == ReplicationMode::Replica {
        // Reports of matches found here are created in the writer's ledger.
        let backend: Arc<dyn ReportBackend> = Arc::new(replication::ForwardingBackend::new(
            replication::writer_client(config)?,
            tokio::runtime::Handle::current(),
            config.replication.upstream.clone(),
        ));
        return Ok((Some(backend), None));
    }
    let reports_err =
        |what: &str, e: crate::reports::ReportError| ServeError::Config(format!("{what}: {e}"));
    let signer = match &r.signing_key {
        Some(p) => Signer::load(p)
            .map_err(|e| reports_err(&format!("reports.signing_key {}", p.display()), e))?,
        None => {
            let (s, created) = Signer::load_or_generate(&config.data)
                .map_err(|e| reports_err("the report signing key", e))?;
            if created {
                tracing::warn!(
                    path = %Signer::default_path(&config.data).display(),
                    key_id = %s.public().key_id(),
                    "generated the report signing key"
                );
            }
            s
        }
    };
    let rc = report_store::report_config(r).map_err(ServeError::Config)?;
    let rs = Arc::new(
        ReportStore::new(store.clone(), Some(signer), rc)
            .map_err(|e| reports_err("the report store", e))?,
    );
    if r.provider == UNCONFIGURED_PROVIDER {
        tracing::warn!(
            "reports carry a placeholder provider: set [reports] provider, contact_email, legal_basis and recipient before real use"
        );
    }
    // Whatever expired while the server was down goes before anything is served.
    let purged = rs
        .purge_expired(time::OffsetDateTime::now_utc(), "retention-task")
        .map_err(|e| reports_err("purging expired reports", e))?;
    if !purged.purged.is_empty() {
        tracing::warn!(count = purged.purged.len(), "purged expired reports");
    }
    let purger = ReportStore::spawn_purger(&rs, Duration::from_secs(r.purge_interval_secs.max(1)));
    let backend: Arc<dyn ReportBackend> = Arc::new(report_store::StoreBackend::new(rs, r.clone()));
    Ok((Some(backend), Some(purger)))
}
