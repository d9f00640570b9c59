//! A manifest entry: one commit, the files it adds and removes and the offset ranges they
//! account for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Unaccounted;

pub const FORMAT_VERSION: u32 = 1;
/// Where entries go, below the table root: one object per sequence number.
pub const LOG_DIR: &str = "_sluice/log";
/// Where dead-letter files go, below the table root.
pub const DEAD_LETTER_DIR: &str = "_sluice/dead_letters";

/// A committed Parquet data file: rows of one topic-partition in one event-time window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the table root.
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub topic: String,
    pub partition: i32,
    /// Half-open `[first_offset, next_offset)`: the smallest offset in the file and one past
    /// the largest. Files of different windows of one partition interleave; the entry's
    /// [`OffsetRange`] is what is contiguous.
    pub first_offset: i64,
    pub next_offset: i64,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub min_event_ms: i64,
    pub max_event_ms: i64,
    pub schema_fingerprint: String,
    /// Per-column statistics of the file's rows, for readers to skip files (Delta `stats`).
    /// `None` in entries written before sluice recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsJson>,
    /// A compacted file's lineage: the rows it holds of each source file, as that file
    /// recorded them. Empty for a file written by a loader, whose lineage is its own
    /// `topic`, `partition`, `[first_offset, next_offset)` and `rows` (see
    /// [`DataFile::lineage`]). When set, it is the truth, and the fields above only summarize
    /// it (`partition` is -1 when the spans come from more than one partition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
    /// Rows added to a window after it closed (`window.late_records = "load"`, or a backfill).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// How far a partition's event time has got, as the entry's writer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub topic: String,
    pub partition: i32,
    /// Windows ending at or before this (ms since the epoch) will get no more rows of this
    /// partition: the latest event time loaded minus the allowed lateness, or for a partition
    /// caught up and idle, the clock minus the allowed lateness.
    pub ms: i64,
    /// The Kafka timestamp of the newest record loaded (to tell how long it has been idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_record_ms: Option<i64>,
}

/// Rows of one topic-partition a data file holds: `rows` records with offsets in the
/// half-open `[first, next)`, all of them the records of one source file (a loader's file
/// of one window of one commit), which owns exactly these offsets of its window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub next: i64,
    pub rows: u64,
}

impl DataFile {
    /// The rows the file holds, per source file: its `spans`, or for a loader's file the one
    /// span of its own fields.
    pub fn lineage(&self) -> std::borrow::Cow<'_, [Span]> {
        if self.spans.is_empty() {
            std::borrow::Cow::Owned(vec![Span {
                topic: self.topic.clone(),
                partition: self.partition,
                first: self.first_offset,
                next: self.next_offset,
                rows: self.rows,
            }])
        } else {
            std::borrow::Cow::Borrowed(&self.spans)
        }
    }

    /// Whether the file holds rows of this partition.
    pub fn holds(&self, topic: &str, partition: i32) -> bool {
        if self.spans.is_empty() {
            self.topic == topic && self.partition == partition
        } else {
            self.spans
                .iter()
                .any(|s| s.topic == topic && s.partition == partition)
        }
    }

    /// Rows the file holds of this partition.
    pub fn rows_of(&self, topic: &str, partition: i32) -> u64 {
        if self.spans.is_empty() {
            if self.topic == topic && self.partition == partition {
                self.rows
            } else {
                0
            }
        } else {
            self.spans
                .iter()
                .filter(|s| s.topic == topic && s.partition == partition)
                .map(|s| s.rows)
                .sum()
        }
    }

    /// The partitions the file holds rows of, each once.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = self
            .lineage()
            .iter()
            .map(|s| (s.topic.clone(), s.partition))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A file's [`FileStats`] held as their JSON text: a few hundred bytes a file rather than
/// three maps of a dozen values (an entry can name thousands of files). In an entry it is the
/// statistics object itself, as if it were a `FileStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FileStats", into = "FileStats")]
pub struct StatsJson(Box<str>);

impl StatsJson {
    /// The statistics (the text was written from a `FileStats`, so it reads back as one).
    pub fn stats(&self) -> Option<FileStats> {
        serde_json::from_str(&self.0).ok()
    }
}

impl TryFrom<FileStats> for StatsJson {
    type Error = serde_json::Error;
    fn try_from(stats: FileStats) -> Result<Self, Self::Error> {
        Ok(StatsJson(serde_json::to_string(&stats)?.into()))
    }
}

