pub mod cli;
pub mod decode;
pub mod error;
pub mod hashing;
