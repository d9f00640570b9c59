//! The projection of one manifest entry into the next Iceberg version: a pure function of the
//! table's Iceberg state before it and the entry (snapshot ids from the table id and the entry's
//! seq, times from the entry), so any writer that projects an entry writes the same table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::avro::{
    write_manifest, write_manifest_list, AvroError, FieldSummary, IceDataFile, ManifestEntry,
    ManifestFile, ADDED, DELETED, EXISTING,
};
use super::metadata::{
    MetadataLog, Snapshot, SnapshotLog, TableMetadata, SUMMARY_COMMIT_ID, SUMMARY_KIND,
    SUMMARY_OFFSETS, SUMMARY_SEQ,
};
use super::schema::{
    iceberg_name, iceberg_schema, name_mapping, same_fields, top_types, IceSchema, PartType,
    PartValue, Spec, Transform,
};
use crate::table::entry::{
    DataFile, EntryKind, FileStats, OffsetRange, SchemaDef, DEAD_LETTER_DIR,
};

/// The table property naming the layout's folder columns (identity partitions).
const PARTITION_COLUMNS: &str = "sluice.partition-columns";
/// More manifests than this in a snapshot, and the small ones are merged into one.
pub const MERGE_AT: usize = 100;
/// A manifest with this many live files or more is left as it is by a merge.
pub const MERGE_BELOW_FILES: i64 = 10_000;
/// Previous metadata files a version lists in its `metadata-log`.
pub const METADATA_LOG: usize = 100;

/// The table's Iceberg state at one version: its metadata, the manifests of its current
/// snapshot and, once read, their entries.
#[derive(Debug, Clone)]
pub struct State {
    /// `N` of `metadata/v<N>.metadata.json`.
    pub version: u64,
    pub meta: TableMetadata,
    pub manifests: Vec<ManifestFile>,
    /// Entries of manifests (by absolute path), read when a removal or a merge needs them.
    pub contents: HashMap<String, Vec<ManifestEntry>>,
}

/// What a projection needs besides the state and the entry.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The table's root, absolute, without a trailing `/`.
    pub location: String,
    pub table_uuid: String,
    pub name: String,
    /// The schema of tables whose first entry recorded none.
    pub fallback: SchemaDef,
    /// The event-time column and the window size: the partition spec.
    pub event_time: Option<String>,
    pub window_ms: Option<i64>,
    pub retention_ms: i64,
    pub max_snapshots: usize,
}

/// One change to project: an entry, or (to start a table whose manifest is already long) the
/// whole table as of an entry.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub seq: u64,
    pub commit_id: &'a str,
    pub kind: EntryKind,
    pub at_ms: i64,
    pub added: &'a [DataFile],
    pub removed: &'a [String],
    pub ranges: &'a [OffsetRange],
    pub schema: Option<&'a SchemaDef>,
}

/// A projected version: the files to put (manifests, the manifest list; relative paths), then
/// the metadata file.
#[derive(Debug)]
pub struct Projected {
    pub state: State,
    pub files: Vec<(String, Vec<u8>)>,
    pub metadata: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{0}")]
    Schema(String),
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error("entry {seq} removes {path}, which no manifest of the current snapshot lists")]
    NotLive { seq: u64, path: String },
}

/// The snapshot id of entry `seq` in table `table_uuid`: positive, the same for every writer.
pub fn snapshot_id(table_uuid: &str, seq: u64) -> i64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("sluice-iceberg-snapshot:{table_uuid}:{seq}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (i64::from_le_bytes(b) & i64::MAX).max(1)
}

/// The Iceberg table uuid of a table whose first entry has `first_commit_id`.
pub fn table_uuid(first_commit_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("sluice-iceberg-table:{first_commit_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// `metadata/v<N>.metadata.json`.
pub fn metadata_rel(version: u64) -> String {
    format!("metadata/v{version}.metadata.json")
}

impl Ctx {
    pub fn abs(&self, rel: &str) -> String {
        format!("{}/{rel}", self.location)
    }

    /// The relative path of an absolute one under the table, if it is under it.
    pub fn rel<'p>(&self, abs: &'p str) -> Option<&'p str> {
        abs.strip_prefix(&self.location)?.strip_prefix('/')
    }
}

