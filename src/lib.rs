pub mod cli;
pub mod decode;
pub mod error;
pub mod hashing;
pub mod index;
pub mod reports;
pub mod service;
pub mod store;
