//! A Delta table's state at one version (what a reader replays), and its Parquet checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::table::delta::action::{parse_commit, Action, Add, MetaData, Protocol, Remove, Txn};

/// The live state of a Delta table at `version`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: Option<u64>,
    pub protocol: Option<Protocol>,
    pub metadata: Option<MetaData>,
    pub txns: BTreeMap<String, Txn>,
    /// Live files by their path as written in the log.
    pub files: BTreeMap<String, Add>,
    /// Tombstones: files removed, by path.
    pub removed: BTreeMap<String, Remove>,
}

impl Snapshot {
    /// Applies the actions of `version` (the next version, or a checkpoint's).
    pub fn apply(&mut self, version: u64, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Protocol(p) => self.protocol = Some(p.clone()),
                Action::MetaData(m) => self.metadata = Some(m.clone()),
                Action::Txn(t) => {
                    self.txns.insert(t.app_id.clone(), t.clone());
                }
                Action::Add(add) => {
                    self.removed.remove(&add.path);
                    self.files.insert(add.path.clone(), add.clone());
                }
                Action::Remove(r) => {
                    self.files.remove(&r.path);
                    self.removed.insert(r.path.clone(), r.clone());
                }
                Action::CommitInfo(_) | Action::Other(_) => {}
            }
        }
        self.version = Some(version);
    }

    /// The actions of a checkpoint of this snapshot: protocol, metadata, transactions, live
    /// files, and tombstones deleted after `tombstones_after_ms` (readers' VACUUM needs them
    /// for the retention period). Actions in a checkpoint are not data changes.
    pub fn checkpoint_actions(&self, tombstones_after_ms: i64) -> Vec<Action> {
        let mut out = Vec::with_capacity(self.files.len() + self.txns.len() + 2);
        out.extend(self.protocol.clone().map(Action::Protocol));
        out.extend(self.metadata.clone().map(Action::MetaData));
        out.extend(self.txns.values().cloned().map(Action::Txn));
        out.extend(self.files.values().map(|a| {
            Action::Add(Add {
                data_change: false,
                ..a.clone()
            })
        }));
        out.extend(
            self.removed
                .values()
                .filter(|r| r.deletion_timestamp.unwrap_or(i64::MAX) > tombstones_after_ms)
                .map(|r| {
                    Action::Remove(Remove {
                        data_change: false,
                        ..r.clone()
                    })
                }),
        );
        out
    }
}

fn string_map() -> DataType {
    let kv = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(kv), false)),
        false,
    )
}

fn strings() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

/// The checkpoint schema of the Delta protocol (the actions sluice writes).
pub fn checkpoint_schema() -> SchemaRef {
    let s = |name: &str, fields: Vec<Field>| {
        Field::new(name, DataType::Struct(Fields::from(fields)), true)
    };
    let f = |name: &str, dt: DataType| Field::new(name, dt, true);
    Arc::new(Schema::new(vec![
        s(
            "txn",
            vec![
                f("appId", DataType::Utf8),
                f("version", DataType::Int64),
                f("lastUpdated", DataType::Int64),
            ],
        ),
        s(
            "add",
            vec![
                f("path", DataType::Utf8),
                f("partitionValues", string_map()),
                f("size", DataType::Int64),
                f("modificationTime", DataType::Int64),
                f("dataChange", DataType::Boolean),
                f("stats", DataType::Utf8),
                f("tags", string_map()),
            ],
        ),
        s(
            "remove",
            vec![
                f("path", DataType::Utf8),
                f("deletionTimestamp", DataType::Int64),
                f("dataChange", DataType::Boolean),
            ],
        ),
        s(
            "metaData",
            vec![
                f("id", DataType::Utf8),
                f("name", DataType::Utf8),
                f("description", DataType::Utf8),
                s(
                    "format",
                    vec![f("provider", DataType::Utf8), f("options", string_map())],
                ),
                f("schemaString", DataType::Utf8),
                f("partitionColumns", strings()),
                f("configuration", string_map()),
                f("createdTime", DataType::Int64),
            ],
        ),
        s(
            "protocol",
            vec![
                f("minReaderVersion", DataType::Int32),
                f("minWriterVersion", DataType::Int32),
                f("readerFeatures", strings()),
                f("writerFeatures", strings()),
            ],
        ),
    ]))
}

/// Encodes checkpoint actions as a Parquet checkpoint file: one row per action, one column per
/// action kind (the JSON of each action decoded into the checkpoint schema).
pub fn encode_checkpoint(actions: &[Action]) -> Result<Vec<u8>, CheckpointError> {
    let body = crate::table::delta::action::commit_body(actions)?;
    let schema = checkpoint_schema();
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(actions.len().max(1))
        .build_decoder()?;
    decoder.decode(&body)?;
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    let mut w = ArrowWriter::try_new(Vec::new(), schema, None)?;
    w.write(&batch)?;
    Ok(w.into_inner()?)
}

/// Reads a Parquet checkpoint back into actions.
pub fn decode_checkpoint(body: Bytes) -> Result<Vec<Action>, CheckpointError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)?.build()?;
    let mut json = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut json);
        for batch in reader {
            w.write(&batch?)?;
        }
        w.finish()?;
    }
    Ok(parse_commit(&json)?)
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
}
