//! What a run loads and when it ends ([`Run`]), the backfill plan it may execute ([`Plan`]),
//! what it did ([`RunStats`]), and the sizes the loader works in.

use std::time::Duration;

use crate::table::entry::EntryKind;

/// Records decoded together: up to this many, or this many bytes of payload, whichever first
/// (each partition fills an arena of its own, and a few more are on their way to the decode
/// thread: bytes keep them small whatever the record size).
pub const CHUNK_RECORDS: usize = 8192;
pub const CHUNK_BYTES: usize = 1 << 20;
pub(crate) const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run loads, and when it ends.
#[derive(Debug, Clone)]
pub enum Run {
    /// In the consumer group, until SIGINT/SIGTERM; then commits what is buffered. Appends.
    Continuous,
    /// Every partition up to its end as of the start; commits and exits. Appends.
    Once,
    /// The ranges of a backfill plan: a `backfill` entry, or with `replace` a `replace` entry.
    Backfill(Plan),
}

impl Run {
    /// Runs that stop at a target offset per partition.
    pub fn is_bounded(&self) -> bool {
        !matches!(self, Run::Continuous)
    }

    /// The kind of every entry the run publishes.
    pub fn entry_kind(&self) -> EntryKind {
        match self {
            Run::Continuous | Run::Once => EntryKind::Append,
            Run::Backfill(plan) => plan.entry_kind(),
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunStats {
    pub rows: u64,
    pub dead_letters: u64,
    pub files: u64,
    pub bytes: u64,
    pub commits: u64,
    pub fenced: u64,
    /// Lost races for a manifest entry (re-read and retried, or refused).
    pub conflicts: u64,
    /// Records read from Kafka and kept, re-reads included (a partition re-read after a
    /// rebalance, a fence or a failed commit counts again).
    pub consumed: u64,
    /// Commits that failed and were tried again.
    pub failed_commits: u64,
}

/// One partition's range to backfill, half-open; `to: None` is the partition's end now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: Option<i64>,
}

/// What `sluice backfill` loads: ranges never loaded (a `backfill` entry), or with `replace`,
/// loaded ranges re-derived from Kafka and swapped for the files in `removed` in one entry.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub ranges: Vec<PlanRange>,
    pub replace: bool,
    pub removed: Vec<String>,
    /// Removed files holding rows of partitions the plan does not replace (compacted files):
    /// the entry carries those rows into new files.
    pub carried: Vec<String>,
}

impl Plan {
    /// The kind of the entry that publishes the plan.
    pub fn entry_kind(&self) -> EntryKind {
        if self.replace {
            EntryKind::Replace
        } else {
            EntryKind::Backfill
        }
    }
}
