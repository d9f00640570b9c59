//! Iceberg manifests and manifest lists: Avro object container files whose schemas carry the
//! spec's field ids (engines read them by id) and whose headers carry what the spec requires
//! (the table schema and partition spec in a manifest; the snapshot in a manifest list).

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use apache_avro::{Reader, Schema, Writer};
use serde_json::json;

use super::schema::{PartType, PartValue, Spec};

/// `status` of a manifest entry.
pub const EXISTING: i32 = 0;
pub const ADDED: i32 = 1;
pub const DELETED: i32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AvroError(pub String);

fn err(e: impl std::fmt::Display) -> AvroError {
    AvroError(e.to_string())
}

/// A data file as a manifest lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct IceDataFile {
    /// Absolute (v2 requires it).
    pub path: String,
    /// The value of each of the spec's fields (`None`: null).
    pub partition: Vec<Option<PartValue>>,
    pub record_count: i64,
    pub size: i64,
    pub value_counts: Vec<(i32, i64)>,
    pub null_counts: Vec<(i32, i64)>,
    pub lower: Vec<(i32, Vec<u8>)>,
    pub upper: Vec<(i32, Vec<u8>)>,
}

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestEntry {
    pub status: i32,
    pub snapshot_id: i64,
    /// Data and file sequence numbers; `None` for an added file (inherited from the manifest).
    pub seq: Option<i64>,
    pub file: IceDataFile,
}

/// One entry of a manifest list.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFile {
    pub path: String,
    pub length: i64,
    pub spec_id: i32,
    pub seq: i64,
    pub min_seq: i64,
    pub added_snapshot_id: i64,
    pub added_files: i32,
    pub existing_files: i32,
    pub deleted_files: i32,
    pub added_rows: i64,
    pub existing_rows: i64,
    pub deleted_rows: i64,
    /// Of each of the spec's fields: whether a file has a null, the lowest and the highest
    /// value (Iceberg's single-value serialization).
    pub partitions: Vec<FieldSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSummary {
    pub contains_null: bool,
    pub lower: Option<Vec<u8>>,
    pub upper: Option<Vec<u8>>,
}

impl ManifestFile {
    /// Files live in the manifest (added or existing).
    pub fn live_files(&self) -> i64 {
        i64::from(self.added_files) + i64::from(self.existing_files)
    }
}

fn counts_map(name: &str, id: i32, key: i32, value: i32, value_type: &str) -> serde_json::Value {
    json!({
        "name": name,
        "type": ["null", {
            "type": "array",
            "logicalType": "map",
            "items": {
                "type": "record",
                "name": format!("k{key}_v{value}"),
                "fields": [
                    {"name": "key", "type": "int", "field-id": key},
                    {"name": "value", "type": value_type, "field-id": value},
                ],
            },
        }],
        "default": null,
        "field-id": id,
    })
}

/// The Avro type of partition values.
fn partition_type(t: PartType) -> serde_json::Value {
    match t {
        PartType::Int => json!("int"),
        PartType::Date => json!({"type": "int", "logicalType": "date"}),
        PartType::Str => json!("string"),
    }
}

