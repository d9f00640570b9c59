//! Avro schema files (`.avsc`) mapped to Arrow schemas.
//!
//! Records become structs, nullable unions (`["null", T]`) nullable fields, enums strings,
//! arrays lists, maps `Map<Utf8, T>`; the logical types timestamp-millis/-micros, date,
//! time-millis/-micros and decimal get their Arrow types. Every table row also carries the
//! source columns [`TOPIC_COL`], [`PARTITION_COL`], [`OFFSET_COL`] and [`KAFKA_TS_COL`].
//!
//! Payloads are decoded with the Avro types ([`TableSchema::payload`]); the data files store
//! what Delta Lake readers expect ([`TableSchema::table`], see [`storage_type`]): timestamps as
//! UTC (or local) microseconds, times of day as plain integers in their Avro unit, fixed as
//! binary. Decimals wider than 38 digits are refused: no Delta reader takes them.

use crate::error::{invalid, Invalid};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const TOPIC_COL: &str = "_topic";
pub const PARTITION_COL: &str = "_partition";
pub const OFFSET_COL: &str = "_offset";
pub const KAFKA_TS_COL: &str = "_kafka_timestamp";
pub const SOURCE_COLS: [&str; 4] = [TOPIC_COL, PARTITION_COL, OFFSET_COL, KAFKA_TS_COL];

/// How an event-time field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// An RFC 3339 string such as `2026-11-24T13:45:00.123Z`.
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    /// The field has an Avro timestamp logical type; its unit is known from the schema.
    Logical,
}

/// An Avro symbol set a string column must keep to: `(top-level column index, symbols)`.
pub type EnumCheck = (usize, Vec<String>);

#[derive(Debug, Clone)]
pub struct TableSchema {
    /// The fields decoded from the payload.
    pub payload: SchemaRef,
    /// The payload fields followed by the source columns: the schema of every data file.
    pub table: SchemaRef,
    /// Hex SHA-256 of the schema file's canonical JSON.
    pub fingerprint: String,
    /// Top-level enum fields, checked after decoding.
    pub enums: Vec<EnumCheck>,
    /// The schema file's text: the reader schema of Avro payloads.
    pub avsc: Arc<str>,
}

impl TableSchema {
    pub fn load(path: &Path) -> Result<Self, Invalid> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid!("cannot read: {e}"))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let value: Value = serde_json::from_str(text).map_err(|e| invalid!("not JSON: {e}"))?;
        let canonical = serde_json::to_string(&value).map_err(|e| e.to_string())?;
        let fingerprint = hex(&Sha256::digest(canonical.as_bytes())[..16]);
        let mut names = Vec::new();
        let dt = avro_type(&value, &mut names, "")?;
        let DataType::Struct(fields) = dt else {
            return Err("the top-level schema must be a record".into());
        };
        let mut enums = Vec::new();
        for (i, f) in value
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(symbols) = enum_symbols(f.get("type")) {
                enums.push((i, symbols));
            }
        }
        for f in fields.iter() {
            if SOURCE_COLS.contains(&f.name().as_str()) {
                return Err(invalid!(
                    "field `{}` clashes with a source column sluice adds ({})",
                    f.name(),
                    SOURCE_COLS.join(", ")
                ));
            }
        }
        let payload = Arc::new(Schema::new(fields.clone()));
        // A top-level field with a default is nullable in the files: a table that gains it
        // later has older rows without it (read as null).
        let defaults: Vec<bool> = value
            .get("fields")
            .and_then(Value::as_array)
            .map(|fs| fs.iter().map(|f| f.get("default").is_some()).collect())
            .unwrap_or_default();
        let mut all: Vec<Arc<Field>> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let stored = storage_field(f);
                match defaults.get(i) {
                    Some(true) if !stored.is_nullable() => {
                        Arc::new(stored.as_ref().clone().with_nullable(true))
                    }
                    _ => stored,
                }
            })
            .collect();
        all.push(Arc::new(Field::new(TOPIC_COL, DataType::Utf8, false)));
        all.push(Arc::new(Field::new(PARTITION_COL, DataType::Int32, false)));
        all.push(Arc::new(Field::new(OFFSET_COL, DataType::Int64, false)));
        all.push(Arc::new(Field::new(
            KAFKA_TS_COL,
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
        )));
        Ok(TableSchema {
            payload,
            table: Arc::new(Schema::new(all)),
            fingerprint,
            enums,
            avsc: Arc::from(text),
        })
    }

    /// How to read the event time from the top-level field `name`.
    pub fn event_time_format(
        &self,
        name: &str,
        format: Option<&str>,
    ) -> Result<TimeFormat, Invalid> {
        let field = self
            .payload
            .field_with_name(name)
            .map_err(|_| format!("`{name}` is not a top-level field of the schema"))?;
        let numeric = matches!(
            field.data_type(),
            DataType::Int32 | DataType::Int64 | DataType::Float32 | DataType::Float64
        );
        match (field.data_type(), format) {
            (DataType::Timestamp(_, _), None) => Ok(TimeFormat::Logical),
            (DataType::Utf8, None | Some("rfc3339")) => Ok(TimeFormat::Rfc3339),
            (_, Some("epoch_seconds")) if numeric => Ok(TimeFormat::EpochSeconds),
            (_, Some("epoch_millis")) if numeric => Ok(TimeFormat::EpochMillis),
            (_, None) if numeric => Err(invalid!(
                "`{name}` is a number: set event_time.format to `epoch_seconds` or `epoch_millis`"
            )),
            (dt, f) => Err(invalid!(
                "`{name}` has type {dt}, which cannot be read as an event time{}",
                f.map(|f| format!(" with format `{f}`")).unwrap_or_default()
            )),
        }
    }
}

