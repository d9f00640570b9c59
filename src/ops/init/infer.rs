//! A JSON sample's shape, and the Avro schema inferred from it (`sluice init`).
//!
//! Pure: [`Shape::observe`] counts what each place of the sample held (by kind), and
//! [`infer`] turns the counts into an Avro record and the reasons for each choice. No I/O;
//! the caller checks the schema against the sample with the loader's own decoder.

use std::collections::{BTreeSet, HashMap};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};

/// 2000-01-01 and 2100-01-01, as epoch seconds: integers between them may be times.
pub(super) const EPOCH_S: (i64, i64) = (946_684_800, 4_102_444_800);
/// The same in milliseconds.
pub(super) const EPOCH_MS: (i64, i64) = (EPOCH_S.0 * 1000, EPOCH_S.1 * 1000);
/// A time within this of its record's Kafka timestamp is near it.
pub(super) const NEAR_MS: i64 = 24 * 3600 * 1000;
/// An object with more distinct keys than this, none in most of the objects, is a map.
const MAP_KEYS: usize = 64;

/// A JSON value whose objects keep their keys in the order they were written (the schema's
/// fields follow the payload's order; `serde_json::Value` sorts them).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Fractions, exponents, and integers past i64.
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Json, E> {
                Ok(Json::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Json, E> {
                Ok(i64::try_from(u).map_or(Json::Float(u as f64), Json::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
                Ok(Json::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Json::Arr(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut out: Vec<(String, Json)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    // A repeated key: the last one counts, as for serde_json and arrow-json.
                    out.retain(|(old, _)| *old != k);
                    out.push((k, v));
                }
                Ok(Json::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Everything seen at one place of the sample (a field, an array's items), counted by kind.
#[derive(Debug, Default, Clone)]
pub struct Shape {
    nulls: u64,
    bools: u64,
    ints: u64,
    floats: u64,
    /// Integers in the epoch-milliseconds and epoch-seconds ranges.
    millis: u64,
    seconds: u64,
    /// Integers within a day of their record's Kafka timestamp, read as ms / as s.
    near_ms: u64,
    near_s: u64,
    strings: u64,
    /// Strings that are RFC 3339 timestamps / calendar dates (`YYYY-MM-DD`).
    times: u64,
    dates: u64,
    /// Strings that are decimal numbers (`12.34`, `-7`; no leading zeros, so codes such as
    /// zip codes stay strings), those with a fraction, and the most digits seen either side.
    decimals: u64,
    fractions: u64,
    int_digits: u32,
    scale: u32,
    object: Option<Box<Object>>,
    arrays: u64,
    items: Option<Box<Shape>>,
}

/// The fields of the objects seen at one place, in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct Object {
    /// Objects seen.
    count: u64,
    fields: Vec<(String, Shape)>,
    index: HashMap<String, usize>,
}

impl Object {
    /// Counts one JSON object of the sample; `kafka_ms` is its record's Kafka timestamp.
    pub fn observe(&mut self, o: &[(String, Json)], kafka_ms: Option<i64>) {
        self.count += 1;
        for (k, v) in o {
            let at = match self.index.get(k) {
                Some(&i) => i,
                None => {
                    self.index.insert(k.clone(), self.fields.len());
                    self.fields.push((k.clone(), Shape::default()));
                    self.fields.len() - 1
                }
            };
            if let Some((_, shape)) = self.fields.get_mut(at) {
                shape.observe(v, kafka_ms);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl Shape {
    /// Counts one value.
    pub fn observe(&mut self, v: &Json, kafka_ms: Option<i64>) {
        match v {
            Json::Null => self.nulls += 1,
            Json::Bool(_) => self.bools += 1,
            &Json::Int(i) => {
                self.ints += 1;
                let within = |(lo, hi): (i64, i64)| (lo..hi).contains(&i);
                if within(EPOCH_MS) {
                    self.millis += 1;
                }
                if within(EPOCH_S) {
                    self.seconds += 1;
                }
                if let Some(k) = kafka_ms {
                    if (i.saturating_sub(k)).abs() <= NEAR_MS {
                        self.near_ms += 1;
                    }
                    if (i.saturating_mul(1000).saturating_sub(k)).abs() <= NEAR_MS {
                        self.near_s += 1;
                    }
                }
            }
            Json::Float(_) => self.floats += 1,
            Json::Str(s) => {
                self.strings += 1;
                if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                    self.times += 1;
                } else if s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                {
                    self.dates += 1;
                } else if let Some((int, frac)) = decimal_digits(s) {
                    self.decimals += 1;
                    self.fractions += u64::from(frac > 0);
                    self.int_digits = self.int_digits.max(int);
                    self.scale = self.scale.max(frac);
                }
            }
            Json::Arr(items) => {
                self.arrays += 1;
                let shape = self.items.get_or_insert_with(Box::default);
                for item in items {
                    shape.observe(item, kafka_ms);
                }
            }
            Json::Obj(o) => self
                .object
                .get_or_insert_with(Box::default)
                .observe(o, kafka_ms),
        }
    }

    fn objects(&self) -> u64 {
        self.object.as_ref().map_or(0, |o| o.count)
    }

    /// Values seen here, nulls included.
    fn seen(&self) -> u64 {
        self.nulls
            + self.bools
            + self.ints
            + self.floats
            + self.strings
            + self.arrays
            + self.objects()
    }
}

/// One choice made, for the report: a field's path, its type, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub path: String,
    pub ty: String,
    pub why: String,
}

/// The inferred schema and what was decided on the way.
#[derive(Debug, Clone)]
pub struct Inferred {
    /// The Avro record (`.avsc` JSON).
    pub avsc: Value,
    /// One line per field, nested ones included, in schema order.
    pub choices: Vec<Choice>,
    /// Keys left out of the schema, with why.
    pub skipped: Vec<String>,
}

impl Inferred {
    /// A line per field (path, type, why, in aligned columns), then the keys left out.
    pub fn report(&self) -> Vec<String> {
        let width = self.choices.iter().map(|c| c.path.len()).max().unwrap_or(0);
        let tyw = self.choices.iter().map(|c| c.ty.len()).max().unwrap_or(0);
        let fields = self.choices.iter().map(|c| {
            format!("  {:width$}  {:tyw$}  {}", c.path, c.ty, c.why)
                .trim_end()
                .to_string()
        });
        let skipped = self.skipped.iter().map(|s| format!("  left out: {s}"));
        fields.chain(skipped).collect()
    }
}

/// Column names sluice adds to every row; a payload key may not take them.
const RESERVED: [&str; 4] = ["_topic", "_partition", "_offset", "_kafka_timestamp"];

/// The Avro record named `name` that the objects of `root` fit.
pub fn infer(name: &str, root: &Object) -> Inferred {
    let mut cx = Cx {
        names: BTreeSet::new(),
        choices: Vec::new(),
        skipped: Vec::new(),
    };
    let name = avro_name(name);
    cx.names.insert(name.clone());
    let fields = cx.record_fields(root, "", &name);
    Inferred {
        avsc: json!({
            "type": "record",
            "name": name,
            "doc": format!("Inferred by `sluice init` from {} sampled records.", root.count),
            "fields": fields,
        }),
        choices: cx.choices,
        skipped: cx.skipped,
    }
}

struct Cx {
    /// Named types given out so far (Avro names must be unique).
    names: BTreeSet<String>,
    choices: Vec<Choice>,
    skipped: Vec<String>,
}

/// `s` made a valid Avro name: letters, digits and `_`, not starting with a digit.
pub fn avro_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether a field's name says it holds a time.
pub fn time_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with("_at")
        || n.ends_with("_ts")
        || n.ends_with("_time")
        || n.ends_with("time")
        || n.ends_with("timestamp")
        || n.ends_with("_ms")
        || n.starts_with("ts")
        || n.contains("date")
        || n.contains("epoch")
}

/// A share in words: `37 of 1000`.
fn of(n: u64, total: u64) -> String {
    format!("{n} of {total}")
}

impl Cx {
    fn unique_name(&mut self, wanted: &str) -> String {
        let base = avro_name(wanted);
        let mut name = base.clone();
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// The Avro fields of the objects seen at `at` (a path, empty at the top).
    fn record_fields(&mut self, obj: &Object, at: &str, record: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut lower = BTreeSet::new();
        for (key, shape) in &obj.fields {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            if !valid_name(key) {
                self.skipped.push(format!(
                    "`{path}`: not a valid Avro name (letters, digits, `_`; not starting with a digit); left out, and the loader ignores it"
                ));
                continue;
            }
            if at.is_empty() && RESERVED.contains(&key.as_str()) {
                self.skipped.push(format!(
                    "`{path}`: sluice adds a column of that name to every row; left out"
                ));
                continue;
            }
            if !lower.insert(key.to_ascii_lowercase()) {
                self.skipped.push(format!(
                    "`{path}`: differs only in case from another key, which most readers cannot tell apart; left out"
                ));
                continue;
            }
            let present = shape.seen();
            let absent = obj.count.saturating_sub(present);
            // This field's line goes before those of the fields nested in it.
            let line = self.choices.len();
            self.choices.push(Choice {
                path: path.clone(),
                ty: String::new(),
                why: String::new(),
            });
            let (ty, why) = self.avro_type(shape, &path, &format!("{record}_{key}"), key);
            let mut reasons = vec![why];
            let ty = value_type(ty, shape.nulls > 0 || absent > 0);
            let nullable = ty.is_array();
            if shape.nulls > 0 {
                reasons.push(format!("null in {}", of(shape.nulls, obj.count)));
            }
            if absent > 0 {
                reasons.push(format!("absent from {}", of(absent, obj.count)));
            }
            let shown = describe(&ty);
            let field = if nullable {
                json!({"name": key, "type": ty, "default": null})
            } else {
                json!({"name": key, "type": ty})
            };
            let choice = Choice {
                path: path.clone(),
                ty: if nullable {
                    format!("{shown}, nullable")
                } else {
                    shown
                },
                why: reasons
                    .into_iter()
                    .filter(|r| !r.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            if let Some(slot) = self.choices.get_mut(line) {
                *slot = choice;
            }
            out.push(field);
        }
        out
    }

    /// The Avro type of the values seen at `path` (`"null"` when only nulls were), and why.
    fn avro_type(&mut self, s: &Shape, path: &str, record: &str, key: &str) -> (Value, String) {
        let numbers = s.ints + s.floats;
        let kinds = [
            ("string", s.strings),
            ("number", numbers),
            ("boolean", s.bools),
            ("object", s.objects()),
            ("array", s.arrays),
        ];
        let seen: Vec<(&str, u64)> = kinds.iter().copied().filter(|(_, n)| *n > 0).collect();
        let Some(&(kind, n)) = seen.iter().max_by_key(|(_, n)| *n) else {
            return (
                json!("null"),
                "only null in the sample: typed string".to_string(),
            );
        };
        let mixed = if seen.len() > 1 {
            let others: Vec<String> = seen
                .iter()
                .filter(|(k, _)| *k != kind)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            format!(
                "; mixed: {n} {kind} and {}, records with the others are refused",
                others.join(", ")
            )
        } else {
            String::new()
        };
        let (ty, why) = match kind {
            "string" if s.times == s.strings => (
                json!({"type": "long", "logicalType": "timestamp-micros"}),
                "RFC 3339 timestamps".to_string(),
            ),
            "string" if s.dates == s.strings => (
                json!({"type": "int", "logicalType": "date"}),
                "calendar dates (YYYY-MM-DD)".to_string(),
            ),
            "string"
                if s.decimals == s.strings && s.fractions > 0 && s.int_digits + s.scale <= 38 =>
            {
                // Room for larger amounts than the sample's: 18 digits fit a 64-bit integer.
                let precision = (s.int_digits + s.scale).max(18).max(s.scale + 10).min(38);
                (
                    json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": s.scale}),
                    format!("decimal strings, up to {} decimal places", s.scale),
                )
            }
            "string" => (json!("string"), String::new()),
            "boolean" => (json!("boolean"), String::new()),
            "number" if s.floats > 0 => (
                json!("double"),
                if s.ints > 0 {
                    "integers and fractions".to_string()
                } else {
                    String::new()
                },
            ),
            "number" => {
                let named = time_name(key);
                let mostly = |near: u64| near * 10 >= s.ints * 9;
                if s.millis == s.ints && (named || mostly(s.near_ms)) {
                    (
                        json!({"type": "long", "logicalType": "timestamp-millis"}),
                        format!(
                            "epoch milliseconds ({})",
                            if named {
                                "by its name and range"
                            } else {
                                "near each record's Kafka timestamp"
                            }
                        ),
                    )
                } else if s.seconds == s.ints && (named || mostly(s.near_s)) {
                    (
                        json!("long"),
                        "epoch seconds (kept as a number: usable as event_time with format epoch_seconds)".to_string(),
                    )
                } else {
                    (json!("long"), String::new())
                }
            }
            "object" => match &s.object {
                Some(obj) if is_map(obj) => {
                    let mut values = Shape::default();
                    for (_, v) in &obj.fields {
                        values.merge(v);
                    }
                    let (vt, _) = self.avro_type(&values, &format!("{path}{{}}"), record, key);
                    let vt = value_type(vt, values.nulls > 0);
                    (
                        json!({"type": "map", "values": vt}),
                        format!(
                            "{} distinct keys, none in most objects: a map",
                            obj.fields.len()
                        ),
                    )
                }
                Some(obj) => {
                    let name = self.unique_name(record);
                    let fields = self.record_fields(obj, path, &name);
                    (
                        json!({"type": "record", "name": name, "fields": fields}),
                        String::new(),
                    )
                }
                None => (json!("string"), String::new()),
            },
            _ => {
                // Arrays: one item type for every element seen.
                match &s.items {
                    Some(items) if items.seen() > 0 => {
                        let (it, why) = self.avro_type(
                            items,
                            &format!("{path}[]"),
                            &format!("{record}_item"),
                            key,
                        );
                        let it = value_type(it, items.nulls > 0);
                        let why = if why.is_empty() {
                            String::new()
                        } else {
                            format!("items: {why}")
                        };
                        (json!({"type": "array", "items": it}), why)
                    }
                    _ => (
                        json!({"type": "array", "items": "string"}),
                        "only empty arrays in the sample: items typed string".to_string(),
                    ),
                }
            }
        };
        (
            ty,
            format!("{why}{mixed}").trim_start_matches("; ").to_string(),
        )
    }
}

impl Shape {
    /// Adds `other`'s counts to this one (a map's values, taken together).
    fn merge(&mut self, other: &Shape) {
        self.nulls += other.nulls;
        self.bools += other.bools;
        self.ints += other.ints;
        self.floats += other.floats;
        self.millis += other.millis;
        self.seconds += other.seconds;
        self.near_ms += other.near_ms;
        self.near_s += other.near_s;
        self.strings += other.strings;
        self.times += other.times;
        self.dates += other.dates;
        self.decimals += other.decimals;
        self.fractions += other.fractions;
        self.int_digits = self.int_digits.max(other.int_digits);
        self.scale = self.scale.max(other.scale);
        self.arrays += other.arrays;
        if let Some(o) = &other.object {
            let mine = self.object.get_or_insert_with(Box::default);
            mine.count += o.count;
            for (k, v) in &o.fields {
                match mine.index.get(k) {
                    Some(&i) => {
                        if let Some((_, s)) = mine.fields.get_mut(i) {
                            s.merge(v);
                        }
                    }
                    None => {
                        mine.index.insert(k.clone(), mine.fields.len());
                        mine.fields.push((k.clone(), v.clone()));
                    }
                }
            }
        }
        if let Some(i) = &other.items {
            self.items.get_or_insert_with(Box::default).merge(i);
        }
    }
}

/// The digits before and after the point of a plain decimal string (`-12.345` → (2, 3)); `None`
/// for anything else, and for leading zeros (`007`, a code rather than an amount).
fn decimal_digits(s: &str) -> Option<(u32, u32)> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    if body.contains('.') && !digits(frac) {
        return None;
    }
    Some((
        u32::try_from(int.len()).ok()?,
        u32::try_from(frac.len()).ok()?,
    ))
}

/// A place's Avro type: one only ever null in the sample is typed string, and one that may be
/// null is `["null", T]`.
fn value_type(ty: Value, may_be_null: bool) -> Value {
    let only_null = ty == json!("null");
    let ty = if only_null { json!("string") } else { ty };
    if may_be_null || only_null {
        json!(["null", ty])
    } else {
        ty
    }
}

/// Objects keyed by data rather than by a fixed set of names.
fn is_map(obj: &Object) -> bool {
    obj.fields.len() > MAP_KEYS && obj.fields.iter().all(|(_, s)| s.seen() * 2 < obj.count)
}

/// An Avro schema as text, keys in the order people write them (`type`, `name`, …, `fields`
/// last), and each field on a line of its own when it fits.
pub fn avsc_text(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, 0, false, &mut out);
    out.push('\n');
    out
}

const KEY_ORDER: [&str; 11] = [
    "type",
    "name",
    "namespace",
    "doc",
    "logicalType",
    "precision",
    "scale",
    "items",
    "values",
    "default",
    "fields",
];
/// A record's field: its name first.
const FIELD_ORDER: [&str; 4] = ["name", "type", "default", "doc"];

/// `field`: `v` is a record's field (an item of `fields`).
fn write_value(v: &Value, indent: usize, field: bool, out: &mut String) {
    let compact = compact(v, field);
    if compact.len() + indent <= 100 {
        out.push_str(&compact);
        return;
    }
    let pad = "  ".repeat(indent + 1);
    match v {
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad);
                write_value(item, indent + 1, field, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&"  ".repeat(indent));
            out.push(']');
        }
        Value::Object(o) => {
            out.push_str("{\n");
            let keys = ordered_keys(o, field);
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&pad);
                out.push_str(&Value::String((*k).to_string()).to_string());
                out.push_str(": ");
                if let Some(v) = o.get(*k) {
                    write_value(v, indent + 1, *k == "fields", out);
                }
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn ordered_keys(o: &serde_json::Map<String, Value>, field: bool) -> Vec<&str> {
    let order: &[&str] = if field { &FIELD_ORDER } else { &KEY_ORDER };
    let rank = |k: &str| order.iter().position(|x| *x == k).unwrap_or(order.len());
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_by_key(|k| rank(k));
    keys
}

/// One line, keys ordered.
fn compact(v: &Value, field: bool) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| compact(i, field))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            ordered_keys(o, field)
                .iter()
                .map(|k| format!(
                    "{}: {}",
                    Value::String((*k).to_string()),
                    o.get(*k)
                        .map(|v| compact(v, *k == "fields"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A short description of an Avro type, for the report.
pub fn describe(ty: &Value) -> String {
    match ty {
        Value::String(s) => s.clone(),
        Value::Array(branches) => branches
            .iter()
            .filter(|b| *b != "null")
            .map(describe)
            .collect::<Vec<_>>()
            .join("|"),
        Value::Object(o) => {
            match (
                o.get("logicalType").and_then(Value::as_str),
                o.get("precision"),
                o.get("scale"),
            ) {
                (Some("decimal"), Some(p), Some(s)) => return format!("decimal({p},{s})"),
                (Some(l), _, _) => return l.to_string(),
                _ => {}
            }
            match o.get("type").and_then(Value::as_str) {
                Some("record") => format!(
                    "record {}",
                    o.get("name").and_then(Value::as_str).unwrap_or("?")
                ),
                Some("array") => format!(
                    "array<{}>",
                    describe(o.get("items").unwrap_or(&Value::Null))
                ),
                Some("map") => {
                    format!("map<{}>", describe(o.get("values").unwrap_or(&Value::Null)))
                }
                Some(t) => t.to_string(),
                None => "?".to_string(),
            }
        }
        _ => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer_from(values: &[Value], kafka_ms: Option<i64>) -> Inferred {
        let mut root = Object::default();
        for v in values {
            if let Ok(Json::Obj(o)) = serde_json::from_str::<Json>(&v.to_string()) {
                root.observe(&o, kafka_ms);
            }
        }
        infer("t", &root)
    }

    #[test]
    fn fields_keep_the_payload_order_and_print_readably() {
        let Ok(Json::Obj(o)) =
            serde_json::from_str::<Json>(r#"{"z": 1, "a": "x", "m": {"y": true, "b": null}}"#)
        else {
            panic!("not an object")
        };
        let mut root = Object::default();
        root.observe(&o, None);
        let i = infer("t", &root);
        let names: Vec<&str> = i.avsc["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .collect();
        assert_eq!(names, ["z", "a", "m"]);
        let text = avsc_text(&i.avsc);
        assert!(
            text.starts_with("{\n  \"type\": \"record\",\n  \"name\": \"t\""),
            "{text}"
        );
        assert!(
            text.contains("{\"name\": \"z\", \"type\": \"long\"}"),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&text).ok().as_ref(),
            Some(&i.avsc)
        );
    }

    fn field<'a>(i: &'a Inferred, name: &str) -> &'a Value {
        i.avsc["fields"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .map(|f| &f["type"])
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn types_nullability_and_times() {
        let i = infer_from(
            &[
                json!({"id": "a", "n": 1, "x": 1.5, "ok": true, "at": "2026-11-24T13:00:00Z", "d": "2026-11-24", "opt": null, "amount": "12.34", "zip": "01234"}),
                json!({"id": "b", "n": 2, "x": 2, "ok": false, "at": "2026-11-24T13:00:01.5+02:00", "d": "2026-11-25", "opt": "y", "later": 3, "amount": "-7", "zip": "12.5"}),
            ],
            None,
        );
        assert_eq!(field(&i, "id"), &json!("string"));
        assert_eq!(field(&i, "n"), &json!("long"));
        assert_eq!(field(&i, "x"), &json!("double"));
        assert_eq!(field(&i, "ok"), &json!("boolean"));
        assert_eq!(
            field(&i, "at"),
            &json!({"type": "long", "logicalType": "timestamp-micros"})
        );
        assert_eq!(
            field(&i, "d"),
            &json!({"type": "int", "logicalType": "date"})
        );
        assert_eq!(field(&i, "opt"), &json!(["null", "string"]));
        assert_eq!(
            field(&i, "amount"),
            &json!({"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2})
        );
        assert_eq!(field(&i, "zip"), &json!("string"), "leading zeros: a code");
        assert_eq!(field(&i, "later"), &json!(["null", "long"]));
        let later = i.choices.iter().find(|c| c.path == "later");
        assert!(
            later.is_some_and(|c| c.why.contains("absent from 1 of 2")),
            "{:?}",
            i.choices
        );
    }

    #[test]
    fn epoch_numbers_by_name_or_nearness() {
        let k = 1_764_000_000_000;
        let i = infer_from(
            &[
                json!({"measured_at": k, "seq": k, "created": k / 1000, "count": 1_800_000_000}),
                json!({"measured_at": k + 5, "seq": k + 9, "created": k / 1000 + 1, "count": 1_800_000_001}),
            ],
            Some(k),
        );
        let millis = json!({"type": "long", "logicalType": "timestamp-millis"});
        assert_eq!(field(&i, "measured_at"), &millis, "by name");
        assert_eq!(field(&i, "seq"), &millis, "near the Kafka timestamp");
        assert_eq!(field(&i, "created"), &json!("long"));
        assert!(i
            .choices
            .iter()
            .any(|c| c.path == "created" && c.why.contains("epoch seconds")));
        assert!(i
            .choices
            .iter()
            .any(|c| c.path == "count" && c.why.is_empty()));
    }

    #[test]
    fn nested_records_arrays_and_maps() {
        let mut values = Vec::new();
        for n in 0..100 {
            let mut attrs = serde_json::Map::new();
            attrs.insert(format!("k{n}"), json!(n));
            values.push(json!({
                "m": {"id": n, "addr": {"city": "x"}},
                "tags": ["a", "b"],
                "items": [{"sku": "s", "qty": 1}],
                "empty": [],
                "attrs": attrs,
                "bad-key": 1,
                "_offset": 3,
            }));
        }
        let i = infer_from(&values, None);
        let m = field(&i, "m");
        assert_eq!(m["type"], "record");
        let addr = m["fields"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == "addr"));
        assert_eq!(addr.map(|f| &f["type"]["type"]), Some(&json!("record")));
        assert_eq!(
            field(&i, "tags"),
            &json!({"type": "array", "items": "string"})
        );
        assert_eq!(field(&i, "items")["items"]["type"], "record");
        assert_eq!(
            field(&i, "empty"),
            &json!({"type": "array", "items": "string"})
        );
        assert_eq!(
            field(&i, "attrs"),
            &json!({"type": "map", "values": "long"})
        );
        assert_eq!(field(&i, "bad-key"), &Value::Null);
        assert_eq!(field(&i, "_offset"), &Value::Null);
        assert_eq!(i.skipped.len(), 2, "{:?}", i.skipped);
        // Every named type is unique, and the schema parses as sluice reads schemas.
        let text = i.avsc.to_string();
        assert!(
            crate::record::schema::TableSchema::parse(&text).is_ok(),
            "{text}"
        );
    }

    #[test]
    fn mixed_kinds_take_the_majority_and_say_so() {
        let i = infer_from(
            &[json!({"v": "a"}), json!({"v": "b"}), json!({"v": 3})],
            None,
        );
        assert_eq!(field(&i, "v"), &json!("string"));
        assert!(
            i.choices[0].why.contains("mixed: 2 string and 1 number"),
            "{:?}",
            i.choices
        );
    }
}