/// The `manifest_entry` schema (format v2) of a spec.
pub fn manifest_schema(spec: &Spec) -> serde_json::Value {
    let partition_fields: Vec<serde_json::Value> = spec
        .fields
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "type": ["null", partition_type(f.ty)],
                "default": null,
                "field-id": f.field_id,
            })
        })
        .collect();
    json!({
        "type": "record",
        "name": "manifest_entry",
        "fields": [
            {"name": "status", "type": "int", "field-id": 0},
            {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
            {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
            {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
            {"name": "data_file", "field-id": 2, "type": {
                "type": "record",
                "name": "r2",
                "fields": [
                    {"name": "content", "type": "int", "field-id": 134},
                    {"name": "file_path", "type": "string", "field-id": 100},
                    {"name": "file_format", "type": "string", "field-id": 101},
                    {"name": "partition", "field-id": 102, "type": {
                        "type": "record", "name": "r102", "fields": partition_fields,
                    }},
                    {"name": "record_count", "type": "long", "field-id": 103},
                    {"name": "file_size_in_bytes", "type": "long", "field-id": 104},
                    counts_map("value_counts", 109, 119, 120, "long"),
                    counts_map("null_value_counts", 110, 121, 122, "long"),
                    counts_map("lower_bounds", 125, 126, 127, "bytes"),
                    counts_map("upper_bounds", 128, 129, 130, "bytes"),
                ],
            }},
        ],
    })
}

/// The `manifest_file` schema (format v2).
pub fn manifest_list_schema() -> serde_json::Value {
    json!({
        "type": "record",
        "name": "manifest_file",
        "fields": [
            {"name": "manifest_path", "type": "string", "field-id": 500},
            {"name": "manifest_length", "type": "long", "field-id": 501},
            {"name": "partition_spec_id", "type": "int", "field-id": 502},
            {"name": "content", "type": "int", "field-id": 517},
            {"name": "sequence_number", "type": "long", "field-id": 515},
            {"name": "min_sequence_number", "type": "long", "field-id": 516},
            {"name": "added_snapshot_id", "type": "long", "field-id": 503},
            {"name": "added_files_count", "type": "int", "field-id": 504},
            {"name": "existing_files_count", "type": "int", "field-id": 505},
            {"name": "deleted_files_count", "type": "int", "field-id": 506},
            {"name": "added_rows_count", "type": "long", "field-id": 512},
            {"name": "existing_rows_count", "type": "long", "field-id": 513},
            {"name": "deleted_rows_count", "type": "long", "field-id": 514},
            {"name": "partitions", "default": null, "field-id": 507, "type": ["null", {
                "type": "array",
                "element-id": 508,
                "items": {
                    "type": "record",
                    "name": "r508",
                    "fields": [
                        {"name": "contains_null", "type": "boolean", "field-id": 509},
                        {"name": "contains_nan", "type": ["null", "boolean"], "default": null, "field-id": 518},
                        {"name": "lower_bound", "type": ["null", "bytes"], "default": null, "field-id": 510},
                        {"name": "upper_bound", "type": ["null", "bytes"], "default": null, "field-id": 511},
                    ],
                },
            }]},
        ],
    })
}

fn null_or(v: Option<Avro>) -> Avro {
    match v {
        None => Avro::Union(0, Box::new(Avro::Null)),
        Some(v) => Avro::Union(1, Box::new(v)),
    }
}

fn pairs(v: &[(i32, i64)]) -> Avro {
    null_or(Some(Avro::Array(
        v.iter()
            .map(|&(k, n)| {
                Avro::Record(vec![
                    ("key".into(), Avro::Int(k)),
                    ("value".into(), Avro::Long(n)),
                ])
            })
            .collect(),
    )))
}

fn bounds(v: &[(i32, Vec<u8>)]) -> Avro {
    null_or(Some(Avro::Array(
        v.iter()
            .map(|(k, b)| {
                Avro::Record(vec![
                    ("key".into(), Avro::Int(*k)),
                    ("value".into(), Avro::Bytes(b.clone())),
                ])
            })
            .collect(),
    )))
}

/// Avro's zig-zag variable-length long.
fn varint(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An object container file: the header written here, so that `avro.schema` is the schema's
/// JSON exactly as given (the crate's own header re-serializes the parsed schema, which drops
/// the `logicalType: map` Iceberg puts on arrays of key-value records), then the blocks the
/// crate encodes with the same sync marker.
fn encode(
    schema_json: &serde_json::Value,
    metadata: &[(&str, String)],
    values: Vec<Avro>,
) -> Result<Vec<u8>, AvroError> {
    let schema = Schema::parse(schema_json).map_err(err)?;
    let marker = *uuid::Uuid::new_v4().as_bytes();
    let mut out = b"Obj\x01".to_vec();
    let schema_text = schema_json.to_string();
    // The codec named even though it is the default: pyiceberg takes a file without one for
    // gzip.
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("avro.schema", schema_text.as_bytes()),
        ("avro.codec", b"null"),
    ];
    entries.extend(metadata.iter().map(|(k, v)| (*k, v.as_bytes())));
    varint(&mut out, entries.len() as i64);
    for (k, v) in entries {
        varint(&mut out, k.len() as i64);
        out.extend_from_slice(k.as_bytes());
        varint(&mut out, v.len() as i64);
        out.extend_from_slice(v);
    }
    varint(&mut out, 0);
    out.extend_from_slice(&marker);
    let mut w = Writer::builder()
        .schema(&schema)
        .writer(out)
        .marker(marker)
        .has_header(true)
        .build()
        .map_err(err)?;
    for v in values {
        w.append_value(v).map_err(err)?;
    }
    w.into_inner().map_err(err)
}

/// A manifest of `entries`, all of spec `spec`; `table_schema` is the Iceberg schema JSON.
pub fn write_manifest(
    spec: &Spec,
    table_schema: &serde_json::Value,
    entries: &[ManifestEntry],
) -> Result<Vec<u8>, AvroError> {
    let values = entries
        .iter()
        .map(|e| {
            let part: Vec<(String, Avro)> = spec
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let v = e.file.partition.get(i).cloned().flatten().map(|p| match p {
                        PartValue::Int(v) => Avro::Int(v),
                        PartValue::Date(v) => Avro::Date(v),
                        PartValue::Str(v) => Avro::String(v),
                    });
                    (f.name.clone(), null_or(v))
                })
                .collect();
            let f = &e.file;
            Avro::Record(vec![
                ("status".into(), Avro::Int(e.status)),
                (
                    "snapshot_id".into(),
                    null_or(Some(Avro::Long(e.snapshot_id))),
                ),
                ("sequence_number".into(), null_or(e.seq.map(Avro::Long))),
                (
                    "file_sequence_number".into(),
                    null_or(e.seq.map(Avro::Long)),
                ),
                (
                    "data_file".into(),
                    Avro::Record(vec![
                        ("content".into(), Avro::Int(0)),
                        ("file_path".into(), Avro::String(f.path.clone())),
                        ("file_format".into(), Avro::String("PARQUET".into())),
                        ("partition".into(), Avro::Record(part)),
                        ("record_count".into(), Avro::Long(f.record_count)),
                        ("file_size_in_bytes".into(), Avro::Long(f.size)),
                        ("value_counts".into(), pairs(&f.value_counts)),
                        ("null_value_counts".into(), pairs(&f.null_counts)),
                        ("lower_bounds".into(), bounds(&f.lower)),
                        ("upper_bounds".into(), bounds(&f.upper)),
                    ]),
                ),
            ])
        })
        .collect();
    encode(
        &manifest_schema(spec),
        &[
            ("schema", table_schema.to_string()),
            ("schema-id", table_schema["schema-id"].to_string()),
            ("partition-spec", spec.fields_json().to_string()),
            ("partition-spec-id", spec.id.to_string()),
            ("format-version", "2".into()),
            ("content", "data".into()),
        ],
        values,
    )
}