/// How a decoded Arrow type is stored in the data files: the type Delta Lake readers expect.
/// Timestamps become microseconds (Delta's `timestamp` / `timestamp_ntz`), times of day plain
/// integers in their Avro unit (Delta has no time type), fixed-size binary plain binary;
/// everything else, nested types included, keeps its shape.
pub fn storage_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Time32(_) => DataType::Int32,
        DataType::Time64(_) => DataType::Int64,
        DataType::FixedSizeBinary(_) => DataType::Binary,
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(storage_field).collect()),
        DataType::List(item) => DataType::List(storage_field(item)),
        DataType::Map(entries, sorted) => {
            // Parquet's standard name for a map's repeated group: DuckDB's Iceberg reader maps
            // a map's keys and values by name only under it.
            let entries = storage_field(entries);
            let entries = match entries.name().as_str() {
                MAP_ENTRIES => entries,
                _ => Arc::new(entries.as_ref().clone().with_name(MAP_ENTRIES)),
            };
            DataType::Map(entries, *sorted)
        }
        other => other.clone(),
    }
}

/// The name of a stored map's entries (their repeated group in Parquet).
pub const MAP_ENTRIES: &str = "key_value";

fn storage_field(f: &Arc<Field>) -> Arc<Field> {
    let dt = storage_type(f.data_type());
    if &dt == f.data_type() {
        f.clone()
    } else {
        Arc::new(f.as_ref().clone().with_data_type(dt))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn enum_symbols(t: Option<&Value>) -> Option<Vec<String>> {
    let t = t?;
    let inner = match t {
        Value::Array(branches) => {
            let non_null: Vec<&Value> = branches.iter().filter(|b| *b != "null").collect();
            if non_null.len() != 1 {
                return None;
            }
            non_null[0]
        }
        other => other,
    };
    if inner.get("type")? != "enum" {
        return None;
    }
    Some(
        inner
            .get("symbols")?
            .as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
    )
}

/// Maps an Avro type (name, object or union) to an Arrow type. `names` holds named types seen
/// so far, so a later reference by name resolves.
fn avro_type(
    v: &Value,
    names: &mut Vec<(String, DataType)>,
    at: &str,
) -> Result<DataType, Invalid> {
    match v {
        Value::String(s) => primitive(s)
            .or_else(|| names.iter().find(|(n, _)| n == s).map(|(_, t)| t.clone()))
            .ok_or_else(|| invalid!("{at}: unknown type `{s}`")),
        Value::Array(_) => Err(invalid!(
            "{at}: unions other than [\"null\", T] are not supported"
        )),
        Value::Object(o) => {
            let ty = o
                .get("type")
                .ok_or_else(|| invalid!("{at}: type object without `type`"))?;
            if let Some(logical) = o.get("logicalType").and_then(Value::as_str) {
                if let Some(dt) = logical_type(logical, o, ty)? {
                    return Ok(dt);
                }
            }
            let name = || {
                o.get("name")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| invalid!("{at}: named type without `name`"))
            };
            match ty.as_str() {
                Some("record") => {
                    let rname = name()?;
                    let fields = o
                        .get("fields")
                        .and_then(Value::as_array)
                        .ok_or_else(|| invalid!("{at}: record `{rname}` without `fields` array"))?;
                    let mut out = Vec::with_capacity(fields.len());
                    for f in fields {
                        let fname = f
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid!("{at}: field without `name` in `{rname}`"))?;
                        let fat = if at.is_empty() {
                            fname.to_string()
                        } else {
                            format!("{at}.{fname}")
                        };
                        let ft = f
                            .get("type")
                            .ok_or_else(|| invalid!("{fat}: field without `type`"))?;
                        let (dt, nullable) = field_type(ft, names, &fat)?;
                        out.push(Field::new(fname, dt, nullable));
                    }
                    let dt = DataType::Struct(Fields::from(out));
                    names.push((rname, dt.clone()));
                    Ok(dt)
                }
                Some("enum") => {
                    names.push((name()?, DataType::Utf8));
                    Ok(DataType::Utf8)
                }
                Some("fixed") => {
                    let size = o
                        .get("size")
                        .and_then(Value::as_i64)
                        .and_then(|s| i32::try_from(s).ok())
                        .ok_or_else(|| invalid!("{at}: fixed without a valid `size`"))?;
                    let dt = DataType::FixedSizeBinary(size);
                    names.push((name()?, dt.clone()));
                    Ok(dt)
                }
                Some("array") => {
                    let items = o
                        .get("items")
                        .ok_or_else(|| invalid!("{at}: array without `items`"))?;
                    let (dt, nullable) = field_type(items, names, &format!("{at}[]"))?;
                    Ok(DataType::List(Arc::new(Field::new("item", dt, nullable))))
                }
                Some("map") => {
                    let values = o
                        .get("values")
                        .ok_or_else(|| invalid!("{at}: map without `values`"))?;
                    let (dt, nullable) = field_type(values, names, &format!("{at}{{}}"))?;
                    // Named as stored (see `storage_type`), so decoding a map needs no cast.
                    let entries = Field::new(
                        MAP_ENTRIES,
                        DataType::Struct(Fields::from(vec![
                            Field::new("key", DataType::Utf8, false),
                            Field::new("value", dt, nullable),
                        ])),
                        false,
                    );
                    Ok(DataType::Map(Arc::new(entries), false))
                }
                Some(_) | None => avro_type(ty, names, at),
            }
        }
        _ => Err(invalid!("{at}: not a valid Avro type")),
    }
}

