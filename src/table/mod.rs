//! The table: its storage, its manifest (the commit log) and the commit protocol.
//!
//! - [`store`]: the one storage seam (root prefix, create-only put, get, delete, list), the
//!   one retry layer.
//! - [`entry`]: one commit's files and the offset ranges they account for.
//! - [`state`]: what the published entries add up to, and the checks a new entry must pass.
//! - [`manifest`]: reading and writing the log and its checkpoints.
//! - [`upload`]: encoding and uploading a commit's files on every core.
//! - [`commit`]: prepare → write → publish, the exactly-once protocol on one screen.
//! - [`delta`]: the Delta Lake log, the manifest's projection that every engine reads.
//! - [`iceberg`]: the Apache Iceberg metadata, a second projection of the manifest.
//! - [`closed`]: the markers of closed windows, written after the entry that closes them.
//! - [`files`]: reading data files, and the files a replace carries rows in.
//!
//! Nothing here touches Kafka: the loader, compaction and any table format publish entries
//! through [`commit`]. Modules here may import `error` and `record` (encoding, schema
//! columns), never `config`, `load` or `ops`; `make lint` checks it.

pub mod closed;
pub mod commit;
pub mod delta;
pub mod entry;
pub mod evolve;
pub mod files;
pub mod iceberg;
pub mod manifest;
pub mod state;
pub mod store;
pub(crate) mod upload;
