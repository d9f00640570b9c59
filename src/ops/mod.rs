//! The operator's tools: [`verify`], [`gc`], [`status`], [`metrics`], the backfill planner
//! ([`backfill`]) and the test-data generator ([`generate`]).
//!
//! Modules here may import `record` and `table`; only [`metrics`] is imported by `load` (and
//! the plan types of [`backfill`], which the executor in `load` runs): the planner never
//! imports the executor.

pub mod backfill;
pub mod compact;
pub mod gc;
pub mod generate;
pub mod metrics;
pub mod status;
pub mod verify;