/// The manifest list of snapshot `snapshot_id`.
pub fn write_manifest_list(
    snapshot_id: i64,
    parent: Option<i64>,
    seq: i64,
    manifests: &[ManifestFile],
) -> Result<Vec<u8>, AvroError> {
    let values = manifests
        .iter()
        .map(|m| {
            let partitions = (!m.partitions.is_empty()).then(|| {
                Avro::Array(
                    m.partitions
                        .iter()
                        .map(|f| {
                            Avro::Record(vec![
                                ("contains_null".into(), Avro::Boolean(f.contains_null)),
                                ("contains_nan".into(), null_or(None)),
                                (
                                    "lower_bound".into(),
                                    null_or(f.lower.clone().map(Avro::Bytes)),
                                ),
                                (
                                    "upper_bound".into(),
                                    null_or(f.upper.clone().map(Avro::Bytes)),
                                ),
                            ])
                        })
                        .collect(),
                )
            });
            Avro::Record(vec![
                ("manifest_path".into(), Avro::String(m.path.clone())),
                ("manifest_length".into(), Avro::Long(m.length)),
                ("partition_spec_id".into(), Avro::Int(m.spec_id)),
                ("content".into(), Avro::Int(0)),
                ("sequence_number".into(), Avro::Long(m.seq)),
                ("min_sequence_number".into(), Avro::Long(m.min_seq)),
                ("added_snapshot_id".into(), Avro::Long(m.added_snapshot_id)),
                ("added_files_count".into(), Avro::Int(m.added_files)),
                ("existing_files_count".into(), Avro::Int(m.existing_files)),
                ("deleted_files_count".into(), Avro::Int(m.deleted_files)),
                ("added_rows_count".into(), Avro::Long(m.added_rows)),
                ("existing_rows_count".into(), Avro::Long(m.existing_rows)),
                ("deleted_rows_count".into(), Avro::Long(m.deleted_rows)),
                ("partitions".into(), null_or(partitions)),
            ])
        })
        .collect();
    let mut meta = vec![
        ("snapshot-id", snapshot_id.to_string()),
        ("sequence-number", seq.to_string()),
        ("format-version", "2".to_string()),
    ];
    if let Some(p) = parent {
        meta.push(("parent-snapshot-id", p.to_string()));
    }
    encode(&manifest_list_schema(), &meta, values)
}

