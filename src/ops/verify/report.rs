//! What `verify` reports: the table's counts, each violation found, and the spans of offsets
//! it names.

use serde::Serialize;

/// One thing wrong with a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    MissingFile {
        path: String,
    },
    SizeMismatch {
        path: String,
        manifest: u64,
        actual: u64,
    },
    RowCountMismatch {
        path: String,
        manifest: u64,
        footer: u64,
    },
    UnreadableFooter {
        path: String,
        error: String,
    },
    Overlap {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        seq: u64,
    },
    Gap {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
    },
    BadReplace {
        seq: u64,
        message: String,
    },
    /// An entry whose files, outside its ranges, do not hold exactly the rows of the files it
    /// removes (a compaction that lost or made rows), or a file whose rows are not its spans.
    BadLineage {
        seq: u64,
        message: String,
    },
    /// The live table's rows, dead letters and non-records of a partition do not add up to
    /// its committed offsets (rows lost or doubled by a removal).
    LiveMismatch {
        topic: String,
        partition: i32,
        offsets: i64,
        rows: u64,
        dead_letters: u64,
        non_records: i64,
    },
    /// An append that added rows to a closed window without marking them late.
    LateUnmarked {
        seq: u64,
        topic: String,
        partition: i32,
        window_start_ms: i64,
    },
    OffsetsOutsideRange {
        seq: u64,
        path: String,
        topic: String,
        partition: i32,
    },
    /// An entry's counts for a range do not add up: its length is not the records polled
    /// plus the recorded non-records, or its records are not its rows plus dead letters.
    Unaccounted {
        seq: u64,
        #[serde(flatten)]
        range: crate::error::Unaccounted,
    },
    /// Offsets of an entry's range that are no row, no dead letter and no recorded
    /// non-record (with `--kafka`: the broker has no answer for them).
    Hole(Span),
    /// `verify --kafka`: offsets of a hole where the broker holds records: they were lost.
    Lost {
        #[serde(flatten)]
        span: Span,
        /// Records the broker holds in the span.
        records: u64,
    },
    /// `verify --kafka`, a job reading from the earliest offset: offsets before a partition's
    /// first range where the broker holds committed records. Ranges only grow forwards, so
    /// these were skipped for good.
    Unloaded {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        records: u64,
    },
    /// Offsets held twice in one entry (two rows, a row and a dead letter, or a record and a
    /// recorded non-record), or accounted outside the entry's range.
    Duplicate(Span),
    /// `verify --kafka`: offsets an entry recorded as not records, where the broker holds
    /// records.
    RecordedNonRecordIsRecord {
        #[serde(flatten)]
        span: Span,
        records: u64,
    },
    CheckpointMismatch {
        seq: u64,
    },
    /// The Delta log lacks a version below its latest (readers stop at the hole).
    DeltaMissingVersion {
        version: u64,
    },
    /// A Delta version with no manifest entry to be the projection of.
    DeltaAhead {
        version: u64,
    },
    /// A Delta version sluice did not write (an `OPTIMIZE` or `VACUUM` from another engine):
    /// sluice stops writing the log there.
    DeltaForeignVersion {
        version: u64,
        operation: Option<String>,
    },
    /// The Delta log's live files at `version` are not the manifest's at entry `version + 1`.
    DeltaFilesMismatch {
        version: u64,
        only_in_delta: Vec<String>,
        only_in_manifest: Vec<String>,
    },
    /// The Delta log could not be read.
    DeltaUnreadable {
        error: String,
    },
    /// A Delta checkpoint that is not the log replayed up to its version.
    DeltaCheckpointMismatch {
        version: u64,
    },
    /// An Iceberg snapshot that names no manifest entry (another engine's
    /// `rewrite_data_files`, `expire_snapshots` or append): sluice stops writing the metadata.
    IcebergForeignSnapshot {
        snapshot_id: i64,
        operation: Option<String>,
    },
    /// An Iceberg snapshot's live files are not the manifest's after the entry it names.
    IcebergFilesMismatch {
        seq: u64,
        snapshot_id: i64,
        only_in_iceberg: Vec<String>,
        only_in_manifest: Vec<String>,
    },
    /// The Iceberg metadata could not be read.
    IcebergUnreadable {
        error: String,
    },
    /// The catalog's table is at metadata sluice did not write (an engine committed to it):
    /// sluice stopped updating the catalog.
    IcebergCatalogForeign {
        catalog: String,
        current: String,
    },
    /// The catalog could not be read.
    IcebergCatalogUnreadable {
        catalog: String,
        error: String,
    },
}

#[derive(Debug, Default, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub ranges: Vec<(i64, i64)>,
    pub rows: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub data_files: u64,
    pub dead_letter_files: u64,
    pub rows: u64,
    pub dead_letters: u64,
    pub partitions: Vec<PartitionReport>,
    pub violations: Vec<Violation>,
    /// Offsets checked one by one: every offset of every range whose files could be read.
    pub offsets_checked: u64,
    /// With `--kafka`: holes the broker holds no record in (offsets not recorded as
    /// non-records by entries written before sluice recorded them; not violations).
    pub unrecorded_non_records: Vec<Span>,
    /// Offsets Kafka deleted before they were loaded, recorded as lost by `sluice skip` (not
    /// violations: an operator accepted each).
    pub lost: Vec<Span>,
    /// Offsets entries recorded as not records (checked against the broker by `--kafka`).
    #[serde(skip)]
    pub recorded_non_records: Vec<Span>,
    /// The Delta log, checked version by version (`None`: the table has none).
    pub delta: Option<DeltaReport>,
    /// The Iceberg metadata, checked snapshot by snapshot (`None`: the table has none).
    pub iceberg: Option<IcebergReport>,
}

/// Offsets `[from, to)` of one partition, named in an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub seq: u64,
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// The Iceberg metadata as `verify` found it.
#[derive(Debug, Default, Serialize)]
pub struct IcebergReport {
    /// The latest metadata version (`metadata/v<N>.metadata.json`).
    pub version: u64,
    /// Snapshots the latest metadata keeps, each checked against the manifest.
    pub snapshots: u64,
    /// Manifest entries not yet projected (the next commit writes them).
    pub behind: u64,
    /// Live files at the current snapshot.
    pub files: u64,
    /// The catalog the table is registered in, when the job names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogReport>,
}

/// Where the catalog's table is.
#[derive(Debug, Default, Serialize)]
pub struct CatalogReport {
    /// The catalog and the table's name there.
    pub table: String,
    /// The manifest entry the catalog's current snapshot projects (`None`: not registered yet,
    /// or foreign).
    pub seq: Option<u64>,
    /// Manifest entries the catalog does not show yet (the next commit brings it up).
    pub behind: u64,
}

/// The Delta log as `verify` found it.
#[derive(Debug, Default, Serialize)]
pub struct DeltaReport {
    /// Versions in the log (`0..versions`).
    pub versions: u64,
    pub checkpoints: u64,
    /// Manifest entries not yet projected (the next commit or `sluice delta sync` writes them).
    pub behind: u64,
    /// Live files at the latest version.
    pub files: u64,
}
