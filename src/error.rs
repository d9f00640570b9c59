//! Typed errors, shaped for the caller: variants where callers branch, fields rather than
//! formatted strings for the things a user has to fix.

use std::path::PathBuf;

/// Errors in a job file or a schema file: they name the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Errors of the manifest (the table's commit log).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Another writer published the same sequence number first. Callers re-read and retry.
    #[error("manifest entry {seq} was published by another writer")]
    Conflict { seq: u64 },
    #[error("storage error at {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error("manifest object {path} is corrupt: {message}")]
    Corrupt { path: String, message: String },
    #[error("manifest entry {seq} is missing although later state exists")]
    Missing { seq: u64 },
}

/// A partition whose buffered range does not start where the manifest says it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub topic: String,
    pub partition: i32,
    /// Where our buffered range starts.
    pub from: i64,
    /// Where the committed range ends (None: nothing committed, but a range was expected).
    pub committed_end: Option<i64>,
}

/// A range whose offsets are not all accounted for: its length must be the records polled in
/// it plus the offsets recorded as not records, and those records must be its rows plus its
/// dead letters. A loader never publishes such a range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unaccounted {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// Records polled in the range (`None`: an entry written before this was recorded).
    pub records: Option<u64>,
    pub rows: u64,
    pub dead_letters: u64,
    pub not_records: u64,
}

impl std::fmt::Display for Unaccounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}: range [{}, {}) has {} offsets but holds {} rows + {} dead letters + {} non-records",
            self.topic,
            self.partition,
            self.from,
            self.to,
            self.to - self.from,
            self.rows,
            self.dead_letters,
            self.not_records
        )?;
        if let Some(r) = self.records {
            write!(f, " ({r} records polled)")?;
        }
        Ok(())
    }
}

/// Errors of the loader.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("storage error at {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error("parquet encoding of {path} failed: {source}")]
    Encode {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("arrow: {context}: {source}")]
    Arrow {
        context: String,
        source: arrow::error::ArrowError,
    },
    /// The `fail` bad-record policy met a record it cannot load.
    #[error("bad record at topic {topic} partition {partition} offset {offset}: {reason}")]
    BadRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// A backfill or replace that the table's state does not allow.
    #[error("refused: {message}")]
    Refused { message: String },
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;
