//! Typed errors, shaped for the caller: variants where callers branch, fields rather than
//! formatted strings for the things a user has to fix.

use std::path::PathBuf;

/// A value that does not parse or does not fit (a duration, a size, a layout, a schema): what
/// is wrong with it, for the caller to place (a job key, a schema file, a CLI flag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Self {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Self {
        Invalid(s.to_string())
    }
}

/// `Invalid(format!(…))`.
macro_rules! invalid {
    ($($t:tt)*) => {
        $crate::error::Invalid(format!($($t)*))
    };
}
pub(crate) use invalid;

/// Errors in a job file or a schema file: they name the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// A storage call that failed for good (transient errors were retried first).
#[derive(Debug, thiserror::Error)]
#[error("storage error at {path}: {source}")]
pub struct StoreError {
    pub path: String,
    #[source]
    pub source: object_store::Error,
}

/// Errors of the manifest (the table's commit log).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object of the log that does not parse, or a log that does not follow on.
    #[error("manifest object {path} is corrupt: {message}")]
    Corrupt { path: String, message: String },
    #[error("cannot serialise manifest object {path}: {source}")]
    Serialize {
        path: String,
        source: serde_json::Error,
    },
}

/// A partition whose buffered range does not start where the manifest says it ends.
/// Why a commit ([`crate::table::commit`]) did not happen. Refusals are not errors (see [`Outcome`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding {path}: {source}")]
    Encode {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The encoded file does not hold the rows its range accounts for: nothing is uploaded.
    #[error("{path}: the encoded file holds {encoded} rows, but its range accounts for {expected} (nothing was published; a bug: please report)")]
    Rows {
        path: String,
        encoded: u64,
        expected: u64,
    },
    #[error("{path}: {topic}/{partition} has no prepared range")]
    Unprepared {
        path: String,
        topic: String,
        partition: i32,
    },
    #[error("{path} was not encoded (an encoder thread stopped)")]
    NotEncoded { path: String },
    #[error("starting an encoder thread: {0}")]
    Thread(std::io::Error),
    /// Other writers took the next entry every time: nothing of this commit was published
    /// (its files were deleted); the caller may try again later.
    #[error(
        "lost the race for the next manifest entry {races} times in a row; nothing was published"
    )]
    Contended { races: u32 },
}

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

/// Errors of the loader, the committer and the operator's tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The broker refused the client's credentials or certificate, or the client refused the
    /// broker's certificate: no retry will help, so the run stops before committing anything.
    #[error("kafka: cannot connect to {brokers}: {reason}. Check the job's source.properties (security.protocol, sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ssl.certificate.location, ssl.key.location); nothing was committed")]
    KafkaAuth { brokers: String, reason: String },
    /// Kafka no longer has offsets the table has not loaded (retention deleted them first).
    #[error("topic {topic} partition {partition}: offsets [{from}, {to}) are no longer in Kafka (deleted before they were loaded); nothing from offset {from} on was committed. To load on from offset {to}, record the loss with `sluice skip --topic {topic} --partition {partition} --to {to}` (docs/kafka.md: retention gaps)")]
    RetentionGap {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
    },
    /// A commit failed for a reason other than its storage or manifest (those keep their
    /// own variants).
    #[error(transparent)]
    Commit(CommitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Partitions the consumer was given could not be positioned at the manifest's end.
    #[error("cannot position assigned partitions: {reason}")]
    Rebalance { reason: String },
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
    /// `window.late_records = "fail"` met a record of a closed window.
    #[error("late record at topic {topic} partition {partition} offset {offset}: {reason} (window.late_records = \"fail\")")]
    LateRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// Decoding waited for an unavailable schema registry until the loader was told to stop:
    /// nothing past the record that needs the schema was committed.
    #[error("stopped while waiting for the schema registry (nothing past topic {topic} partition {partition} offset {offset} was committed): {reason}")]
    SchemaRegistry {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// The job's payload settings do not fit its schema (`schema.format`, `schema.registry`).
    #[error("{0}")]
    Payload(String),
    /// The job's schema changes the table's incompatibly (and the operator did not allow it).
    #[error("the job's schema changes the table's incompatibly; nothing was loaded. Field by field:\n{diff}Keep the old schema, load into a new table (another storage.url), or pass --allow-incompatible-schema to record it (readers keep reading every file; the removed columns stay in older files only; see docs/schemas.md: schema evolution)")]
    SchemaChange { diff: String },
    /// The job's schema would leave the table's older files unreadable: a new table.
    #[error("the job's schema would leave the table's older files unreadable; nothing was loaded. Field by field:\n{diff}Such a schema is a new table: give the job another storage.url and reload history into it with `sluice backfill` (see docs/schemas.md: schema evolution)")]
    SchemaUnreadable { diff: String },
    /// A backfill or replace that the table's state does not allow.
    #[error("refused: {message}")]
    Refused { message: String },
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;

impl From<CommitError> for LoadError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Manifest(m) => LoadError::Manifest(m),
            CommitError::Store(s) => LoadError::Store(s),
            other => LoadError::Commit(other),
        }
    }
}
