//! The table's schema as an Iceberg schema: the Delta schema's columns (the layout's folder
//! columns too, which no data file holds: they are identity partitions, whose values engines
//! read from the manifests) with field ids that are kept by name across schema changes and
//! never reused, the `schema.name-mapping.default` that maps the
//! Parquet files' columns (written without field ids) to them, and the partition spec the
//! window gives.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::table::entry::SchemaDef;

/// An Iceberg schema (`{"type": "struct", "schema-id", "fields"}`) and what the projection
/// needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct IceSchema {
    pub json: Value,
}

impl IceSchema {
    pub fn id(&self) -> i32 {
        self.json["schema-id"].as_i64().unwrap_or(0) as i32
    }

    /// Every field id by its name path (`a.b`, list elements `a.element`, map `m.key`/`m.value`).
    pub fn ids(&self) -> BTreeMap<String, i32> {
        let mut out = BTreeMap::new();
        collect_ids(&self.json, "", &mut out);
        out
    }

    /// A top-level field's id and Iceberg type (a primitive type's name, or `None` for nested).
    pub fn top(&self, name: &str) -> Option<(i32, Option<String>)> {
        self.json["fields"].as_array()?.iter().find_map(|f| {
            (f["name"] == name).then(|| {
                (
                    f["id"].as_i64().unwrap_or(0) as i32,
                    f["type"].as_str().map(str::to_string),
                )
            })
        })
    }

    /// The fields without the `schema-id`: what tells two schemas apart.
    fn fields(&self) -> &Value {
        &self.json["fields"]
    }
}

