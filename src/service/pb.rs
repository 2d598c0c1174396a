//! Code generated from `proto/baken/v1/*.proto` by build.rs (tonic + prost).
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("baken.v1");

/// The encoded file descriptor set of the API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("baken_descriptor");