impl From<StatsJson> for FileStats {
    fn from(s: StatsJson) -> FileStats {
        s.stats().unwrap_or_default()
    }
}

/// Column statistics of a data file, keyed by top-level column name, with values in Delta
/// Lake's JSON form (numbers; strings; `YYYY-MM-DD` dates; RFC 3339 UTC timestamps with
/// microseconds). A column without a min/max (nested, too long a string, NaN) is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStats {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nulls: BTreeMap<String, u64>,
}

/// The table's schema as readers see it, recorded in the first entry written with it (and
/// again whenever the schema file or the layout changes), so that any writer can project any
/// entry into the Delta log without the job file that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDef {
    /// Fingerprint of the schema file.
    pub fingerprint: String,
    /// The window layout the data files' folders follow.
    pub layout: String,
    /// The Delta Lake schema: a `struct` type as JSON, partition columns included.
    pub columns: String,
    /// The partition columns (the layout's Hive-style `name=` folders), in order.
    pub partition_columns: Vec<String>,
    /// Delta table features the schema needs (`timestampNtz`); none for most tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// A committed dead-letter file: records of one topic-partition that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterFile {
    pub path: String,
    pub bytes: u64,
    pub topic: String,
    pub partition: i32,
    /// Every offset in the file, ascending.
    pub offsets: Vec<i64>,
}

/// The offsets of one partition an entry accounts for, half-open `[from, to)`: each offset in
/// it is in exactly one data file or dead-letter file of the entry, or is not a record
/// (a transaction marker or a compacted gap), listed in `not_records`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// Records the writer polled in `[from, to)`: rows + dead letters of the entry for this
    /// partition. `None` in entries written before sluice recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Half-open sub-ranges of `[from, to)` the broker returned no record for (transaction
    /// markers, compacted offsets), as seen while polling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_records: Vec<(i64, i64)>,
    /// Half-open sub-ranges of `[from, to)` that Kafka deleted (retention) before they were
    /// loaded, recorded by `sluice skip` when an operator accepts the loss: accounted for, never
    /// loaded, and reported by `verify` and `status` as lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<(i64, i64)>,
}

impl OffsetRange {
    /// A range with no accounting (plans, checks of ranges alone).
    pub fn new(topic: &str, partition: i32, from: i64, to: i64) -> Self {
        OffsetRange {
            topic: topic.to_string(),
            partition,
            from,
            to,
            ..Default::default()
        }
    }

    /// How many offsets of the range are recorded as not records.
    pub fn not_record_count(&self) -> u64 {
        self.not_records
            .iter()
            .map(|&(a, b)| (b - a).max(0) as u64)
            .sum()
    }

    /// How many offsets of the range are recorded as lost.
    pub fn lost_count(&self) -> u64 {
        self.lost.iter().map(|&(a, b)| (b - a).max(0) as u64).sum()
    }

    /// The sub-ranges that hold no row and no dead letter: non-records, then lost offsets.
    pub fn gaps(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.not_records.iter().chain(&self.lost).copied()
    }

