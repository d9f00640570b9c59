//! Loading: the executor of every run — continuous, scheduled (`--once`) and backfill.
//!
//! ```text
//! run         poll ──► PartState (per partition: range, accounting, raw chunk)
//! decoding          full chunk ──► decode thread ──► rows by window in the partition's buffer
//! flush       seal: drain decoding ──► watermarks ──► sealed ranges ──► committer thread;
//!                   back: count, write group offsets, re-seek refused partitions; pause
//!                   the partitions while a commit is in flight and the budget is reached
//! committing  the committer thread: table::commit (prepare → write → publish → settle)
//! background  a commit that closed windows ──► the job's compaction on a thread of its own
//! progress    bounded runs: done/total, events/s, ETA
//! metrics     counters and gauges, rendered for Prometheus
//! runs        what a run loads (continuous, --once, a backfill plan) and what it did
//! ```
//!
//! Modules here may import `config`, `record`, `table`, `error`; never `ops` (which imports
//! `load`: the CLI wires compaction in). `make lint` checks it (tests/support/layers.py).

mod background;
mod committing;
mod decoding;
mod flush;
pub mod metrics;
mod partition;
mod progress;
mod run;
mod runs;

pub use background::CompactClosed;
pub use run::Loader;
pub use runs::{Plan, PlanRange, Run, RunStats, CHUNK_BYTES, CHUNK_RECORDS};

#[cfg(test)]
mod tests;
