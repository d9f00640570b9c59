//! sluice: Kafka topics into event-time windowed Parquet tables on object storage, exactly once.
//!
//! Data flow: a consumer ([`source`]) reads records; payloads of each partition are copied into
//! an arena and decoded in chunks against the table schema ([`schema`], [`decode`]); rows are
//! grouped by event-time window ([`window`]) and buffered; a commit encodes each window's rows
//! as a Parquet file ([`writer`]), uploads the files under names that cannot collide, and then
//! publishes one manifest entry ([`manifest`]) with a single conditional put.
//!
//! Invariants:
//! - The manifest is the only truth about what is loaded. An offset is loaded iff a published
//!   entry's range covers it; every offset of a range is in exactly one data or dead-letter file
//!   of that entry (or is no record at all).
//! - A partition's ranges are appended end to end: an entry is only published if each of its
//!   ranges starts where that partition's committed range ends (fencing).
//! - Consumers start every partition at the manifest's committed end; Kafka group offsets are
//!   written after each commit for lag tools and never read back.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod backfill;
pub mod buffer;
pub mod config;
pub mod decode;
pub mod error;
pub mod failpoint;
pub mod flat;
pub mod generate;
pub mod loader;
pub mod manifest;
pub mod metrics;
pub mod schema;
pub mod source;
pub mod status;
pub mod window;
pub mod writer;

use std::sync::Arc;

use error::{ConfigError, Result};
use manifest::Manifest;

/// Opens the job's table storage (`object_store::parse_url_opts`) and its manifest.
pub fn open_manifest(job: &config::Job) -> Result<Manifest> {
    let invalid = |message: String| ConfigError::Invalid {
        path: job.path.clone(),
        key: "storage.url".into(),
        message,
    };
    let url = url::Url::parse(&job.storage_url)
        .map_err(|e| invalid(format!("`{}`: {e}", config::redact_url(&job.storage_url))))?;
    let (store, root) = object_store::parse_url_opts(&url, job.storage_options.iter())
        .map_err(|e| invalid(format!("`{}`: {e}", config::redact_url(&job.storage_url))))?;
    Ok(Manifest::new(Arc::from(store), root, job.checkpoint_every))
}
