//! AdminService: online backups of the running server's data directory (role `admin`).
//!
//! The checkpoint is made from the server's own open database on the blocking pool; serving
//! goes on meanwhile (RocksDB checkpoints are consistent under concurrent writes). The work is
//! in [`crate::backup`], shared with the offline `baken backup`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::State;
use super::auth::Rpc;
use super::pb;
use crate::backup::{self, BackupError};

pub struct AdminSvc {
    state: Arc<State>,
}

impl AdminSvc {
    pub fn new(state: Arc<State>) -> Self {
        AdminSvc { state }
    }

    async fn backup_inner(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<pb::BackupResponse, Status> {
        let who = self.state.auth.check(&req, Rpc::Backup)?;
        let dest = PathBuf::from(req.into_inner().destination);
        // A relative path would be resolved against the server's working directory, which the
        // caller cannot see: refuse it rather than guess.
        if !dest.is_absolute() {
            return Err(super::status_with_kind(
                Code::InvalidArgument,
                "invalid",
                format!(
                    "destination {:?} must be an absolute path on the server",
                    dest.display()
                ),
            ));
        }
        let store = self.state.store.clone();
        let d = dest.clone();
        let manifest = self
            .state
            .blocking(move || backup::create(&store, &d, "online").map_err(backup_status))
            .await?;
        tracing::info!(caller = %who.name, dest = %dest.display(), "online backup");
        let manifest_json = serde_json::to_string(&manifest)
            .map_err(|_| Status::internal("the manifest could not be encoded"))?;
        Ok(pb::BackupResponse {
            destination: dest.display().to_string(),
            created_at: manifest.created_at,
            lists: manifest
                .lists
                .into_iter()
                .map(|l| pb::BackupList {
                    name: l.name,
                    version: l.version,
                    live_entries: l.live_entries,
                })
                .collect(),
            ledger_head_seq: manifest.ledger.head_seq,
            ledger_head_digest: manifest.ledger.head_digest,
            skipped: manifest.skipped,
            manifest_json,
        })
    }
}

/// Destination problems are the caller's to fix; anything else is logged and INTERNAL.
fn backup_status(e: BackupError) -> Status {
    match e {
        BackupError::Destination { .. } => {
            super::status_with_kind(Code::InvalidArgument, "invalid", e.to_string())
        }
        other => {
            tracing::error!(error = %other, "online backup failed");
            super::status_with_kind(
                Code::Internal,
                "backup",
                "the backup failed; see the server log",
            )
        }
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminSvc {
    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let t0 = Instant::now();
        let r = self.backup_inner(req).await;
        self.state.finish(Rpc::Backup, t0, &r);
        r.map(Response::new)
    }
}