/// A field's type and nullability: `["null", T]` (either order) is a nullable `T`.
fn field_type(
    v: &Value,
    names: &mut Vec<(String, DataType)>,
    at: &str,
) -> Result<(DataType, bool), Invalid> {
    if let Value::Array(branches) = v {
        let non_null: Vec<&Value> = branches.iter().filter(|b| *b != "null").collect();
        let has_null = non_null.len() < branches.len();
        if non_null.len() == 1 && has_null {
            return Ok((avro_type(non_null[0], names, at)?, true));
        }
        return Err(invalid!(
            "{at}: unions other than [\"null\", T] are not supported"
        ));
    }
    if v == "null" {
        return Ok((DataType::Null, true));
    }
    Ok((avro_type(v, names, at)?, false))
}

fn primitive(s: &str) -> Option<DataType> {
    Some(match s {
        "null" => DataType::Null,
        "boolean" => DataType::Boolean,
        "int" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "bytes" => DataType::Binary,
        "string" => DataType::Utf8,
        _ => return None,
    })
}

fn logical_type(
    logical: &str,
    o: &serde_json::Map<String, Value>,
    base: &Value,
) -> Result<Option<DataType>, Invalid> {
    let base = base.as_str().unwrap_or_default();
    let utc = Some("+00:00".into());
    Ok(Some(match (logical, base) {
        ("timestamp-millis", "long") => DataType::Timestamp(TimeUnit::Millisecond, utc),
        ("timestamp-micros", "long") => DataType::Timestamp(TimeUnit::Microsecond, utc),
        ("local-timestamp-millis", "long") => DataType::Timestamp(TimeUnit::Millisecond, None),
        ("local-timestamp-micros", "long") => DataType::Timestamp(TimeUnit::Microsecond, None),
        ("date", "int") => DataType::Date32,
        ("time-millis", "int") => DataType::Time32(TimeUnit::Millisecond),
        ("time-micros", "long") => DataType::Time64(TimeUnit::Microsecond),
        ("decimal", "bytes" | "fixed") => {
            let precision = o
                .get("precision")
                .and_then(Value::as_u64)
                .ok_or("decimal without `precision`")?;
            let scale = o.get("scale").and_then(Value::as_i64).unwrap_or(0);
            // Delta Lake (and Spark, Trino, BigQuery) stop at 38 digits.
            if precision == 0 || precision > 38 || scale < 0 || scale as u64 > precision {
                return Err(invalid!(
                    "decimal({precision}, {scale}) is out of range (precision 1..=38, the most Delta Lake readers take; 0 <= scale <= precision)"
                ));
            }
            DataType::Decimal128(precision as u8, scale as i8)
        }
        // Unknown logical types fall back to the underlying type, as the Avro spec says.
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = r#"{
      "type": "record", "name": "all", "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "ns", "type": ["null", "string"]},
        {"name": "sn", "type": ["string", "null"]},
        {"name": "arr", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "double"}},
        {"name": "rec", "type": {"type": "record", "name": "inner", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "rec2", "type": ["null", "inner"]},
        {"name": "e", "type": {"type": "enum", "name": "status", "symbols": ["OK", "FAILED"]}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "dt", "type": {"type": "int", "logicalType": "date"}},
        {"name": "amt", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
        {"name": "fx", "type": {"type": "fixed", "name": "f4", "size": 4}}
      ]}"#;

    #[test]
    fn maps_every_avro_type() {
        let s = TableSchema::parse(ALL).unwrap();
        let t = |n: &str| s.payload.field_with_name(n).unwrap().clone();
        assert_eq!(t("b").data_type(), &DataType::Boolean);
        assert_eq!(t("i").data_type(), &DataType::Int32);
        assert_eq!(t("l").data_type(), &DataType::Int64);
        assert_eq!(t("f").data_type(), &DataType::Float32);
        assert_eq!(t("d").data_type(), &DataType::Float64);
        assert_eq!(t("y").data_type(), &DataType::Binary);
        assert!(!t("s").is_nullable());
        assert!(t("ns").is_nullable() && t("sn").is_nullable());
        assert!(matches!(t("arr").data_type(), DataType::List(_)));
        assert!(matches!(t("m").data_type(), DataType::Map(_, _)));
        assert!(matches!(t("rec").data_type(), DataType::Struct(_)));
        assert_eq!(t("rec2").data_type(), t("rec").data_type());
        assert!(t("rec2").is_nullable());
        assert_eq!(t("e").data_type(), &DataType::Utf8);
        assert_eq!(
            t("ts").data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
        );
        assert_eq!(
            t("tu").data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
        assert_eq!(t("dt").data_type(), &DataType::Date32);
        assert_eq!(t("amt").data_type(), &DataType::Decimal128(18, 2));
        assert_eq!(t("fx").data_type(), &DataType::FixedSizeBinary(4));
        assert_eq!(
            s.enums,
            vec![(13, vec!["OK".to_string(), "FAILED".to_string()])]
        );
        assert_eq!(s.table.fields().len(), s.payload.fields().len() + 4);
        assert_eq!(s.event_time_format("ts", None), Ok(TimeFormat::Logical));
        assert_eq!(s.event_time_format("s", None), Ok(TimeFormat::Rfc3339));
        assert!(s.event_time_format("l", None).is_err());
        assert_eq!(
            s.event_time_format("l", Some("epoch_millis")),
            Ok(TimeFormat::EpochMillis)
        );
        assert!(s.event_time_format("nope", None).is_err());
    }

    #[test]
    fn rejects_what_it_cannot_map() {
        assert!(TableSchema::parse(
            r#"{"type":"record","name":"r","fields":[{"name":"u","type":["int","string"]}]}"#
        )
        .is_err());
        assert!(TableSchema::parse(r#""string""#).is_err());
        assert!(TableSchema::parse(
            r#"{"type":"record","name":"r","fields":[{"name":"_offset","type":"long"}]}"#
        )
        .is_err());
        assert!(TableSchema::parse("{not json").is_err());
    }

    #[test]
    fn fingerprint_ignores_whitespace() {
        let a = TableSchema::parse(ALL).unwrap();
        let b = TableSchema::parse(&ALL.replace('\n', " ")).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32);
    }
}
