//! Errors as gRPC statuses: one mapping from the library's typed errors to codes, with the
//! stable error kind in the `baken-error-kind` trailer. Messages never carry input bytes, and
//! storage faults are logged here and answered without their detail.

use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::error::DecodeError;
use crate::store::StoreError;

/// The metadata key naming an error's stable kind (`truncated`, `busy`, `not_found`, …), set
/// on every error status the service returns, for callers that branch on it.
pub const ERROR_KIND_KEY: &str = "baken-error-kind";

/// A status with its kind attached (see [`ERROR_KIND_KEY`]).
pub fn status_with_kind(code: Code, kind: &str, message: impl Into<String>) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    if let Ok(v) = kind.parse() {
        md.insert(ERROR_KIND_KEY, v);
    }
    Status::with_metadata(code, message, md)
}

/// A decode error as a status: limits → RESOURCE_EXHAUSTED, anything wrong with the image →
/// INVALID_ARGUMENT. The message is the error's own (it never contains input bytes).
pub fn decode_status(e: &DecodeError) -> Status {
    let code = if e.is_limit() {
        Code::ResourceExhausted
    } else if matches!(e, DecodeError::Io(_)) {
        Code::Internal
    } else {
        Code::InvalidArgument
    };
    status_with_kind(
        code,
        e.kind(),
        format!("image rejected ({}): {e}", e.kind()),
    )
}

/// A store error as a status. Storage faults are logged here and answered as INTERNAL without
/// their detail.
pub fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::NoSuchList(_) => status_with_kind(Code::NotFound, "not_found", e.to_string()),
        StoreError::ListExists(_) => {
            status_with_kind(Code::AlreadyExists, "already_exists", e.to_string())
        }
        StoreError::BadListName(_) | StoreError::HashValue(_) | StoreError::Invalid(_) => {
            status_with_kind(Code::InvalidArgument, "invalid", e.to_string())
        }
        StoreError::Db(_) | StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "store error");
            status_with_kind(
                Code::Internal,
                "storage",
                "storage error; see the server log",
            )
        }
    }
}

/// An engine error as a status: decode errors by their kind, store errors as the store maps
/// them, a remote matcher's code as it was.
pub fn engine_status(e: &EngineError) -> Status {
    match e {
        EngineError::Decode(d) => decode_status(d),
        EngineError::Store(s) => store_status(s),
        EngineError::Remote { code, message } => Status::new(*code, message.clone()),
        EngineError::Connect(m) => Status::unavailable(m.clone()),
    }
}
