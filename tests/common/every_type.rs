//! A schema with every type a schema file may use, its events as produced and the rows every
//! reader must return for them (tests/delta.rs, tests/iceberg.rs).

use serde_json::{json, Value};

use super::Fixture;

pub const SCHEMA: &str = r#"{
  "type": "record", "name": "every_type", "namespace": "sluice.test", "fields": [
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "y", "type": "bytes"},
    {"name": "ns", "type": ["null", "string"], "default": null},
    {"name": "arr", "type": {"type": "array", "items": "long"}},
    {"name": "m", "type": {"type": "map", "values": "double"}},
    {"name": "rec", "type": {"type": "record", "name": "inner", "fields": [{"name": "x", "type": "int"}, {"name": "tag", "type": ["null", "string"]}]}},
    {"name": "rec2", "type": ["null", "inner"], "default": null},
    {"name": "e", "type": {"type": "enum", "name": "status", "symbols": ["OK", "FAILED"]}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "tu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "lt", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "dt", "type": {"type": "int", "logicalType": "date"}},
    {"name": "amt", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
    {"name": "fx", "type": {"type": "fixed", "name": "f4", "size": 4}}
  ]}"#;

/// 2026-11-24T13:00:00Z in microseconds.
pub const BASE_US: i64 = 1_795_525_200_000_000;

/// Event `k` as produced (JSON), and the row every reader must return for it (canonical form of
/// tests/delta_reader.py --rows, without the source columns).
pub fn event(k: i64) -> (String, Value) {
    let ts_ms = BASE_US / 1000 + k * 60_123;
    let tu = BASE_US + k * 1_000_001;
    let iso = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string()
    };
    let ts_rfc = chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let ns = (k % 3 != 0).then(|| format!("n{k}"));
    let rec2 = (k % 2 == 0).then(|| json!({"x": -k, "tag": null}));
    let payload = json!({
        "b": k % 2 == 0, "i": k - 50, "l": k * 10_000_000_000, "f": k as f64 + 0.5,
        "d": k as f64 / 4.0, "s": format!("s-{k}"), "y": format!("{:04x}", k),
        "ns": ns, "arr": [k, k + 1], "m": {"a": k as f64, "b": 0.25},
        "rec": {"x": k, "tag": format!("t{k}")}, "rec2": rec2,
        "e": if k % 5 == 0 { "FAILED" } else { "OK" }, "ts": ts_rfc, "tu": tu, "lt": tu + 7,
        "dt": 20_416 + k, "amt": format!("{k}.25"), "fx": format!("{:08x}", k),
    });
    let date =
        chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(20_416 + k);
    let row = json!({
        "b": k % 2 == 0, "i": k - 50, "l": k * 10_000_000_000, "f": k as f64 + 0.5,
        "d": k as f64 / 4.0, "s": format!("s-{k}"), "y": format!("{:04x}", k),
        "ns": ns, "arr": [k, k + 1], "m": {"a": k as f64, "b": 0.25},
        "rec": {"x": k, "tag": format!("t{k}")}, "rec2": rec2,
        "e": if k % 5 == 0 { "FAILED" } else { "OK" }, "ts": iso(ts_ms * 1000), "tu": iso(tu), "lt": iso(tu + 7),
        "dt": date.to_string(), "amt": format!("{k}.25"), "fx": format!("{:08x}", k),
    });
    (payload.to_string(), row)
}

/// Makes the fixture's job load the every-type schema (written beside it; returns its path).
pub fn every_type_job(f: &mut Fixture) -> std::path::PathBuf {
    let schema = f.dir.path().join("every_type.avsc");
    std::fs::write(&schema, SCHEMA).unwrap();
    let job = f
        .job_file("table")
        .set("schema", "file", schema.display().to_string())
        .set("event_time", "field", "ts")
        .merge("[commit]\nmax_rows = 100\n");
    f.write("table", &job);
    schema
}

/// Rewrites the job's schema file (`every_type_job`'s) as [`SCHEMA`] with one more field, a
/// nullable string `note` (a compatible change).
pub fn widen_schema(schema: &std::path::Path) {
    let field = r#"{"name": "note", "type": ["null", "string"], "default": null},"#;
    let wider = SCHEMA.replacen(
        r#"{"name": "b""#,
        &format!("{field}\n    {{\"name\": \"b\""),
        1,
    );
    assert_ne!(wider, SCHEMA);
    std::fs::write(schema, wider).unwrap();
}

/// The payloads of events `ks` with `note` set to `note-<k>` (for the [`widen_schema`] schema).
pub fn noted_events(ks: std::ops::Range<i64>) -> Vec<String> {
    ks.map(|k| {
        let mut p: Value = serde_json::from_str(&event(k).0).unwrap();
        p["note"] = serde_json::json!(format!("note-{k}"));
        p.to_string()
    })
    .collect()
}
