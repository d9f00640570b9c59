//! The path of a record, from Kafka to an encoded Parquet body.
//!
//! ```text
//! source ──► decode (flat fast path, else arrow-json; arrow-avro) ──► window ──► buffer ──► encode
//!  Kafka       payload bytes → Arrow rows                 event time   per window   Parquet bytes
//! ```
//!
//! Modules here may import `error` and each other, never `config`, `table`, `load` or `ops`
//! (unit tests borrow `ops::generate` for sample events): a record's path knows nothing of
//! commits or job files. The options a job sets of it live here ([`options`]); `config` reads
//! them from job files. `make lint` checks it (tests/support/layers.py).

pub mod avro;
pub mod buffer;
pub mod chunk;
pub mod decode;
pub mod encode;
pub(crate) mod event_time;
pub(crate) mod flat;
pub mod options;
pub mod registry;
pub mod schema;
pub mod source;
pub mod window;
