//! Typed errors of the library. Messages say what is wrong with an input and which limit was hit,
//! never what the input contained: no image bytes, no decoded pixels, no hashes.

use serde::Serialize;

/// Why an image could not be decoded. Each variant has a stable `kind()` string for callers
/// (the CLI's JSON, and later gRPC status details).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("input is empty")]
    Empty,
    #[error("input is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "not a supported image or video format (images: JPEG, PNG, WebP, GIF, BMP, TIFF; videos: MP4/MOV, WebM/Matroska, AVI, FLV, MPEG-TS, animated GIF)"
    )]
    UnsupportedFormat,
    #[error("{format} image has a zero dimension ({width}x{height})")]
    ZeroDimension {
        format: &'static str,
        width: u32,
        height: u32,
    },
    #[error(
        "{format} image is {width}x{height}, over the limit of {max_dimension} px a side or {max_pixels} pixels"
    )]
    DimensionsTooLarge {
        format: &'static str,
        width: u32,
        height: u32,
        max_dimension: u32,
        max_pixels: u64,
    },
    #[error("{format} image needs more decoder memory than the limit of {limit} bytes")]
    MemoryLimit { format: &'static str, limit: u64 },
    #[error("{format} image is truncated: {detail}")]
    Truncated {
        format: &'static str,
        detail: String,
    },
    #[error("{format} image is corrupt: {detail}")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error("{format} image uses a feature not supported here: {detail}")]
    Unsupported {
        format: &'static str,
        detail: String,
    },
    #[error("{format} file has no video stream")]
    NoVideoStream { format: &'static str },
    #[error("{format} video lasts {seconds:.1} s, over the limit of {limit} s")]
    TooLong {
        format: &'static str,
        seconds: f64,
        limit: f64,
    },
    #[error("{format} video has more than the limit of {limit} frames")]
    TooManyFrames { format: &'static str, limit: u64 },
    #[error("{format} video took longer to decode than the time limit")]
    Timeout { format: &'static str },
    #[error("{0}")]
    NotApplicable(String),
    #[error("could not read input: {0}")]
    Io(String),
}

impl DecodeError {
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::UnsupportedFormat => "unsupported_format",
            DecodeError::ZeroDimension { .. } => "zero_dimension",
            DecodeError::DimensionsTooLarge { .. } => "dimensions_too_large",
            DecodeError::MemoryLimit { .. } => "memory_limit",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Corrupt { .. } => "corrupt",
            DecodeError::Unsupported { .. } => "unsupported_feature",
            DecodeError::NoVideoStream { .. } => "no_video_stream",
            DecodeError::TooLong { .. } => "too_long",
            DecodeError::TooManyFrames { .. } => "too_many_frames",
            DecodeError::Timeout { .. } => "timeout",
            DecodeError::NotApplicable(_) => "not_applicable",
            DecodeError::Io(_) => "io",
        }
    }

    /// True when the input broke a configured limit (as opposed to being malformed): a service
    /// maps these to RESOURCE_EXHAUSTED rather than INVALID_ARGUMENT.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            DecodeError::TooLarge { .. }
                | DecodeError::DimensionsTooLarge { .. }
                | DecodeError::MemoryLimit { .. }
                | DecodeError::TooLong { .. }
                | DecodeError::TooManyFrames { .. }
                | DecodeError::Timeout { .. }
        )
    }
}

/// A machine-readable error as printed by the CLI and carried in batch results.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorReport {
    pub kind: &'static str,
    pub message: String,
}

impl From<&DecodeError> for ErrorReport {
    fn from(e: &DecodeError) -> Self {
        ErrorReport {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
