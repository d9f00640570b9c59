//! Delta Lake actions, and the projection of a manifest entry into one Delta commit: a pure
//! function of the entry (timestamps from the entry, never the clock), so every writer that
//! projects an entry writes the same actions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::table::entry::{DataFile, Entry, EntryKind, SchemaDef, DEAD_LETTER_DIR};

/// Map values in Delta actions are strings; a partition value may be null.
pub type StringMap = BTreeMap<String, Option<String>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// Relative to the table root, %-encoded.
    pub path: String,
    pub partition_values: StringMap,
    pub size: i64,
    pub modification_time: i64,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<StringMap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    pub data_change: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: i32,
    pub min_writer_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub provider: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaData {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub format: Format,
    pub schema_string: String,
    pub partition_columns: Vec<String>,
    #[serde(default)]
    pub configuration: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

/// What sluice records of itself in `commitInfo`: which manifest entry a Delta version is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SluiceInfo {
    pub version: String,
    pub seq: u64,
    pub commit_id: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    pub timestamp: i64,
    pub operation: String,
    #[serde(default)]
    pub operation_parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_blind_append: Option<bool>,
    /// Present in the versions sluice writes; another writer's commit has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sluice: Option<SluiceInfo>,
}

/// One line of a Delta commit file. Actions sluice does not know (another writer's
/// `domainMetadata`, `cdc`...) are read as [`Action::Other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    CommitInfo(CommitInfo),
    Protocol(Protocol),
    MetaData(MetaData),
    Txn(Txn),
    Remove(Remove),
    Add(Add),
    #[serde(untagged)]
    Other(serde_json::Value),
}