fn collect_ids(ty: &Value, prefix: &str, out: &mut BTreeMap<String, i32>) {
    let join = |name: &str| match prefix {
        "" => name.to_string(),
        p => format!("{p}.{name}"),
    };
    match ty["type"].as_str() {
        Some("struct") => {
            for f in ty["fields"].as_array().into_iter().flatten() {
                let name = join(f["name"].as_str().unwrap_or_default());
                if let Some(id) = f["id"].as_i64() {
                    out.insert(name.clone(), id as i32);
                }
                collect_ids(&f["type"], &name, out);
            }
        }
        Some("list") => {
            let name = join("element");
            if let Some(id) = ty["element-id"].as_i64() {
                out.insert(name.clone(), id as i32);
            }
            collect_ids(&ty["element"], &name, out);
        }
        Some("map") => {
            for part in ["key", "value"] {
                let name = join(part);
                if let Some(id) = ty[format!("{part}-id")].as_i64() {
                    out.insert(name.clone(), id as i32);
                }
                collect_ids(&ty[part], &name, out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// Column names Iceberg engines reserve for metadata columns (Spark refuses to scan a table with
/// a column of one of these names).
const RESERVED: [&str; 7] = [
    "_file",
    "_pos",
    "_deleted",
    "_spec_id",
    "_partition",
    "_row_id",
    "_last_updated_sequence_number",
];

/// The Iceberg name of a top-level column: its own, but for names Iceberg reserves; sluice's
/// `_partition` (the Kafka partition) is `_kafka_partition`. The name mapping maps the data
/// files' column to it.
pub fn iceberg_name(name: &str) -> String {
    match name {
        "_partition" => "_kafka_partition".to_string(),
        n if RESERVED.contains(&n) => format!("{n}_"),
        n => n.to_string(),
    }
}

/// Assigns ids: a name path the previous schemas knew keeps its id, a new one takes the next
/// id after `last_id` (ids are never reused).
struct Ids<'a> {
    known: &'a BTreeMap<String, i32>,
    last_id: i32,
}

impl Ids<'_> {
    fn id(&mut self, path: &str) -> i32 {
        match self.known.get(path) {
            Some(&id) => id,
            None => {
                self.last_id += 1;
                self.last_id
            }
        }
    }
}

/// The Iceberg schema of `def`, with ids kept from `known` (every name
/// path of the table's earlier schemas) and new ids after `last_id`; returns the schema (its
/// `schema-id` to be set by the caller) and the new last column id.
pub fn iceberg_schema(
    def: &SchemaDef,
    known: &BTreeMap<String, i32>,
    last_id: i32,
) -> Result<(Value, i32), SchemaError> {
    let delta: Value = serde_json::from_str(&def.columns)
        .map_err(|e| SchemaError(format!("the table's schema is not JSON: {e}")))?;
    let mut ids = Ids { known, last_id };
    let mut fields = Vec::new();
    for f in delta["fields"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or_default();
        let mut f = f.clone();
        f["name"] = json!(iceberg_name(name));
        fields.push(field(&f, "", &mut ids)?);
    }
    Ok((
        json!({"type": "struct", "schema-id": 0, "fields": fields}),
        ids.last_id,
    ))
}

fn field(f: &Value, prefix: &str, ids: &mut Ids) -> Result<Value, SchemaError> {
    let name = f["name"].as_str().unwrap_or_default();
    let path = match prefix {
        "" => name.to_string(),
        p => format!("{p}.{name}"),
    };
    let id = ids.id(&path);
    let ty = ice_type(&f["type"], &path, ids)?;
    Ok(json!({
        "id": id,
        "name": name,
        "required": !f["nullable"].as_bool().unwrap_or(true),
        "type": ty,
    }))
}

/// The Iceberg type of a Delta type.
fn ice_type(t: &Value, path: &str, ids: &mut Ids) -> Result<Value, SchemaError> {
    if let Some(name) = t.as_str() {
        let prim = match name {
            "boolean" => "boolean",
            "byte" | "short" | "integer" => "int",
            "long" => "long",
            "float" => "float",
            "double" => "double",
            "string" => "string",
            "binary" => "binary",
            "date" => "date",
            "timestamp" => "timestamptz",
            "timestamp_ntz" => "timestamp",
            d if d.starts_with("decimal(") => {
                let inner = d.trim_start_matches("decimal(").trim_end_matches(')');
                let (p, s) = inner
                    .split_once(',')
                    .ok_or_else(|| SchemaError(format!("`{path}`: bad decimal type {d}")))?;
                return Ok(json!(format!("decimal({}, {})", p.trim(), s.trim())));
            }
            other => {
                return Err(SchemaError(format!(
                    "`{path}`: type {other} has no Iceberg type"
                )))
            }
        };
        return Ok(json!(prim));
    }
    match t["type"].as_str() {
        Some("struct") => {
            let fields = t["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| field(f, path, ids))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({"type": "struct", "fields": fields}))
        }
        Some("array") => {
            let elem = format!("{path}.element");
            let id = ids.id(&elem);
            Ok(json!({
                "type": "list",
                "element-id": id,
                "element": ice_type(&t["elementType"], &elem, ids)?,
                "element-required": !t["containsNull"].as_bool().unwrap_or(true),
            }))
        }
        Some("map") => {
            let (k, v) = (format!("{path}.key"), format!("{path}.value"));
            let key_id = ids.id(&k);
            let key = ice_type(&t["keyType"], &k, ids)?;
            let value_id = ids.id(&v);
            Ok(json!({
                "type": "map",
                "key-id": key_id,
                "key": key,
                "value-id": value_id,
                "value": ice_type(&t["valueType"], &v, ids)?,
                "value-required": !t["valueContainsNull"].as_bool().unwrap_or(true),
            }))
        }
        _ => Err(SchemaError(format!("`{path}`: unknown type {t}"))),
    }
}

/// Whether two schemas have the same fields (ids, names, types), whatever their schema ids.
pub fn same_fields(a: &IceSchema, b: &Value) -> bool {
    a.fields() == &b["fields"]
}

/// `schema.name-mapping.default`: the columns of every schema the table had (a data file may
/// hold a column a later schema dropped) by the names the Parquet files give them (sluice's
/// files carry no field ids); for an id in several schemas, the newest one's entry. A list's
/// element is `element` or `item` (Arrow's name), a map's entries `key` and `value`.
pub fn name_mapping(schemas: &[IceSchema]) -> String {
    let mut order: Vec<Value> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for s in schemas {
        let Value::Array(entries) =
            serde_json::from_str::<Value>(&schema_mapping(s)).unwrap_or(Value::Null)
        else {
            continue;
        };
        for e in entries {
            let id = e["field-id"].to_string();
            match at.get(&id) {
                Some(&i) => order[i] = e,
                None => {
                    at.insert(id, order.len());
                    order.push(e);
                }
            }
        }
    }
    Value::Array(order).to_string()
}

/// One schema's name mapping.
fn schema_mapping(schema: &IceSchema) -> String {
    fn fields(ty: &Value) -> Vec<Value> {
        match ty["type"].as_str() {
            Some("struct") => ty["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let mut names = vec![f["name"].clone()];
                    if f["name"] == "_kafka_partition" {
                        names.push(json!("_partition"));
                    } else if let Some(n) = f["name"].as_str().and_then(|n| n.strip_suffix('_')) {
                        if RESERVED.contains(&n) {
                            names.push(json!(n));
                        }
                    }
                    mapped(f["id"].clone(), names, &f["type"])
                })
                .collect(),
            Some("list") => vec![mapped(
                ty["element-id"].clone(),
                vec![json!("element"), json!("item")],
                &ty["element"],
            )],
            Some("map") => vec![
                mapped(ty["key-id"].clone(), vec![json!("key")], &ty["key"]),
                mapped(ty["value-id"].clone(), vec![json!("value")], &ty["value"]),
            ],
            _ => vec![],
        }
    }
    fn mapped(id: Value, names: Vec<Value>, ty: &Value) -> Value {
        let inner = fields(ty);
        if inner.is_empty() {
            json!({"field-id": id, "names": names})
        } else {
            json!({"field-id": id, "names": names, "fields": inner})
        }
    }
    Value::Array(fields(&schema.json)).to_string()
}

/// A partition transform sluice writes: a layout folder's value as it is (`identity`; the
/// data files do not hold the column, engines read its value from the manifests), or the
/// event-time column's hour or day, which every file of a window that fits in one hour (one
/// day) has a single value of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Identity,
    Hour,
    Day,
}

impl Transform {
    pub fn name(self) -> &'static str {
        match self {
            Transform::Identity => "identity",
            Transform::Hour => "hour",
            Transform::Day => "day",
        }
    }

    fn unit_ms(self) -> Option<i64> {
        match self {
            Transform::Identity => None,
            Transform::Hour => Some(3_600_000),
            Transform::Day => Some(86_400_000),
        }
    }

    /// The transform for windows of `window_ms`: hours when a window fits in an hour, days
    /// when it fits in a day, else none.
    pub fn for_window(window_ms: i64) -> Option<Transform> {
        [Transform::Hour, Transform::Day]
            .into_iter()
            .find(|t| window_ms > 0 && t.unit_ms().is_some_and(|u| u % window_ms == 0))
    }

    /// The hour or day of a file whose rows' event times lie in `[start_ms, end_ms)`, if they
    /// all have the same one.
    pub fn value(self, start_ms: i64, end_ms: i64) -> Option<i32> {
        let unit = self.unit_ms()?;
        let first = start_ms.div_euclid(unit);
        let last = (end_ms - 1).div_euclid(unit);
        (end_ms > start_ms && first == last)
            .then(|| i32::try_from(first).ok())
            .flatten()
    }
}

/// The type of a partition value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    Int,
    Date,
    Str,
}

