//! Every type a schema file may use, loaded from a real broker and read back through the Delta
//! log by each independent reader (delta-rs, DuckDB's delta extension, polars): the Delta type
//! each engine sees, and every value, equal across engines and to what was produced.

mod common;

use common::every_type::{event, every_type_job, noted_events, widen_schema};
use common::*;
use serde_json::{json, Value};

#[test]
fn every_type_reads_alike_in_every_delta_reader() {
    const N: i64 = 300;
    let mut f = Fixture::new("types", 1);
    every_type_job(&mut f);
    let (payloads, want): (Vec<String>, Vec<Value>) = (0..N).map(event).unzip();
    produce_payloads(&f.topic, 0, &payloads);
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), N, "{stats}");
    assert_eq!(n(&stats, "dead_letters"), 0, "{stats}");
    f.assert_clean();

    let table = f.job_table_dir().display().to_string();
    let mut seen: Vec<(String, Vec<Value>)> = Vec::new();
    for engine in DELTA_ENGINES {
        let r = read_delta(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap().clone();
        assert_eq!(rows.len() as i64, N, "{engine}");
        for (k, (got, want)) in rows.iter().zip(&want).enumerate() {
            assert_eq!(got["_offset"], k as i64, "{engine}");
            assert_eq!(got["_partition"], 0, "{engine}");
            assert_eq!(got["_topic"], f.topic.as_str(), "{engine}");
            for (col, v) in want.as_object().unwrap() {
                assert_eq!(&got[col], v, "{engine}: column {col} of event {k}: {got}");
            }
        }
        seen.push((engine.to_string(), rows));
    }
    // The engines agree on every column, the source columns and partition columns included.
    for (engine, rows) in &seen[1..] {
        assert_eq!(rows, &seen[0].1, "{engine} and {} disagree", seen[0].0);
    }

    // The types each engine reports for the table's columns.
    let r = read_delta(&table, "duckdb", &[]);
    let cols = &r["columns"];
    for (col, ty) in [
        ("b", "BOOLEAN"),
        ("i", "INTEGER"),
        ("l", "BIGINT"),
        ("f", "FLOAT"),
        ("d", "DOUBLE"),
        ("s", "VARCHAR"),
        ("y", "BLOB"),
        ("e", "VARCHAR"),
        ("ts", "TIMESTAMP WITH TIME ZONE"),
        ("tu", "TIMESTAMP WITH TIME ZONE"),
        ("lt", "TIMESTAMP"),
        ("dt", "DATE"),
        ("amt", "DECIMAL(18,2)"),
        ("fx", "BLOB"),
        ("arr", "BIGINT[]"),
        ("m", "MAP(VARCHAR, DOUBLE)"),
        ("_offset", "BIGINT"),
        ("_partition", "INTEGER"),
        ("_kafka_timestamp", "TIMESTAMP WITH TIME ZONE"),
        ("date", "DATE"),
        ("hour", "INTEGER"),
    ] {
        assert_eq!(cols[col], ty, "duckdb type of {col}: {cols}");
    }
    let r = read_delta(&table, "deltalake", &[]);
    assert_eq!(
        r["partition_columns"],
        json!(["date", "hour"]),
        "{}",
        r["partition_columns"]
    );
    let cols = &r["columns"];
    for (col, ty) in [
        ("ts", "timestamp[us, tz=UTC]"),
        ("amt", "decimal128(18, 2)"),
        ("dt", "date32[day]"),
    ] {
        assert_eq!(cols[col], ty, "deltalake type of {col}: {cols}");
    }
}

/// The schema file gains a nullable field between two runs: the first Delta version after it
/// carries a new `metaData`, every reader sees the wider table (nulls in the rows loaded
/// before), and time travel to the version before still reads the narrower one.
#[test]
fn a_wider_schema_is_a_new_delta_metadata_and_readers_see_both_shapes() {
    let mut f = Fixture::new("widen", 1);
    let schema = every_type_job(&mut f);
    let (payloads, _): (Vec<String>, Vec<Value>) = (0..100).map(event).unzip();
    produce_payloads(&f.topic, 0, &payloads);
    assert_eq!(n(&f.run_once_ok(), "rows"), 100);
    let before = f.state().seq - 1;

    widen_schema(&schema);
    let payloads = noted_events(100..150);
    produce_payloads(&f.topic, 0, &payloads);
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 50, "{stats}");
    assert_eq!(n(&stats, "dead_letters"), 0, "{stats}");
    f.assert_clean();

    // The first version after the change says the new schema.
    let log = std::fs::read_to_string(
        f.job_table_dir()
            .join(format!("_delta_log/{:020}.json", before + 1)),
    )
    .unwrap();
    let meta = log
        .lines()
        .find(|l| l.starts_with(r#"{"metaData""#))
        .unwrap_or_else(|| panic!("no metaData in version {}: {log}", before + 1));
    assert!(meta.contains(r#"\"name\":\"note\""#), "{meta}");

    let table = f.job_table_dir().display().to_string();
    for engine in DELTA_ENGINES {
        let r = read_delta(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 150, "{engine}");
        for (k, row) in rows.iter().enumerate() {
            let want = if k < 100 {
                json!(null)
            } else {
                json!(format!("note-{k}"))
            };
            assert_eq!(row["note"], want, "{engine}: row {k}: {row}");
            assert_eq!(row["s"], format!("s-{k}"), "{engine}: row {k}");
        }
    }
    let old = read_delta(
        &table,
        "deltalake",
        &["--rows", "--version", &before.to_string()],
    );
    let rows = old["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 100);
    assert!(rows[0].get("note").is_none(), "{}", rows[0]);
}
