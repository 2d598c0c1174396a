//! Exact (cryptographic) hashes of the original bytes, as NCMEC and most shared lists use.

use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