impl PartType {
    /// The partition type of an Iceberg primitive type sluice partitions by identity.
    fn of(ty: &str) -> Option<PartType> {
        match ty {
            "int" => Some(PartType::Int),
            "date" => Some(PartType::Date),
            "string" => Some(PartType::Str),
            _ => None,
        }
    }

    /// A folder's value as a partition value of this type.
    pub fn parse(self, text: &str) -> Option<PartValue> {
        match self {
            PartType::Int => text.parse().ok().map(PartValue::Int),
            PartType::Date => {
                let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
                i32::try_from((d - epoch).num_days())
                    .ok()
                    .map(PartValue::Date)
            }
            PartType::Str => Some(PartValue::Str(text.to_string())),
        }
    }
}

/// A partition value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartValue {
    Int(i32),
    /// Days since 1970-01-01.
    Date(i32),
    Str(String),
}

impl PartValue {
    /// Iceberg's single-value serialization (the manifest list's bounds).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            PartValue::Int(v) | PartValue::Date(v) => v.to_le_bytes().to_vec(),
            PartValue::Str(s) => s.as_bytes().to_vec(),
        }
    }
}

/// A partition spec: its id and its fields (none: unpartitioned).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub id: i32,
    pub fields: Vec<SpecField>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpecField {
    pub source_id: i32,
    pub field_id: i32,
    pub name: String,
    pub transform: Transform,
    /// The type of its values.
    pub ty: PartType,
}

