//! training-collector: turns an LLM service's JSON-lines interaction logs into scored,
//! tagged training examples and curated training sets.
//!
//! The binary (`src/main.rs`) only parses arguments and dispatches; everything else lives in
//! these modules, each with one job.

pub mod cache_warmer;
pub mod capture;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod data_dir_lock;
pub mod datadir;
pub mod enrich;
pub mod export;
pub mod fd_limit;
pub mod mapping;
pub mod metrics;
pub mod preflight;
mod prepare;
pub mod record;
pub mod segment;
pub mod spool;
pub mod stats;
pub mod tail;
pub mod training;