/// The fields of a record value by name (unions unwrapped).
fn record(v: Avro) -> Result<HashMap<String, Avro>, AvroError> {
    match v {
        Avro::Record(fields) => Ok(fields.into_iter().map(|(k, v)| (k, unwrap(v))).collect()),
        other => Err(AvroError(format!("expected a record, found {other:?}"))),
    }
}

fn unwrap(v: Avro) -> Avro {
    match v {
        Avro::Union(_, inner) => *inner,
        v => v,
    }
}

fn take(r: &mut HashMap<String, Avro>, k: &str) -> Avro {
    r.remove(k).unwrap_or(Avro::Null)
}

fn long(v: Avro) -> Option<i64> {
    match v {
        Avro::Long(n) => Some(n),
        Avro::Int(n) | Avro::Date(n) => Some(i64::from(n)),
        _ => None,
    }
}

fn int(v: Avro) -> Option<i32> {
    long(v).and_then(|n| i32::try_from(n).ok())
}

fn string(v: Avro) -> Option<String> {
    match v {
        Avro::String(s) => Some(s),
        _ => None,
    }
}

fn bytes(v: Avro) -> Option<Vec<u8>> {
    match v {
        Avro::Bytes(b) | Avro::Fixed(_, b) => Some(b),
        _ => None,
    }
}

fn kv<T>(v: Avro, value: impl Fn(Avro) -> Option<T>) -> Result<Vec<(i32, T)>, AvroError> {
    let Avro::Array(items) = v else {
        return Ok(Vec::new());
    };
    items
        .into_iter()
        .map(|item| {
            let mut r = record(item)?;
            let k = int(take(&mut r, "key")).ok_or_else(|| AvroError("a map key".into()))?;
            let v = value(take(&mut r, "value")).ok_or_else(|| AvroError("a map value".into()))?;
            Ok((k, v))
        })
        .collect()
}

fn missing(what: &str) -> AvroError {
    AvroError(format!("no `{what}`"))
}