impl Spec {
    pub fn json(&self) -> Value {
        json!({"spec-id": self.id, "fields": self.fields_json()})
    }

    pub fn fields_json(&self) -> Value {
        Value::Array(
            self.fields
                .iter()
                .map(|f| {
                    json!({
                        "source-id": f.source_id,
                        "field-id": f.field_id,
                        "name": f.name,
                        "transform": f.transform.name(),
                    })
                })
                .collect(),
        )
    }

    /// Reads a spec of the metadata, `types` giving the Iceberg type of each top-level
    /// field id (`None`: a spec sluice does not write).
    pub fn parse(v: &Value, types: &BTreeMap<i32, String>) -> Option<Spec> {
        let id = v["spec-id"].as_i64()? as i32;
        let fields = v["fields"]
            .as_array()?
            .iter()
            .map(|f| {
                let source_id = f["source-id"].as_i64()? as i32;
                let transform = match f["transform"].as_str()? {
                    "identity" => Transform::Identity,
                    "hour" => Transform::Hour,
                    "day" => Transform::Day,
                    _ => return None,
                };
                let ty = match transform {
                    Transform::Identity => PartType::of(types.get(&source_id)?)?,
                    Transform::Hour => PartType::Int,
                    Transform::Day => PartType::Date,
                };
                Some(SpecField {
                    source_id,
                    field_id: f["field-id"].as_i64()? as i32,
                    name: f["name"].as_str()?.to_string(),
                    transform,
                    ty,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Spec { id, fields })
    }

    /// Whether the spec partitions by exactly these `(source id, transform)`s, in order.
    pub fn same_as(&self, wanted: &[(i32, Transform)]) -> bool {
        self.fields.len() == wanted.len()
            && self
                .fields
                .iter()
                .zip(wanted)
                .all(|(f, (id, t))| f.source_id == *id && f.transform == *t)
    }
}

/// The Iceberg type of every top-level field of every schema, by id.
pub fn top_types(schemas: &[Value]) -> BTreeMap<i32, String> {
    schemas
        .iter()
        .flat_map(|s| s["fields"].as_array().into_iter().flatten())
        .filter_map(|f| Some((f["id"].as_i64()? as i32, f["type"].as_str()?.to_string())))
        .collect()
}

/// `schema` with every field's Iceberg id as its `PARQUET:field_id` (what the Parquet writer
/// stores as the column's `field_id`), looked up by the field's name path in `ids` (the table's
/// [`known ids`](super::project::known_ids)); any metadata the fields had is dropped. `None`
/// when a path has no id yet (a column this commit adds): such a file is written without ids,
/// as a reader given ids for some columns reads the others as missing, and the name mapping
/// covers it. A path keeps its id forever, so ids known to any version are right for any later
/// one.
pub fn with_field_ids(
    schema: &arrow::datatypes::Schema,
    ids: &BTreeMap<String, i32>,
) -> Option<arrow::datatypes::Schema> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| id_field(f, &iceberg_name(f.name()), ids))
        .collect::<Option<Vec<_>>>()?;
    Some(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

fn id_field(
    f: &arrow::datatypes::Field,
    path: &str,
    ids: &BTreeMap<String, i32>,
) -> Option<arrow::datatypes::Field> {
    use arrow::datatypes::{DataType, Field, Fields};
    let id = *ids.get(path)?;
    let child = |name: &str| format!("{path}.{name}");
    let ty = match f.data_type() {
        DataType::Struct(children) => DataType::Struct(
            children
                .iter()
                .map(|c| id_field(c, &child(c.name()), ids))
                .collect::<Option<Fields>>()?,
        ),
        DataType::List(e) => DataType::List(id_field(e, &child("element"), ids)?.into()),
        DataType::LargeList(e) => DataType::LargeList(id_field(e, &child("element"), ids)?.into()),
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return None;
            };
            let [k, v] = kv.iter().collect::<Vec<_>>()[..] else {
                return None;
            };
            let kv = Fields::from(vec![
                id_field(k, &child("key"), ids)?,
                id_field(v, &child("value"), ids)?,
            ]);
            let entries = Field::new(entries.name(), DataType::Struct(kv), entries.is_nullable());
            DataType::Map(entries.into(), *sorted)
        }
        other => other.clone(),
    };
    let meta = [(
        parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_string(),
        id.to_string(),
    )];
    Some(
        Field::new(f.name(), ty, f.is_nullable()).with_metadata(
            meta.into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(columns: Value, parts: &[&str]) -> SchemaDef {
        SchemaDef {
            fingerprint: "fp".into(),
            layout: "date={date}/hour={hour}".into(),
            columns: columns.to_string(),
            partition_columns: parts.iter().map(|s| s.to_string()).collect(),
            features: vec![],
        }
    }

    fn col(name: &str, ty: Value, nullable: bool) -> Value {
        json!({"name": name, "type": ty, "nullable": nullable, "metadata": {}})
    }

    #[test]
    fn types_map_ids_are_kept_by_name_and_never_reused() {
        let v1 = def(
            json!({"type": "struct", "fields": [
                col("id", json!("string"), false),
                col("amount", json!("decimal(18,2)"), true),
                col("ts", json!("timestamp"), false),
                col("tags", json!({"type": "array", "elementType": "long", "containsNull": true}), true),
                col("m", json!({"type": "map", "keyType": "string", "valueType": "double", "valueContainsNull": false}), true),
                col("inner", json!({"type": "struct", "fields": [col("x", json!("integer"), true)]}), true),
                col("date", json!("date"), true),
                col("hour", json!("integer"), true),
            ]}),
            &["date", "hour"],
        );
        let (s1, last1) = iceberg_schema(&v1, &BTreeMap::new(), 0).unwrap();
        let s1 = IceSchema { json: s1 };
        let names: Vec<_> = s1.json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["id", "amount", "ts", "tags", "m", "inner", "date", "hour"]
        );
        assert_eq!(
            s1.top("amount").unwrap().1.as_deref(),
            Some("decimal(18, 2)")
        );
        assert_eq!(s1.top("ts").unwrap().1.as_deref(), Some("timestamptz"));
        assert_eq!(s1.json["fields"][0]["required"], true);
        let ids = s1.ids();
        assert_eq!(ids.len() as i32, last1);
        assert!(ids.contains_key("tags.element") && ids.contains_key("m.value"));
        assert!(ids.contains_key("inner.x"));
        // Drop `amount`, add `note`: kept ids stay, the new field takes a new id.
        let v2 = def(
            json!({"type": "struct", "fields": [
                col("id", json!("string"), false),
                col("note", json!("string"), true),
                col("ts", json!("timestamp"), false),
            ]}),
            &[],
        );
        let (s2, last2) = iceberg_schema(&v2, &ids, last1).unwrap();
        let s2 = IceSchema { json: s2 };
        assert_eq!(s2.top("id").unwrap().0, ids["id"]);
        assert_eq!(s2.top("ts").unwrap().0, ids["ts"]);
        assert_eq!(s2.top("note").unwrap().0, last1 + 1);
        assert_eq!(last2, last1 + 1);
        // The mapping of the table covers both schemas: files with `amount` still map it.
        let both = name_mapping(&[s1.clone(), s2.clone()]);
        let both: Value = serde_json::from_str(&both).unwrap();
        let names: Vec<&str> = both
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["names"][0].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"amount") && names.contains(&"note"),
            "{names:?}"
        );
        // The Kafka partition column is renamed, its file name mapped.
        let kp = def(
            json!({"type": "struct", "fields": [col("_partition", json!("integer"), false)]}),
            &[],
        );
        let (s3, _) = iceberg_schema(&kp, &BTreeMap::new(), 0).unwrap();
        let s3 = IceSchema { json: s3 };
        assert_eq!(s3.top("_kafka_partition").map(|t| t.0), Some(1));
        assert!(name_mapping(&[s3]).contains(r#"["_kafka_partition","_partition"]"#));
        let mapping: Value =
            serde_json::from_str(&name_mapping(std::slice::from_ref(&s1))).unwrap();
        assert_eq!(mapping[0]["names"][0], "id");
        assert_eq!(mapping[3]["fields"][0]["names"][1], "item");
    }

    #[test]
    fn a_window_gives_the_transform_every_file_has_one_value_of() {
        assert_eq!(Transform::for_window(900_000), Some(Transform::Hour));
        assert_eq!(Transform::for_window(3_600_000), Some(Transform::Hour));
        assert_eq!(Transform::for_window(6 * 3_600_000), Some(Transform::Day));
        assert_eq!(Transform::for_window(86_400_000), Some(Transform::Day));
        assert_eq!(Transform::for_window(2 * 86_400_000), None);
        let h = 3_600_000;
        assert_eq!(Transform::Hour.value(5 * h, 6 * h), Some(5));
        assert_eq!(Transform::Hour.value(5 * h, 6 * h + 1), None);
        assert_eq!(Transform::Hour.value(-h, 0), Some(-1));
        assert_eq!(Transform::Day.value(24 * h, 30 * h), Some(1));
        assert_eq!(Transform::Identity.value(0, h), None);
        assert_eq!(PartType::Date.parse("1970-01-03"), Some(PartValue::Date(2)));
        assert_eq!(PartType::Int.parse("07"), Some(PartValue::Int(7)));
        assert_eq!(PartType::Int.parse("x"), None);
        let types = BTreeMap::from([(3, "date".to_string()), (4, "string".to_string())]);
        let spec = json!({"spec-id": 2, "fields": [
            {"source-id": 3, "field-id": 1000, "name": "date", "transform": "identity"},
            {"source-id": 4, "field-id": 1001, "name": "region", "transform": "identity"},
            {"source-id": 5, "field-id": 1002, "name": "ts_hour", "transform": "hour"},
        ]});
        let parsed = Spec::parse(&spec, &types).unwrap();
        assert_eq!(
            parsed.fields.iter().map(|f| f.ty).collect::<Vec<_>>(),
            [PartType::Date, PartType::Str, PartType::Int]
        );
        assert!(parsed.same_as(&[
            (3, Transform::Identity),
            (4, Transform::Identity),
            (5, Transform::Hour)
        ]));
        assert_eq!(parsed.json(), spec);
        // A spec on a field of another type, or with another transform, is not sluice's.
        let bucket = json!({"spec-id": 3, "fields": [
            {"source-id": 3, "field-id": 1000, "name": "b", "transform": "bucket[4]"}]});
        assert!(Spec::parse(&bucket, &types).is_none());
    }
}