/// Parses a commit file (newline-delimited actions).
pub fn parse_commit(body: &[u8]) -> Result<Vec<Action>, serde_json::Error> {
    body.split(|&b| b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .map(serde_json::from_slice)
        .collect()
}

/// Serializes actions as a commit file body.
pub fn commit_body(actions: &[Action]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for a in actions {
        serde_json::to_writer(&mut out, a)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The sluice entry a commit file says it is, if sluice wrote it.
pub fn sluice_info(actions: &[Action]) -> Option<&SluiceInfo> {
    actions.iter().find_map(|a| match a {
        Action::CommitInfo(c) => c.sluice.as_ref(),
        _ => None,
    })
}

/// What a projection needs besides the entry.
#[derive(Debug, Clone)]
pub struct Table {
    /// The Delta table id (`metaData.id`), the same for every version.
    pub id: String,
    /// The job's name: names the table in `metaData.name` and in each `txn.appId`.
    pub name: String,
    /// The schema of tables whose first entry recorded none (written before sluice kept one).
    pub fallback: SchemaDef,
    /// `metaData.configuration` entries (retention settings).
    pub configuration: BTreeMap<String, String>,
}

/// The Delta table id of a table whose first entry has `commit_id`: a UUID every writer derives
/// the same way.
pub fn table_id(first_commit_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("sluice-delta-table:{first_commit_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// `txn.appId` of a topic-partition.
pub fn app_id(table: &str, topic: &str, partition: i32) -> String {
    format!("sluice:{table}:{topic}:{partition}")
}

/// The Delta commit of manifest entry `e` (Delta version `e.seq - 1`).
pub fn project(e: &Entry, t: &Table) -> Vec<Action> {
    let mut out = Vec::with_capacity(e.files.len() + e.ranges.len() + 4);
    let (operation, mode) = match e.kind {
        EntryKind::Append => ("STREAMING UPDATE", "Append"),
        EntryKind::Backfill => ("WRITE", "Append"),
        EntryKind::Replace => ("WRITE", "Overwrite"),
        EntryKind::Compact => ("OPTIMIZE", "Compact"),
    };
    // A compaction rewrites rows without changing them: readers of changes skip it.
    let data_change = e.kind != EntryKind::Compact;
    out.push(Action::CommitInfo(CommitInfo {
        timestamp: e.committed_at_ms,
        operation: operation.into(),
        operation_parameters: BTreeMap::from([("mode".to_string(), mode.to_string())]),
        engine_info: Some(format!("sluice/{}", env!("CARGO_PKG_VERSION"))),
        is_blind_append: Some(matches!(e.kind, EntryKind::Append | EntryKind::Backfill)),
        sluice: Some(SluiceInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            seq: e.seq,
            commit_id: e.commit_id.clone(),
            kind: e.kind,
        }),
    }));
    let schema = match (&e.schema, e.seq) {
        (Some(s), _) => Some(s),
        (None, 1) => Some(&t.fallback),
        (None, _) => None,
    };
    if let Some(s) = schema {
        out.push(Action::Protocol(protocol(s)));
        out.push(Action::MetaData(MetaData {
            id: t.id.clone(),
            name: Some(t.name.clone()),
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: s.columns.clone(),
            partition_columns: s.partition_columns.clone(),
            configuration: t.configuration.clone(),
            created_time: Some(e.committed_at_ms),
        }));
    }
    // The offsets each partition's appends have reached, as kafka-delta-ingest records them.
    if e.kind == EntryKind::Append {
        for r in &e.ranges {
            out.push(Action::Txn(Txn {
                app_id: app_id(&t.name, &r.topic, r.partition),
                version: r.to,
                last_updated: Some(e.committed_at_ms),
            }));
        }
    }
    for path in e.removed.iter().filter(|p| is_data_path(p)) {
        out.push(Action::Remove(Remove {
            path: encode_path(path),
            deletion_timestamp: Some(e.committed_at_ms),
            data_change,
        }));
    }
    for f in &e.files {
        out.push(Action::Add(Add {
            data_change,
            ..add(f, e.committed_at_ms)
        }));
    }
    out
}

/// Protocol 1/2 reads everywhere; `timestamp_ntz` needs table features (3/7). A writer
/// version 7 lists the legacy writer features of version 2 it keeps: `invariants` (a
/// non-nullable column is one: Spark refuses the table otherwise) and `appendOnly`.
pub fn protocol(s: &SchemaDef) -> Protocol {
    if s.features.is_empty() {
        Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: None,
            writer_features: None,
        }
    } else {
        let mut writer = s.features.clone();
        writer.extend(["appendOnly".to_string(), "invariants".to_string()]);
        writer.sort();
        writer.dedup();
        Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: Some(s.features.clone()),
            writer_features: Some(writer),
        }
    }
}

/// Whether a path removed by an entry is a data file (dead-letter files are not in the Delta
/// table).
fn is_data_path(rel: &str) -> bool {
    !rel.starts_with(&format!("{DEAD_LETTER_DIR}/"))
}

/// The `add` of a data file committed at `at_ms`.
pub fn add(f: &DataFile, at_ms: i64) -> Add {
    let mut tags = StringMap::from([
        ("sluice.topic".to_string(), Some(f.topic.clone())),
        (
            "sluice.partition".to_string(),
            Some(f.partition.to_string()),
        ),
        (
            "sluice.firstOffset".to_string(),
            Some(f.first_offset.to_string()),
        ),
        (
            "sluice.nextOffset".to_string(),
            Some(f.next_offset.to_string()),
        ),
    ]);
    if !f.spans.is_empty() {
        // A compacted file: its lineage, one `topic/partition:first-next:rows` per source file.
        let spans: Vec<String> = f
            .spans
            .iter()
            .map(|s| {
                format!(
                    "{}/{}:{}-{}:{}",
                    s.topic, s.partition, s.first, s.next, s.rows
                )
            })
            .collect();
        tags.insert("sluice.spans".to_string(), Some(spans.join(" ")));
    }
    Add {
        path: encode_path(&f.path),
        partition_values: partition_values(&f.path),
        size: f.bytes as i64,
        modification_time: at_ms,
        data_change: true,
        stats: Some(stats_json(f)),
        tags: Some(tags),
    }
}

/// The `name=value` folders of a data file's path (the layout's partition columns).
pub fn partition_values(rel: &str) -> StringMap {
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    dir.split('/')
        .filter_map(|seg| seg.split_once('='))
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

/// Delta's `stats` string: `numRecords`, `minValues`, `maxValues`, `nullCount`.
fn stats_json(f: &DataFile) -> String {
    let mut v = serde_json::Map::new();
    v.insert("numRecords".into(), f.rows.into());
    if let Some(s) = f.stats.as_ref().and_then(|s| s.stats()) {
        let obj = |m: &BTreeMap<String, serde_json::Value>| {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        };
        v.insert("minValues".into(), obj(&s.min));
        v.insert("maxValues".into(), obj(&s.max));
        v.insert(
            "nullCount".into(),
            serde_json::Value::Object(
                s.nulls
                    .iter()
                    .map(|(k, n)| (k.clone(), (*n).into()))
                    .collect(),
            ),
        );
    }
    serde_json::Value::Object(v).to_string()
}

/// %-encodes a relative path as Delta wants it (a URI reference): everything but unreserved
/// characters, `/` and `=` is escaped, so `:` or a space in a folder name cannot be misread.
pub fn encode_path(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for b in rel.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'=' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inverse of [`encode_path`] (and of any other writer's %-encoding).
pub fn decode_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
