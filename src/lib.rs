//! training-collector: turns an LLM service's JSON-lines interaction logs into scored,
//! tagged training examples and curated training sets.
//!
//! The binary (`src/main.rs`) only parses arguments and dispatches; everything else lives in
//! these modules, each with one job.

pub mod clock;
pub mod export;
pub mod record;
pub mod stats;
