//! Loading: the executor of every run — continuous, scheduled (`--once`) and backfill.
//!
//! ```text
//! run         poll ──► PartState (per partition: range, accounting, raw chunk)
//! decoding          full chunk ──► decode thread ──► rows by window in the partition's buffer
//! flush       seal: drain decoding ──► watermarks ──► sealed ranges ──► committer thread;
//!                   back: count, write group offsets, re-seek refused partitions; pause
//!                   the partitions while a commit is in flight and the budget is reached
//! committing  the committer thread: table::commit (prepare → write → publish → settle)
//! background  a commit that closed windows ──► ops::compact on a thread of its own
//! progress  bounded runs: done/total, events/s, ETA
//! ```
//!
//! Modules here may import `record`, `table` and `ops::{metrics, backfill, compact}`;
//! nothing imports `load` but the CLI.

mod background;
mod committing;
mod decoding;
mod flush;
mod partition;
mod progress;
mod run;

use std::time::Duration;

pub use run::Loader;

use crate::ops::backfill::Plan;
use crate::table::entry::EntryKind;

/// Records decoded together: up to this many, or this many bytes of payload, whichever first
/// (each partition fills an arena of its own, and a few more are on their way to the decode
/// thread: bytes keep them small whatever the record size).
pub const CHUNK_RECORDS: usize = 8192;
pub const CHUNK_BYTES: usize = 1 << 20;
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

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
}

#[cfg(test)]
mod tests;
