//! sluice: Kafka topics into event-time windowed Parquet tables on object storage, exactly once.
//!
//! The source tree follows the data:
//! - [`record`]: the path of a record — Kafka [`record::source`], payload decoding
//!   ([`record::decode`]), event-time windows, per-partition buffers, Parquet encoding.
//! - [`table`]: the table — its storage seam, the manifest (the commit log) and the commit
//!   protocol ([`table::commit`]: prepare → write → publish), free of Kafka.
//! - [`load`]: the executor of runs (continuous, `--once`, backfill): the run loop, partition
//!   state, the decode worker, and the loader's side of a commit.
//! - [`ops`]: the operator's tools — verify/gc, status, metrics, the backfill planner and the
//!   test-data generator.
//! - [`config`] (job files) and [`error`] are shared by all.
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

pub mod config;
pub mod error;
pub(crate) mod failpoint;
pub mod load;
pub mod ops;
pub mod record;
pub mod table;

use error::{ConfigError, Result};
use table::manifest::Manifest;

/// Opens the job's table storage ([`table::store::open_url`]) and its manifest; a local
/// table's folder is created if missing.
pub fn open_manifest(job: &config::Job) -> Result<Manifest> {
    let invalid = |message: String| ConfigError::Invalid {
        path: job.path.clone(),
        key: "storage.url".into(),
        message,
    };
    let url = url::Url::parse(&job.storage_url)
        .map_err(|e| invalid(format!("`{}`: {e}", config::redact_url(&job.storage_url))))?;
    if url.scheme() == "file" {
        let dir = url
            .to_file_path()
            .map_err(|()| invalid(format!("`{}`: not a local path", url)))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
    }
    let (store, root) = table::store::open_url(&url, &job.storage_options)
        .map_err(|e| invalid(format!("`{}`: {e}", config::redact_url(&job.storage_url))))?;
    Ok(Manifest::new(store, root, job.checkpoint_every))
}

/// The job's table schema as readers see it (Delta types, the layout's partition columns).
pub fn schema_def(job: &config::Job) -> Result<table::entry::SchemaDef> {
    table::delta::types::schema_def(
        &job.schema.fingerprint,
        job.layout.template(),
        &job.schema.table,
    )
    .map_err(|e| {
        ConfigError::Invalid {
            path: job.path.clone(),
            key: "schema.file".into(),
            message: format!("cannot be stored as a Delta Lake table: {e}"),
        }
        .into()
    })
}

/// The job's Iceberg metadata over `manifest`'s storage, when `[iceberg] enabled = true`.
pub fn open_iceberg(
    job: &config::Job,
    manifest: &Manifest,
) -> Result<Option<table::iceberg::IcebergLog>> {
    let Some(i) = &job.iceberg else {
        return Ok(None);
    };
    let event_time = match &job.event_time {
        config::EventTime::Field { name, .. } => Some(name.clone()),
        config::EventTime::KafkaTimestamp => None,
    };
    let settings = table::iceberg::IcebergSettings {
        name: job.name.clone(),
        location: iceberg_location(&job.storage_url),
        schema: schema_def(job)?,
        event_time,
        window_ms: Some(job.window.millis()),
        retention: i.retention,
        max_snapshots: i.max_snapshots,
    };
    let catalog = match &i.catalog {
        None => None,
        Some(c) => Some(
            table::iceberg::catalog::Catalog::open(c.clone()).map_err(|e| {
                error::ConfigError::Invalid {
                    path: job.path.clone(),
                    key: "iceberg.catalog".into(),
                    message: e.to_string(),
                }
            })?,
        ),
    };
    Ok(Some(
        table::iceberg::IcebergLog::new(manifest.store().clone(), settings).with_catalog(catalog),
    ))
}

/// The table's location as Iceberg metadata names it: a local table by its absolute path
/// (every engine reads one), any other by its URL.
pub fn iceberg_location(storage_url: &str) -> String {
    let trimmed = storage_url.trim_end_matches('/');
    match url::Url::parse(storage_url) {
        Ok(u) if u.scheme() == "file" => u
            .to_file_path()
            .map(|p| p.display().to_string().trim_end_matches('/').to_string())
            .unwrap_or_else(|_| trimmed.to_string()),
        _ => trimmed.to_string(),
    }
}

/// The job's Delta log over `manifest`'s storage, unless `[delta] enabled = false`.
pub fn open_delta(
    job: &config::Job,
    manifest: &Manifest,
) -> Result<Option<table::delta::DeltaLog>> {
    let Some(d) = job.delta else {
        return Ok(None);
    };
    let settings = table::delta::DeltaSettings {
        name: job.name.clone(),
        schema: schema_def(job)?,
        checkpoint_every: d.checkpoint_every,
        retention: d.retention,
    };
    Ok(Some(table::delta::DeltaLog::new(
        manifest.store().clone(),
        settings,
    )))
}