    /// The accounting invariant: the range's length is its records plus its non-records, and
    /// its records are the `rows` and `dead_letters` the entry holds for it. `None` when it
    /// holds (or, for old entries without `records`, when rows and dead letters do not
    /// exceed the range).
    pub fn unaccounted(&self, rows: u64, dead_letters: u64) -> Option<Unaccounted> {
        let len = (self.to - self.from).max(0) as u64;
        // Lost offsets (accepted by `sluice skip`) count with the non-records.
        let not_records = self.not_record_count() + self.lost_count();
        let kept = rows + dead_letters;
        let holds = match self.records {
            Some(records) => records == kept && len == records + not_records,
            None => kept + not_records <= len,
        };
        (!holds).then(|| Unaccounted {
            topic: self.topic.clone(),
            partition: self.partition,
            from: self.from,
            to: self.to,
            records: self.records,
            rows,
            dead_letters,
            not_records,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// New offsets, each range starting where the partition's committed range ends.
    Append,
    /// Offsets never loaded (history, a gap): each range overlaps nothing committed.
    Backfill,
    /// Offsets already loaded, re-derived from Kafka: each range lies inside the committed
    /// ranges, and the entry removes every file that held them (`removed`) in the same step.
    /// Rows of other partitions in a removed compacted file are carried into new files.
    Replace,
    /// No offsets: live files rewritten into fewer, bigger ones. It has no ranges; the rows
    /// of the files it adds are exactly those of the files it removes (`spans`, per
    /// partition), and every file it removes must still be live.
    Compact,
}

/// One manifest entry: a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub format: u32,
    pub seq: u64,
    pub kind: EntryKind,
    /// Unique per commit attempt: tells a writer whether an entry it finds is its own (a put
    /// that succeeded although its answer was lost).
    pub commit_id: String,
    pub writer: String,
    pub committed_at_ms: i64,
    pub ranges: Vec<OffsetRange>,
    pub files: Vec<DataFile>,
    pub dead_letters: Vec<DeadLetterFile>,
    /// Paths of data and dead-letter files this entry takes out of the table (`Replace`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The table's schema from this entry on, when it differs from the one in force (always
    /// in the first entry sluice writes with a schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaDef>,
    /// The partitions' watermarks as of this entry (each only moves forward).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watermarks: Vec<Watermark>,
    /// Set by the entry that closes windows: from it on, every window ending at or before
    /// this (ms since the epoch) is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_through_ms: Option<i64>,
}

impl Entry {
    /// Where entry `seq` lives, relative to the table root.
    pub fn rel(seq: u64) -> String {
        format!("{LOG_DIR}/{seq:020}.json")
    }

    /// Rows and dead letters the entry holds for a partition.
    pub fn kept(&self, topic: &str, partition: i32) -> (u64, u64) {
        let rows = self.files.iter().map(|f| f.rows_of(topic, partition)).sum();
        let dead = self
            .dead_letters
            .iter()
            .filter(|d| d.topic == topic && d.partition == partition)
            .map(|d| d.offsets.len() as u64)
            .sum();
        (rows, dead)
    }

    /// The ranges whose offsets the entry's files, dead letters and non-records do not add
    /// up to (see [`OffsetRange::unaccounted`]).
    pub fn unaccounted(&self) -> Vec<Unaccounted> {
        self.ranges
            .iter()
            .filter_map(|r| {
                let (rows, dead) = self.kept(&r.topic, r.partition);
                r.unaccounted(rows, dead)
            })
            .collect()
    }
}

/// An append entry of `(topic, partition, from, to)` ranges with no files, for tests.
#[cfg(test)]
pub(crate) fn test_entry(ranges: &[(&str, i32, i64, i64)]) -> Entry {
    Entry {
        format: FORMAT_VERSION,
        seq: 0,
        kind: EntryKind::Append,
        commit_id: uuid::Uuid::new_v4().to_string(),
        writer: "test".into(),
        committed_at_ms: 1,
        ranges: ranges
            .iter()
            .map(|(t, p, f, to)| OffsetRange::new(t, *p, *f, *to))
            .collect(),
        files: vec![],
        dead_letters: vec![],
        removed: vec![],
        schema: None,
        watermarks: vec![],
        closed_through_ms: None,
    }
}

/// A data file of range `r` under folder `dir`, for tests of the commit and its projections.
#[cfg(test)]
pub(crate) fn test_file(r: &OffsetRange, dir: &str) -> DataFile {
    DataFile {
        path: format!(
            "{dir}/part-{}-{}-{}.parquet",
            r.partition,
            r.from,
            uuid::Uuid::new_v4().simple()
        ),
        bytes: 0,
        rows: (r.to - r.from) as u64,
        topic: r.topic.clone(),
        partition: r.partition,
        first_offset: r.from,
        next_offset: r.to,
        window_start_ms: 0,
        window_end_ms: 3_600_000,
        min_event_ms: 0,
        max_event_ms: 0,
        schema_fingerprint: "fp".into(),
        stats: None,
        spans: vec![],
        late: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_without_accounting_still_read() {
        let old = r#"{"format":1,"seq":1,"kind":"append","commit_id":"c","writer":"w",
            "committed_at_ms":0,"ranges":[{"topic":"t","partition":0,"from":0,"to":5}],
            "files":[],"dead_letters":[]}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(
            (e.ranges[0].records, e.ranges[0].not_records.len()),
            (None, 0)
        );
        let back = serde_json::to_string(&e.ranges[0]).unwrap();
        assert!(!back.contains("records"), "{back}");
    }
}
