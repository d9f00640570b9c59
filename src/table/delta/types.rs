//! The table's schema as a Delta Lake schema: every Arrow type the schema files produce maps to
//! a Delta type, and the layout's Hive-style folders (`date={date}/hour={hour}`) become typed
//! partition columns.

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::{json, Value};

use crate::error::{invalid, Invalid};
use crate::table::entry::SchemaDef;

/// The Delta type of a layout placeholder value: `{date}` a date, one number an integer,
/// anything else a string.
fn partition_type(value_template: &str) -> &'static str {
    match value_template {
        "{date}" => "date",
        "{year}" | "{month}" | "{day}" | "{hour}" | "{minute}" => "integer",
        _ => "string",
    }
}

/// The partition columns of a layout template: each `name=value` folder, typed.
pub fn partition_columns(layout: &str) -> Vec<(String, &'static str)> {
    layout
        .split('/')
        .filter_map(|seg| seg.split_once('='))
        .map(|(name, value)| (name.to_string(), partition_type(value)))
        .collect()
}

/// The schema record of a table with data-file schema `schema` (its storage types, see
/// `record::schema::storage_type`) and window layout `layout`.
pub fn schema_def(fingerprint: &str, layout: &str, schema: &Schema) -> Result<SchemaDef, Invalid> {
    let mut features = Vec::new();
    let mut fields = Vec::with_capacity(schema.fields().len() + 2);
    for f in schema.fields() {
        fields.push(field(f, &mut features)?);
    }
    let parts = partition_columns(layout);
    for (name, ty) in &parts {
        if let Some(clash) = schema
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
        {
            return Err(invalid!(
                "the layout's partition folder `{name}=` clashes with the column `{}`: engines would see two columns of that name; rename the folder in window.layout",
                clash.name()
            ));
        }
        fields.push(json!({"name": name, "type": ty, "nullable": true, "metadata": {}}));
    }
    features.sort();
    features.dedup();
    let columns = json!({"type": "struct", "fields": fields}).to_string();
    Ok(SchemaDef {
        fingerprint: fingerprint.to_string(),
        layout: layout.to_string(),
        columns,
        partition_columns: parts.into_iter().map(|(n, _)| n).collect(),
        features,
    })
}

fn field(f: &Field, features: &mut Vec<String>) -> Result<Value, Invalid> {
    let ty =
        delta_type(f.data_type(), features).map_err(|e| invalid!("column `{}`: {e}", f.name()))?;
    Ok(json!({"name": f.name(), "type": ty, "nullable": f.is_nullable(), "metadata": {}}))
}

/// The Delta type of an Arrow storage type.
pub fn delta_type(dt: &DataType, features: &mut Vec<String>) -> Result<Value, Invalid> {
    Ok(match dt {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 => json!("byte"),
        DataType::Int16 => json!("short"),
        DataType::Int32 => json!("integer"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 | DataType::LargeUtf8 => json!("string"),
        DataType::Binary | DataType::LargeBinary => json!("binary"),
        DataType::Date32 => json!("date"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => json!("timestamp"),
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            features.push("timestampNtz".into());
            json!("timestamp_ntz")
        }
        DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 => json!(format!("decimal({p},{s})")),
        DataType::List(item) => json!({
            "type": "array",
            "elementType": delta_type(item.data_type(), features)?,
            "containsNull": item.is_nullable(),
        }),
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(invalid!("a map without key and value fields"));
            };
            let (Some(k), Some(v)) = (kv.first(), kv.get(1)) else {
                return Err(invalid!("a map without key and value fields"));
            };
            json!({
                "type": "map",
                "keyType": delta_type(k.data_type(), features)?,
                "valueType": delta_type(v.data_type(), features)?,
                "valueContainsNull": v.is_nullable(),
            })
        }
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| field(f, features))
                .collect::<Result<Vec<_>, _>>()?;
            json!({"type": "struct", "fields": fields})
        }
        other => {
            return Err(invalid!(
                "type {other} has no Delta Lake type (an Avro `null` field cannot be stored)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_storage_type_maps_and_partition_folders_are_typed_columns() {
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let kv = Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Float64, true),
                ]
                .into(),
            ),
            false,
        );
        let schema = Schema::new(vec![
            Field::new("b", DataType::Boolean, false),
            Field::new("amount", DataType::Decimal128(18, 2), false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new(
                "local",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("tags", DataType::List(item), true),
            Field::new("m", DataType::Map(Arc::new(kv), false), false),
            Field::new(
                "inner",
                DataType::Struct(vec![Field::new("x", DataType::Int32, false)].into()),
                true,
            ),
        ]);
        let d = schema_def("fp", "date={date}/hour={hour}", &schema).unwrap();
        assert_eq!(d.partition_columns, vec!["date", "hour"]);
        assert_eq!(d.features, vec!["timestampNtz"]);
        let v: Value = serde_json::from_str(&d.columns).unwrap();
        let ty = |n: &str| {
            v["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == n)
                .unwrap()["type"]
                .clone()
        };
        assert_eq!(ty("amount"), "decimal(18,2)");
        assert_eq!(ty("ts"), "timestamp");
        assert_eq!(ty("local"), "timestamp_ntz");
        assert_eq!(ty("tags")["elementType"], "long");
        assert_eq!(ty("m")["valueType"], "double");
        assert_eq!(ty("inner")["fields"][0]["type"], "integer");
        assert_eq!(ty("date"), "date");
        assert_eq!(ty("hour"), "integer");
        // A folder named like a column, or a type Delta has no name for, is refused.
        let clash = Schema::new(vec![Field::new("Date", DataType::Utf8, false)]);
        assert!(schema_def("fp", "date={date}", &clash).is_err());
        let ms = Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        )]);
        assert!(schema_def("fp", "{date}", &ms).is_err());
        assert!(schema_def("fp", "{year}/{month}", &Schema::empty())
            .unwrap()
            .partition_columns
            .is_empty());
    }
}