/// Whether projecting `c` on `prev` needs the entries of manifests (a removal or a merge):
/// the manifests whose entries [`project`] reads.
pub fn needs_contents<'s>(prev: Option<&'s State>, c: &Change) -> Vec<&'s ManifestFile> {
    let Some(prev) = prev else { return Vec::new() };
    let removes = c.removed.iter().any(|p| is_data(p));
    let merging = prev.manifests.len() + 2 > MERGE_AT;
    prev.manifests
        .iter()
        .filter(|m| removes || (merging && m.live_files() < MERGE_BELOW_FILES))
        .filter(|m| !prev.contents.contains_key(&m.path))
        .collect()
}

fn is_data(rel: &str) -> bool {
    !rel.starts_with(&format!("{DEAD_LETTER_DIR}/"))
}

/// Projects `c` on `prev` (`None`: the table's first version). The caller has read the
/// entries of every manifest [`needs_contents`] names into `prev.contents`.
pub fn project(
    prev: Option<&State>,
    c: &Change,
    ctx: &Ctx,
    unique: &str,
) -> Result<Projected, ProjectError> {
    let version = prev.map_or(1, |p| p.version + 1);
    let mut meta = match prev {
        Some(p) => p.meta.clone(),
        None => new_metadata(ctx, c.at_ms),
    };
    let sid = snapshot_id(&meta.table_uuid, c.seq);
    let seq = c.seq as i64;
    let at = c.at_ms.max(meta.last_updated_ms);

    // The schema: a new one when the entry records one with different fields.
    let def = match (c.schema, prev) {
        (Some(d), _) => Some(d),
        (None, None) => Some(&ctx.fallback),
        (None, Some(_)) => None,
    };
    if let Some(def) = def {
        evolve_schema(&mut meta, def)?;
    }
    let schema = IceSchema {
        json: meta.current_schema().cloned().unwrap_or(Value::Null),
    };
    let schemas: Vec<IceSchema> = meta
        .schemas
        .iter()
        .map(|s| IceSchema { json: s.clone() })
        .collect();
    meta.properties
        .insert("schema.name-mapping.default".into(), name_mapping(&schemas));
    let (full_spec, folders_spec) = choose_specs(&mut meta, &schema, ctx);
    let types = top_types(&meta.schemas);
    let specs: BTreeMap<i32, Spec> = meta
        .partition_specs
        .iter()
        .filter_map(|s| Spec::parse(s, &types))
        .map(|s| (s.id, s))
        .collect();
    let unpartitioned = Spec {
        id: 0,
        fields: Vec::new(),
    };
    let spec_of = |id: i32| specs.get(&id).unwrap_or(&unpartitioned);

    let mut files = Vec::new();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut contents: HashMap<String, Vec<ManifestEntry>> = HashMap::new();
    let mut counter = 0;
    let mut write = |spec: &Spec,
                     entries: Vec<ManifestEntry>,
                     files: &mut Vec<(String, Vec<u8>)>,
                     contents: &mut HashMap<String, Vec<ManifestEntry>>|
     -> Result<ManifestFile, ProjectError> {
        counter += 1;
        let rel = format!("metadata/{:020}-{unique}-m{counter}.avro", c.seq);
        let body = write_manifest(spec, &schema.json, &entries)?;
        let m = summarize(ctx.abs(&rel), body.len() as i64, spec, seq, sid, &entries);
        files.push((rel, body));
        contents.insert(m.path.clone(), entries);
        Ok(m)
    };

    // Added files, one manifest per spec, listed first.
    let mut added: BTreeMap<i32, Vec<ManifestEntry>> = BTreeMap::new();
    let mut added_rows = 0i64;
    let mut added_size = 0i64;
    for f in c.added {
        // The full spec when the file's window has one hour (day) of event time, else the
        // folders' alone.
        let (spec_id, values) = match partition_values(spec_of(full_spec), f) {
            Some(values) => (full_spec, values),
            None => {
                let values = partition_values(spec_of(folders_spec), f)
                    .unwrap_or_else(|| vec![None; spec_of(folders_spec).fields.len()]);
                (folders_spec, values)
            }
        };
        added_rows += f.rows as i64;
        added_size += f.bytes as i64;
        added.entry(spec_id).or_default().push(ManifestEntry {
            status: ADDED,
            snapshot_id: sid,
            seq: None,
            file: data_file(f, ctx, &schema, values),
        });
    }
    for (spec_id, entries) in added {
        manifests.push(write(spec_of(spec_id), entries, &mut files, &mut contents)?);
    }

    // Removed files: every manifest listing one is rewritten without it.
    let removed: BTreeSet<String> = c
        .removed
        .iter()
        .filter(|p| is_data(p))
        .map(|p| ctx.abs(p))
        .collect();
    let mut found = BTreeSet::new();
    let (mut deleted_rows, mut deleted_size, mut deleted_files) = (0i64, 0i64, 0i64);
    let mut carried = Vec::new();
    for m in prev.map(|p| p.manifests.as_slice()).unwrap_or_default() {
        let listed = prev.and_then(|p| p.contents.get(&m.path));
        let hit = listed.is_some_and(|es| {
            es.iter()
                .any(|e| e.status != DELETED && removed.contains(&e.file.path))
        });
        if !hit {
            // A manifest whose files are all gone was kept only for the snapshot that emptied it.
            if m.live_files() > 0 {
                carried.push((m.clone(), listed.cloned()));
            }
            continue;
        }
        let mut entries = Vec::new();
        for e in listed.into_iter().flatten().filter(|e| e.status != DELETED) {
            let data_seq = e.seq.unwrap_or(m.seq);
            if removed.contains(&e.file.path) {
                found.insert(e.file.path.clone());
                deleted_rows += e.file.record_count;
                deleted_size += e.file.size;
                deleted_files += 1;
                entries.push(ManifestEntry {
                    status: DELETED,
                    snapshot_id: sid,
                    seq: Some(data_seq),
                    file: e.file.clone(),
                });
            } else {
                entries.push(ManifestEntry {
                    status: EXISTING,
                    snapshot_id: if e.status == ADDED {
                        m.added_snapshot_id
                    } else {
                        e.snapshot_id
                    },
                    seq: Some(data_seq),
                    file: e.file.clone(),
                });
            }
        }
        let rewritten = write(spec_of(m.spec_id), entries, &mut files, &mut contents)?;
        manifests.push(rewritten);
    }
    if let Some(path) = removed.iter().find(|p| !found.contains(*p)) {
        return Err(ProjectError::NotLive {
            seq: c.seq,
            path: path.clone(),
        });
    }

    // Too many manifests: the small ones carried over are merged, per spec.
    if manifests.len() + carried.len() > MERGE_AT {
        let (small, big): (Vec<_>, Vec<_>) = carried
            .into_iter()
            .partition(|(m, e)| e.is_some() && m.live_files() < MERGE_BELOW_FILES);
        let mut by_spec: BTreeMap<i32, Vec<ManifestEntry>> = BTreeMap::new();
        for (m, entries) in small {
            for e in entries
                .into_iter()
                .flatten()
                .filter(|e| e.status != DELETED)
            {
                by_spec.entry(m.spec_id).or_default().push(ManifestEntry {
                    status: EXISTING,
                    snapshot_id: if e.status == ADDED {
                        m.added_snapshot_id
                    } else {
                        e.snapshot_id
                    },
                    seq: Some(e.seq.unwrap_or(m.seq)),
                    file: e.file,
                });
            }
        }
        for (spec_id, entries) in by_spec {
            manifests.push(write(spec_of(spec_id), entries, &mut files, &mut contents)?);
        }
        carried = big;
    }
    for (m, entries) in carried {
        if let Some(e) = entries {
            contents.insert(m.path.clone(), e);
        }
        manifests.push(m);
    }

    // The snapshot.
    let parent = meta.current_snapshot();
    let total = |key: &str| parent.map_or(0, |s| s.count(key));
    let list_rel = format!("metadata/snap-{sid}-{}-{unique}.avro", c.seq);
    files.push((
        list_rel.clone(),
        write_manifest_list(sid, meta.current_snapshot_id, seq, &manifests)?,
    ));
    let operation = match c.kind {
        EntryKind::Append | EntryKind::Backfill => "append",
        EntryKind::Replace => "overwrite",
        EntryKind::Compact => "replace",
    };
    let kind = serde_json::to_value(c.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let offsets: BTreeMap<String, [i64; 2]> = c
        .ranges
        .iter()
        .map(|r| (format!("{}/{}", r.topic, r.partition), [r.from, r.to]))
        .collect();
    let added_files = c.added.len() as i64;
    let mut summary = BTreeMap::from([
        ("operation".to_string(), operation.to_string()),
        (SUMMARY_SEQ.into(), c.seq.to_string()),
        (SUMMARY_COMMIT_ID.into(), c.commit_id.to_string()),
        (SUMMARY_KIND.into(), kind),
        ("added-data-files".into(), added_files.to_string()),
        ("added-records".into(), added_rows.to_string()),
        ("added-files-size".into(), added_size.to_string()),
        ("deleted-data-files".into(), deleted_files.to_string()),
        ("deleted-records".into(), deleted_rows.to_string()),
        ("removed-files-size".into(), deleted_size.to_string()),
        (
            "total-data-files".into(),
            (total("total-data-files") + added_files - deleted_files).to_string(),
        ),
        (
            "total-records".into(),
            (total("total-records") + added_rows - deleted_rows).to_string(),
        ),
        (
            "total-files-size".into(),
            (total("total-files-size") + added_size - deleted_size).to_string(),
        ),
        ("total-delete-files".into(), "0".into()),
        ("total-position-deletes".into(), "0".into()),
        ("total-equality-deletes".into(), "0".into()),
    ]);
    if !offsets.is_empty() {
        summary.insert(
            SUMMARY_OFFSETS.into(),
            serde_json::to_string(&offsets).unwrap_or_default(),
        );
    }
    let snapshot = Snapshot {
        snapshot_id: sid,
        parent_snapshot_id: meta.current_snapshot_id,
        sequence_number: seq,
        timestamp_ms: at,
        manifest_list: ctx.abs(&list_rel),
        summary,
        schema_id: Some(meta.current_schema_id),
    };
    if let Some(p) = prev {
        meta.metadata_log.push(MetadataLog {
            timestamp_ms: p.meta.last_updated_ms,
            metadata_file: ctx.abs(&metadata_rel(p.version)),
        });
        let drop = meta.metadata_log.len().saturating_sub(METADATA_LOG);
        meta.metadata_log.drain(..drop);
    }
    meta.snapshots.push(snapshot);
    meta.snapshot_log.push(SnapshotLog {
        timestamp_ms: at,
        snapshot_id: sid,
    });
    meta.current_snapshot_id = Some(sid);
    meta.last_sequence_number = seq;
    meta.last_updated_ms = at;
    meta.refs = BTreeMap::from([(
        "main".to_string(),
        json!({"snapshot-id": sid, "type": "branch"}),
    )]);
    expire(&mut meta, at, ctx);

    let metadata =
        serde_json::to_vec_pretty(&meta).map_err(|e| ProjectError::Schema(e.to_string()))?;
    Ok(Projected {
        state: State {
            version,
            meta,
            manifests,
            contents,
        },
        files,
        metadata,
    })
}

fn new_metadata(ctx: &Ctx, at_ms: i64) -> TableMetadata {
    TableMetadata {
        format_version: 2,
        table_uuid: ctx.table_uuid.clone(),
        location: ctx.location.clone(),
        last_sequence_number: 0,
        last_updated_ms: at_ms,
        last_column_id: 0,
        schemas: Vec::new(),
        current_schema_id: 0,
        partition_specs: vec![json!({"spec-id": 0, "fields": []})],
        default_spec_id: 0,
        last_partition_id: 999,
        properties: BTreeMap::from([
            ("write.format.default".to_string(), "parquet".to_string()),
            ("sluice.job".to_string(), ctx.name.clone()),
            (
                "history.expire.max-snapshot-age-ms".to_string(),
                ctx.retention_ms.to_string(),
            ),
            (
                "history.expire.min-snapshots-to-keep".to_string(),
                "1".to_string(),
            ),
        ]),
        current_snapshot_id: None,
        snapshots: Vec::new(),
        snapshot_log: Vec::new(),
        metadata_log: Vec::new(),
        sort_orders: vec![json!({"order-id": 0, "fields": []})],
        default_sort_order_id: 0,
        refs: BTreeMap::new(),
    }
}

/// Every field id the table's schemas have given, by name path: a path keeps its id forever.
pub fn known_ids(meta: &TableMetadata) -> BTreeMap<String, i32> {
    let mut known = BTreeMap::new();
    for s in &meta.schemas {
        known.extend(IceSchema { json: s.clone() }.ids());
    }
    known
}

/// Makes `def` the current schema: ids kept by name, a new schema id when the fields differ.
fn evolve_schema(meta: &mut TableMetadata, def: &SchemaDef) -> Result<(), ProjectError> {
    meta.properties
        .insert(PARTITION_COLUMNS.into(), def.partition_columns.join(","));
    let known = known_ids(meta);
    let (mut fresh, last) =
        iceberg_schema(def, &known, meta.last_column_id).map_err(|e| ProjectError::Schema(e.0))?;
    if let Some(cur) = meta.current_schema() {
        if same_fields(&IceSchema { json: cur.clone() }, &fresh) {
            return Ok(());
        }
    }
    if let Some(same) = meta
        .schemas
        .iter()
        .find(|s| same_fields(&IceSchema { json: (*s).clone() }, &fresh))
    {
        meta.current_schema_id = same["schema-id"].as_i64().unwrap_or(0) as i32;
        return Ok(());
    }
    let id = meta
        .schemas
        .iter()
        .filter_map(|s| s["schema-id"].as_i64())
        .max()
        .map_or(0, |m| m as i32 + 1);
    fresh["schema-id"] = json!(id);
    meta.schemas.push(fresh);
    meta.current_schema_id = id;
    meta.last_column_id = last;
    Ok(())
}

/// The specs new files take: the layout's folder columns (identity), then the event-time
/// column's hour or day when the window fits in one; and the folders' alone, for a file whose
/// window does not. Each is added to the metadata when it is new; returns their ids (0:
/// unpartitioned). The full one is the default.
fn choose_specs(meta: &mut TableMetadata, schema: &IceSchema, ctx: &Ctx) -> (i32, i32) {
    let folders: Vec<(i32, Transform, String)> = meta
        .properties
        .get(PARTITION_COLUMNS)
        .map(|v| {
            v.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| {
            let (id, ty) = schema.top(&name)?;
            matches!(ty.as_deref()?, "int" | "date" | "string").then_some((
                id,
                Transform::Identity,
                name,
            ))
        })
        .collect();
    let event_time = ctx.event_time.as_deref().and_then(|col| {
        let (source_id, ty) = schema.top(col)?;
        let transform = Transform::for_window(ctx.window_ms?)?;
        match (ty.as_deref()?, transform) {
            ("timestamptz" | "timestamp", t) => Some((source_id, t, format!("{col}_{}", t.name()))),
            ("date", Transform::Day) => Some((source_id, Transform::Day, format!("{col}_day"))),
            _ => None,
        }
    });
    let mut full = folders.clone();
    full.extend(event_time);
    let full_id = spec_id(meta, &full);
    let folders_id = spec_id(meta, &folders);
    meta.default_spec_id = full_id;
    (full_id, folders_id)
}

/// The id of the spec of these fields, added to the metadata when no spec is.
fn spec_id(meta: &mut TableMetadata, fields: &[(i32, Transform, String)]) -> i32 {
    if fields.is_empty() {
        return 0;
    }
    let types = top_types(&meta.schemas);
    let specs: Vec<Spec> = meta
        .partition_specs
        .iter()
        .filter_map(|s| Spec::parse(s, &types))
        .collect();
    let wanted: Vec<(i32, Transform)> = fields.iter().map(|(id, t, _)| (*id, *t)).collect();
    if let Some(s) = specs.iter().find(|s| s.same_as(&wanted)) {
        return s.id;
    }
    let id = meta
        .partition_specs
        .iter()
        .filter_map(|s| s["spec-id"].as_i64())
        .max()
        .map_or(1, |m| m as i32 + 1);
    let fields = fields
        .iter()
        .map(|(source_id, transform, name)| {
            meta.last_partition_id += 1;
            json!({
                "source-id": source_id,
                "field-id": meta.last_partition_id,
                "name": name,
                "transform": transform.name(),
            })
        })
        .collect::<Vec<_>>();
    meta.partition_specs
        .push(json!({"spec-id": id, "fields": fields}));
    id
}

/// A file's values for each field of `spec`: the folders' from its path, the hour or day from
/// its window; `None` when the window has more than one.
fn partition_values(spec: &Spec, f: &DataFile) -> Option<Vec<Option<PartValue>>> {
    let folders = crate::table::delta::action::partition_values(&f.path);
    spec.fields
        .iter()
        .map(|field| match field.transform {
            Transform::Identity => Some(
                folders
                    .get(&field.name)
                    .cloned()
                    .flatten()
                    .and_then(|v| field.ty.parse(&v)),
            ),
            t => {
                let v = t.value(f.window_start_ms, f.window_end_ms)?;
                Some(Some(match field.ty {
                    PartType::Date => PartValue::Date(v),
                    _ => PartValue::Int(v),
                }))
            }
        })
        .collect()
}

/// Expires snapshots older than the retention or beyond the newest `max_snapshots` (never the
/// current one).
fn expire(meta: &mut TableMetadata, now_ms: i64, ctx: &Ctx) {
    let oldest = now_ms.saturating_sub(ctx.retention_ms);
    let n = meta.snapshots.len();
    let current = meta.current_snapshot_id;
    let mut i = 0;
    meta.snapshots.retain(|s| {
        let keep = Some(s.snapshot_id) == current
            || (s.timestamp_ms >= oldest && n - i <= ctx.max_snapshots);
        i += 1;
        keep
    });
    let kept: BTreeSet<i64> = meta.snapshots.iter().map(|s| s.snapshot_id).collect();
    meta.snapshot_log.retain(|l| kept.contains(&l.snapshot_id));
}

/// The manifest-list record of a manifest written by snapshot `sid` at sequence number `seq`.
fn summarize(
    path: String,
    length: i64,
    spec: &Spec,
    seq: i64,
    sid: i64,
    entries: &[ManifestEntry],
) -> ManifestFile {
    let mut m = ManifestFile {
        path,
        length,
        spec_id: spec.id,
        seq,
        min_seq: seq,
        added_snapshot_id: sid,
        added_files: 0,
        existing_files: 0,
        deleted_files: 0,
        added_rows: 0,
        existing_rows: 0,
        deleted_rows: 0,
        partitions: Vec::new(),
    };
    let n = spec.fields.len();
    let mut nulls = vec![false; n];
    let mut lo: Vec<Option<&PartValue>> = vec![None; n];
    let mut hi: Vec<Option<&PartValue>> = vec![None; n];
    for e in entries {
        let rows = e.file.record_count;
        match e.status {
            ADDED => {
                m.added_files += 1;
                m.added_rows += rows;
            }
            EXISTING => {
                m.existing_files += 1;
                m.existing_rows += rows;
            }
            _ => {
                m.deleted_files += 1;
                m.deleted_rows += rows;
            }
        }
        if e.status != DELETED {
            m.min_seq = m.min_seq.min(e.seq.unwrap_or(seq));
        }
        for i in 0..n {
            match e.file.partition.get(i).and_then(Option::as_ref) {
                None => nulls[i] = true,
                Some(v) => {
                    lo[i] = Some(lo[i].map_or(v, |l| l.min(v)));
                    hi[i] = Some(hi[i].map_or(v, |h| h.max(v)));
                }
            }
        }
    }
    m.partitions = (0..n)
        .map(|i| FieldSummary {
            contains_null: nulls[i],
            lower: lo[i].map(PartValue::bytes),
            upper: hi[i].map(PartValue::bytes),
        })
        .collect();
    m
}

/// A data file's manifest record: absolute path, partition value, counts and bounds of its
/// top-level columns from the entry's statistics.
fn data_file(
    f: &DataFile,
    ctx: &Ctx,
    schema: &IceSchema,
    partition: Vec<Option<PartValue>>,
) -> IceDataFile {
    let mut out = IceDataFile {
        path: ctx.abs(&f.path),
        partition,
        record_count: f.rows as i64,
        size: f.bytes as i64,
        value_counts: Vec::new(),
        null_counts: Vec::new(),
        lower: Vec::new(),
        upper: Vec::new(),
    };
    let Some(stats) = f.stats.as_ref().and_then(|s| s.stats()) else {
        return out;
    };
    bounds(&stats, schema, f.rows as i64, &mut out);
    out
}

fn bounds(stats: &FileStats, schema: &IceSchema, rows: i64, out: &mut IceDataFile) {
    for (name, nulls) in &stats.nulls {
        if let Some((id, Some(_))) = schema.top(&iceberg_name(name)) {
            out.null_counts.push((id, *nulls as i64));
            out.value_counts.push((id, rows));
        }
    }
    for (name, min) in &stats.min {
        let (Some(max), Some((id, Some(ty)))) =
            (stats.max.get(name), schema.top(&iceberg_name(name)))
        else {
            continue;
        };
        if let (Some(lo), Some(hi)) = (single_value(&ty, min), single_value(&ty, max)) {
            out.lower.push((id, lo));
            out.upper.push((id, hi));
        }
    }
    out.null_counts.sort_unstable();
    out.value_counts.sort_unstable();
    out.lower.sort_unstable();
    out.upper.sort_unstable();
}

/// Iceberg's single-value serialization of a statistics value (Delta's JSON form), for the
/// types whose bounds are exact; `None` for the others (no bound is written).
pub fn single_value(ty: &str, v: &Value) -> Option<Vec<u8>> {
    match ty {
        "int" => Some(i32::try_from(v.as_i64()?).ok()?.to_le_bytes().to_vec()),
        "long" => Some(v.as_i64()?.to_le_bytes().to_vec()),
        "string" => Some(v.as_str()?.as_bytes().to_vec()),
        "date" => {
            let d = chrono::NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d").ok()?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
            let days = i32::try_from((d - epoch).num_days()).ok()?;
            Some(days.to_le_bytes().to_vec())
        }
        "timestamptz" | "timestamp" => {
            let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
            Some(t.timestamp_micros().to_le_bytes().to_vec())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