/// Reads a manifest (one sluice wrote, or any with the fields sluice reads).
pub fn read_manifest(body: &[u8]) -> Result<Vec<ManifestEntry>, AvroError> {
    let reader = Reader::new(body).map_err(err)?;
    let mut out = Vec::new();
    for v in reader {
        let mut r = record(v.map_err(err)?)?;
        let mut f = record(take(&mut r, "data_file"))?;
        let partition = match take(&mut f, "partition") {
            Avro::Record(fields) => fields
                .into_iter()
                .map(|(_, v)| match unwrap(v) {
                    Avro::Int(v) => Some(PartValue::Int(v)),
                    Avro::Date(v) => Some(PartValue::Date(v)),
                    Avro::String(v) => Some(PartValue::Str(v)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        out.push(ManifestEntry {
            status: int(take(&mut r, "status")).ok_or_else(|| missing("status"))?,
            snapshot_id: long(take(&mut r, "snapshot_id")).unwrap_or(0),
            seq: long(take(&mut r, "sequence_number")),
            file: IceDataFile {
                path: string(take(&mut f, "file_path")).ok_or_else(|| missing("file_path"))?,
                partition,
                record_count: long(take(&mut f, "record_count"))
                    .ok_or_else(|| missing("record_count"))?,
                size: long(take(&mut f, "file_size_in_bytes")).unwrap_or(0),
                value_counts: kv(take(&mut f, "value_counts"), long)?,
                null_counts: kv(take(&mut f, "null_value_counts"), long)?,
                lower: kv(take(&mut f, "lower_bounds"), bytes)?,
                upper: kv(take(&mut f, "upper_bounds"), bytes)?,
            },
        });
    }
    Ok(out)
}

/// Reads a manifest list.
pub fn read_manifest_list(body: &[u8]) -> Result<Vec<ManifestFile>, AvroError> {
    let reader = Reader::new(body).map_err(err)?;
    let mut out = Vec::new();
    for v in reader {
        let mut r = record(v.map_err(err)?)?;
        let partitions = match take(&mut r, "partitions") {
            Avro::Array(items) => items
                .into_iter()
                .map(|item| {
                    let mut s = record(item)?;
                    Ok(FieldSummary {
                        contains_null: matches!(take(&mut s, "contains_null"), Avro::Boolean(true)),
                        lower: bytes(take(&mut s, "lower_bound")),
                        upper: bytes(take(&mut s, "upper_bound")),
                    })
                })
                .collect::<Result<Vec<_>, AvroError>>()?,
            _ => Vec::new(),
        };
        let n = |r: &mut HashMap<String, Avro>, k: &str| long(take(r, k)).ok_or_else(|| missing(k));
        out.push(ManifestFile {
            path: string(take(&mut r, "manifest_path")).ok_or_else(|| missing("manifest_path"))?,
            length: n(&mut r, "manifest_length")?,
            spec_id: n(&mut r, "partition_spec_id")? as i32,
            seq: n(&mut r, "sequence_number")?,
            min_seq: n(&mut r, "min_sequence_number")?,
            added_snapshot_id: n(&mut r, "added_snapshot_id")?,
            added_files: n(&mut r, "added_files_count")? as i32,
            existing_files: n(&mut r, "existing_files_count")? as i32,
            deleted_files: n(&mut r, "deleted_files_count")? as i32,
            added_rows: n(&mut r, "added_rows_count")?,
            existing_rows: n(&mut r, "existing_rows_count")?,
            deleted_rows: n(&mut r, "deleted_rows_count")?,
            partitions,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::iceberg::schema::{SpecField, Transform};

    #[test]
    fn manifests_and_lists_read_back_and_carry_field_ids_and_headers() {
        let field = |id: i32, name: &str, transform, ty| SpecField {
            source_id: id,
            field_id: 997 + id,
            name: name.into(),
            transform,
            ty,
        };
        let spec = Spec {
            id: 1,
            fields: vec![
                field(3, "date", Transform::Identity, PartType::Date),
                field(4, "region", Transform::Identity, PartType::Str),
                field(5, "ts_hour", Transform::Hour, PartType::Int),
            ],
        };
        let schema = json!({"type": "struct", "schema-id": 0, "fields": []});
        let entries = vec![
            ManifestEntry {
                status: ADDED,
                snapshot_id: 7,
                seq: None,
                file: IceDataFile {
                    path: "/t/a.parquet".into(),
                    partition: vec![
                        Some(PartValue::Date(20_000)),
                        Some(PartValue::Str("eu".into())),
                        Some(PartValue::Int(480_000)),
                    ],
                    record_count: 10,
                    size: 100,
                    value_counts: vec![(1, 10)],
                    null_counts: vec![(1, 0)],
                    lower: vec![(1, vec![1, 0, 0, 0])],
                    upper: vec![(1, vec![9, 0, 0, 0])],
                },
            },
            ManifestEntry {
                status: EXISTING,
                snapshot_id: 5,
                seq: Some(3),
                file: IceDataFile {
                    path: "/t/b.parquet".into(),
                    partition: vec![None, None, None],
                    record_count: 1,
                    size: 1,
                    value_counts: vec![],
                    null_counts: vec![],
                    lower: vec![],
                    upper: vec![],
                },
            },
        ];
        let body = write_manifest(&spec, &schema, &entries).unwrap();
        assert_eq!(read_manifest(&body).unwrap(), entries);
        let reader = Reader::new(&body[..]).unwrap();
        let meta = reader.user_metadata();
        assert_eq!(meta["partition-spec-id"], b"1");
        assert_eq!(meta["format-version"], b"2");
        let header = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_string();
        for needle in [
            "\"field-id\":102",
            "\"field-id\":1000",
            "\"field-id\":1002",
            "\"logicalType\":\"map\"",
            "\"logicalType\":\"date\"",
        ] {
            assert!(header.contains(needle), "{needle} missing in {header}");
        }
        let list = vec![ManifestFile {
            path: "/t/metadata/m.avro".into(),
            length: body.len() as i64,
            spec_id: 1,
            seq: 4,
            min_seq: 3,
            added_snapshot_id: 7,
            added_files: 1,
            existing_files: 1,
            deleted_files: 0,
            added_rows: 10,
            existing_rows: 1,
            deleted_rows: 0,
            partitions: vec![
                FieldSummary {
                    contains_null: true,
                    lower: Some(20_000i32.to_le_bytes().to_vec()),
                    upper: Some(20_000i32.to_le_bytes().to_vec()),
                },
                FieldSummary {
                    contains_null: false,
                    lower: Some(b"eu".to_vec()),
                    upper: Some(b"us".to_vec()),
                },
            ],
        }];
        let body = write_manifest_list(7, Some(5), 4, &list).unwrap();
        assert_eq!(read_manifest_list(&body).unwrap(), list);
        let header = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_string();
        assert!(header.contains("\"element-id\":508"), "{header}");
    }
}
