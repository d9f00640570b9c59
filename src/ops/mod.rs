//! The operator's tools: [`verify`], [`gc`], [`status`], [`metrics`], the backfill planner
//! ([`backfill`]), compaction ([`compact`]), accepting a retention gap ([`skip`]), a job written from a
//! live topic ([`init`]) and the test-data generator ([`generate`]).
//!
//! Modules here may import `record` and `table`; `load` imports [`metrics`], the plan types
//! of [`backfill`] (which the executor in `load` runs) and [`compact`] (a loader compacts
//! closed windows in the background; a replace carries rows out of compacted files): none of
//! them imports the executor.

pub mod backfill;
pub mod compact;
pub mod gc;
pub mod generate;
pub mod init;
pub mod metrics;
pub mod skip;
pub mod status;
pub mod verify;
