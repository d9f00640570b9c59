//! The table metadata file (`metadata/v<N>.metadata.json`, format version 2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TableMetadata {
    pub format_version: u32,
    pub table_uuid: String,
    pub location: String,
    pub last_sequence_number: i64,
    pub last_updated_ms: i64,
    pub last_column_id: i32,
    pub schemas: Vec<Value>,
    pub current_schema_id: i32,
    pub partition_specs: Vec<Value>,
    pub default_spec_id: i32,
    pub last_partition_id: i32,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_snapshot_id: Option<i64>,
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    #[serde(default)]
    pub snapshot_log: Vec<SnapshotLog>,
    #[serde(default)]
    pub metadata_log: Vec<MetadataLog>,
    pub sort_orders: Vec<Value>,
    pub default_sort_order_id: i32,
    #[serde(default)]
    pub refs: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub snapshot_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub manifest_list: String,
    pub summary: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotLog {
    pub timestamp_ms: i64,
    pub snapshot_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataLog {
    pub timestamp_ms: i64,
    pub metadata_file: String,
}

/// What sluice records of itself in a snapshot's summary.
pub const SUMMARY_SEQ: &str = "sluice.seq";
pub const SUMMARY_COMMIT_ID: &str = "sluice.commit-id";
pub const SUMMARY_KIND: &str = "sluice.kind";
pub const SUMMARY_OFFSETS: &str = "sluice.offsets";

impl TableMetadata {
    pub fn current_snapshot(&self) -> Option<&Snapshot> {
        let id = self.current_snapshot_id?;
        self.snapshots.iter().find(|s| s.snapshot_id == id)
    }

    /// The manifest entry (seq, commit id) the current snapshot projects, if sluice wrote it.
    pub fn sluice_entry(&self) -> Option<(u64, &str)> {
        let s = self.current_snapshot()?;
        let seq = s.summary.get(SUMMARY_SEQ)?.parse().ok()?;
        Some((seq, s.summary.get(SUMMARY_COMMIT_ID)?.as_str()))
    }

    pub fn current_schema(&self) -> Option<&Value> {
        self.schemas
            .iter()
            .find(|s| s["schema-id"].as_i64() == Some(i64::from(self.current_schema_id)))
    }
}

impl Snapshot {
    /// A summary count (`total-records`...), 0 when absent.
    pub fn count(&self, key: &str) -> i64 {
        self.summary
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}
