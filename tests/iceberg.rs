//! The Iceberg projection read by independent engines (pyiceberg, DuckDB's iceberg extension,
//! Spark with the Iceberg runtime), and Spark reading the Delta log of the same table: every
//! type value for value, partition pruning in each engine's own file list, time travel to
//! every snapshot, a schema change, and `verify` naming a version another engine wrote.

mod common;

use common::every_type::{event, every_type_job, noted_events, widen_schema, BASE_US};
use common::*;
use serde_json::{json, Value};

const ENGINES: [&str; 3] = ["pyiceberg", "duckdb", "spark"];
const HOUR_US: i64 = 3_600_000_000;

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

#[test]
fn every_type_reads_alike_in_every_iceberg_reader_and_spark_reads_the_delta_log_too() {
    const N: i64 = 300;
    let mut f = Fixture::new("ice-types", 1);
    every_type_job(&mut f);
    let (payloads, want): (Vec<String>, Vec<Value>) = (0..N).map(event).unzip();
    // Two runs: the first one's files carry no field ids (there is no Iceberg schema yet, the
    // name mapping reads them), the second one's carry them; readers read both alike.
    let half = payloads.len() / 2;
    produce_payloads(&f.topic, 0, &payloads[..half]);
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), half as i64, "{stats}");
    produce_payloads(&f.topic, 0, &payloads[half..]);
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), N - half as i64, "{stats}");
    f.assert_clean();
    let ids = field_ids(&f);
    assert!(
        ids.iter()
            .any(|(_, i)| i.get("m").is_some() && i.get("_partition").is_some())
            && ids
                .iter()
                .any(|(_, i)| i.as_object().is_some_and(|o| o.is_empty())),
        "files with field ids and without: {ids:?}"
    );
    f.assert_spark_reads_both();

    let table = f.job_table_dir().display().to_string();
    // The Kafka partition is `_kafka_partition` in Iceberg (engines reserve `_partition`).
    let check = |engine: &str, partition: &str, rows: &[Value]| {
        assert_eq!(rows.len() as i64, N, "{engine}");
        for (k, (got, want)) in rows.iter().zip(&want).enumerate() {
            assert_eq!(got["_offset"], k as i64, "{engine}");
            assert_eq!(got[partition], 0, "{engine}: {got}");
            assert_eq!(got["_topic"], f.topic.as_str(), "{engine}");
            for (col, v) in want.as_object().unwrap() {
                assert_eq!(&got[col], v, "{engine}: column {col} of event {k}: {got}");
            }
            // The layout's folder columns: the window of the event time.
            let ts = want["ts"].as_str().unwrap();
            assert_eq!(got["date"], &ts[..10], "{engine}: {got}");
            assert_eq!(
                got["hour"],
                ts[11..13].parse::<i64>().unwrap(),
                "{engine}: {got}"
            );
        }
    };
    let mut seen: Vec<(String, Vec<Value>)> = Vec::new();
    for engine in ENGINES {
        let r = read_iceberg(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap().clone();
        check(engine, "_kafka_partition", &rows);
        seen.push((engine.to_string(), rows));
    }
    // The engines agree on every column, the source columns included.
    for (engine, rows) in &seen[1..] {
        assert_eq!(rows, &seen[0].1, "{engine} and {} disagree", seen[0].0);
    }
    // Spark on the Delta log of the same table: the same values.
    let r = read_delta(&table, "spark", &["--rows"]);
    check(
        "spark on Delta",
        "_partition",
        r["rows"].as_array().unwrap(),
    );

    // The Iceberg types pyiceberg reads, and the types Spark reports.
    let r = read_iceberg(&table, "pyiceberg", &[]);
    for (col, ty) in [
        ("ts", "timestamptz"),
        ("lt", "timestamp"),
        ("amt", "decimal(18, 2)"),
        ("dt", "date"),
        ("i", "int"),
        ("e", "string"),
        ("m", "map<string, double>"),
        ("_kafka_partition", "int"),
    ] {
        assert_eq!(
            r["columns"][col], ty,
            "pyiceberg type of {col}: {}",
            r["columns"]
        );
    }
    // The layout's folders are columns too (identity partitions: their values come from the
    // manifests, as every reader agreed above).
    assert_eq!(r["columns"]["date"], "date", "{}", r["columns"]);
    assert_eq!(r["columns"]["hour"], "int", "{}", r["columns"]);
    let r = read_iceberg(&table, "spark", &[]);
    for (col, ty) in [
        ("ts", "timestamp"),
        ("lt", "timestamp_ntz"),
        ("amt", "decimal(18,2)"),
        ("m", "map<string,double>"),
    ] {
        assert_eq!(
            r["columns"][col], ty,
            "Spark type of {col}: {}",
            r["columns"]
        );
    }
}

#[test]
fn an_hour_of_event_time_is_pruned_to_its_files_and_every_snapshot_reads_as_its_entry() {
    const N: i64 = 300;
    let mut f = Fixture::new("ice-prune", 1);
    every_type_job(&mut f);
    // Five commits (max_rows = 100 in every_type_job: a commit every 100 rows, 3 runs).
    let (payloads, want): (Vec<String>, Vec<Value>) = (0..N).map(event).unzip();
    for chunk in payloads.chunks(120) {
        produce_payloads(&f.topic, 0, chunk);
        f.run_once_ok();
    }
    f.assert_clean();
    let table = f.job_table_dir().display().to_string();
    let state = f.state();

    // The second hour of event time: the files of that window, and its rows.
    let hour = BASE_US / HOUR_US + 1;
    let (from, to) = (hour * HOUR_US, (hour + 1) * HOUR_US);
    let mut files: Vec<String> = state
        .files
        .iter()
        .filter(|x| x.window_start_ms * 1000 == from)
        .map(|x| x.path.clone())
        .collect();
    files.sort();
    assert!(!files.is_empty() && files.len() < state.files.len());
    let rows_in_hour = want
        .iter()
        .filter(|r| {
            let ts = chrono::NaiveDateTime::parse_from_str(
                r["ts"].as_str().unwrap(),
                "%Y-%m-%dT%H:%M:%S%.6f",
            )
            .unwrap()
            .and_utc()
            .timestamp_micros();
            (from..to).contains(&ts)
        })
        .count() as i64;
    let pred = format!("ts >= '{}' AND ts < '{}'", rfc3339(from), rfc3339(to));
    // Each engine's own list of the files its scan reads (pyiceberg's planned files, DuckDB's
    // file-system log, Spark's planned tasks) is that window's; the same hour asked by the
    // layout's folders, as a Delta reader would, too.
    let folders = format!("date = '2026-11-24' AND hour = {}", hour % 24);
    for engine in ENGINES {
        for pred in [&pred, &folders] {
            let r = read_iceberg(&table, engine, &["--where", pred]);
            assert_eq!(n(&r, "rows"), rows_in_hour, "{engine} {pred}: {r}");
            assert_eq!(
                r["files"],
                json!(files),
                "{engine} {pred} read other files: {r}"
            );
        }
    }

    // Time travel: every kept snapshot is the table after the entry it names, file for file.
    let states = f.states();
    let snapshots = f.iceberg_snapshots();
    assert_eq!(snapshots.len(), states.len(), "a snapshot per entry");
    for (seq, id) in snapshots {
        let s = &states[seq as usize - 1];
        let mut want: Vec<String> = s.files.iter().map(|x| x.path.clone()).collect();
        want.sort();
        for engine in ["pyiceberg", "duckdb"] {
            let r = read_iceberg(&table, engine, &["--snapshot", &id.to_string()]);
            assert_eq!(
                n(&r, "rows") as u64,
                committed_rows(s),
                "{engine} at entry {seq}: {r}"
            );
            assert_eq!(
                n(&r, "distinct_offsets") as u64,
                committed_rows(s),
                "{engine}: {r}"
            );
            if !r["files"].is_null() {
                assert_eq!(r["files"], json!(want), "{engine} at entry {seq}");
            }
        }
    }
}

/// The schema file gains a nullable field: the next snapshot has a schema with a new field id,
/// every reader sees the wider table (nulls before), and the earlier snapshot still reads.
#[test]
fn a_wider_schema_is_an_iceberg_schema_change_every_reader_sees() {
    let mut f = Fixture::new("ice-widen", 1);
    let schema = every_type_job(&mut f);
    let (payloads, _): (Vec<String>, Vec<Value>) = (0..100).map(event).unzip();
    produce_payloads(&f.topic, 0, &payloads);
    assert_eq!(n(&f.run_once_ok(), "rows"), 100);
    let (before, _) = f.iceberg_current();

    widen_schema(&schema);
    let payloads = noted_events(100..150);
    produce_payloads(&f.topic, 0, &payloads);
    assert_eq!(n(&f.run_once_ok(), "rows"), 50);
    f.assert_clean();
    let table = f.job_table_dir().display().to_string();
    for engine in ENGINES {
        let r = read_iceberg(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 150, "{engine}");
        assert_eq!(rows[0]["note"], Value::Null, "{engine}: {}", rows[0]);
        assert_eq!(rows[120]["note"], "note-120", "{engine}: {}", rows[120]);
        assert_eq!(rows[120]["i"], 70, "{engine}: {}", rows[120]);
    }
    for engine in ["pyiceberg", "duckdb"] {
        let r = read_iceberg(&table, engine, &["--snapshot", &before.to_string()]);
        assert_eq!(n(&r, "rows"), 100, "{engine}: {r}");
    }
    // The new field took a new id; the old ones kept theirs.
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(f.job_table_dir().join("metadata/version-hint.text"))
            .map(|v| {
                std::fs::read_to_string(
                    f.job_table_dir()
                        .join(format!("metadata/v{}.metadata.json", v.trim())),
                )
                .unwrap()
            })
            .unwrap(),
    )
    .unwrap();
    let schemas = meta["schemas"].as_array().unwrap();
    assert_eq!(schemas.len(), 2, "{}", meta["schemas"]);
    let id = |s: &Value, name: &str| {
        s["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["id"].as_i64().unwrap())
    };
    assert_eq!(id(&schemas[0], "b"), id(&schemas[1], "b"));
    assert!(
        id(&schemas[1], "note").unwrap()
            > meta["schemas"][0]["fields"].as_array().unwrap().len() as i64
    );
    // Files written once the Iceberg schema knows every column carry its field ids (the new
    // column's too); a file with a column it did not know yet carries none (the name mapping
    // reads it). Readers read both kinds alike.
    let payloads = noted_events(150..180);
    produce_payloads(&f.topic, 0, &payloads);
    assert_eq!(n(&f.run_once_ok(), "rows"), 30);
    f.assert_clean();
    let ids = field_ids(&f);
    let note = |ids: &Value| ids.get("note").cloned().unwrap_or(Value::Null);
    let latest_note = json!(id(&schemas[1], "note").unwrap());
    let with_note: Vec<_> = ids.iter().filter(|(_, i)| note(i) != Value::Null).collect();
    assert!(
        !with_note.is_empty(),
        "no file carries the new column's id: {ids:?}"
    );
    assert!(
        ids.iter()
            .any(|(_, i)| i.as_object().is_some_and(|o| o.is_empty())),
        "the first file (no Iceberg schema yet) carries no ids: {ids:?}"
    );
    for (file, i) in &with_note {
        assert_eq!(note(i), latest_note, "{file}");
        assert_eq!(
            i["_partition"],
            id(&schemas[1], "_kafka_partition").unwrap(),
            "{file}"
        );
    }
    for engine in ENGINES {
        let r = read_iceberg(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 180, "{engine}");
        assert_eq!(rows[170]["note"], "note-170", "{engine}: {}", rows[170]);
        assert_eq!(rows[120]["note"], "note-120", "{engine}: {}", rows[120]);
    }
}

/// The top-level Parquet field ids of every data file of the table, by file (pyarrow).
fn field_ids(f: &Fixture) -> Vec<(String, Value)> {
    let script = r#"
import glob, json, sys, pyarrow.parquet as pq
for p in sorted(glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True)):
    if "/_" in p[len(sys.argv[1]):] or "/metadata/" in p:
        continue
    s = pq.read_schema(p)
    ids = {f.name: int(f.metadata[b"PARQUET:field_id"]) for f in s if f.metadata and b"PARQUET:field_id" in f.metadata}
    print(json.dumps([p, ids]))
"#;
    run_python(script, &[&f.job_table_dir().display().to_string()])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v[0].as_str().unwrap().to_string(), v[1].clone())
        })
        .collect()
}

/// A version another engine wrote (here: pyiceberg appending a file through the metadata) is
/// named by `verify`; loading goes on through the manifest, and the projection stops.
#[test]
fn a_version_another_engine_wrote_is_named_and_loading_goes_on() {
    let mut f = Fixture::new("ice-foreign", 2);
    f.write_job("table", "");
    f.produce(spec(0, 2_000));
    f.run_once_ok();
    f.assert_clean();
    let table = f.job_table_dir();
    // The next metadata version, written by "another engine": sluice's latest with a snapshot
    // that names no entry.
    let hint = std::fs::read_to_string(table.join("metadata/version-hint.text")).unwrap();
    let v: u64 = hint.trim().parse().unwrap();
    let mut meta: Value = serde_json::from_str(
        &std::fs::read_to_string(table.join(format!("metadata/v{v}.metadata.json"))).unwrap(),
    )
    .unwrap();
    let snaps = meta["snapshots"].as_array_mut().unwrap();
    let mut foreign = snaps.last().unwrap().clone();
    foreign["snapshot-id"] = json!(42);
    foreign["sequence-number"] = json!(foreign["sequence-number"].as_i64().unwrap() + 1);
    foreign["summary"] = json!({"operation": "replace"});
    snaps.push(foreign);
    meta["current-snapshot-id"] = json!(42);
    std::fs::write(
        table.join(format!("metadata/v{}.metadata.json", v + 1)),
        meta.to_string(),
    )
    .unwrap();
    f.produce(spec(2_000, 1_000));
    let out = f.run_once(None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("was not written by sluice"),
        "{}",
        output_text(&out)
    );
    let out = f.cli(&["verify", "--json"]);
    assert!(!out.status.success(), "verify finds a violation");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let violations = report["violations"].as_array().unwrap();
    assert!(
        violations
            .iter()
            .any(|x| x["kind"] == "iceberg_foreign_snapshot" && x["snapshot_id"] == 42),
        "{report}"
    );
    assert_eq!(committed_rows(&f.state()), 3_000);
}

/// `sluice gc` deletes the Iceberg metadata no kept snapshot names (expired snapshots' manifest
/// lists, a losing writer's files) and nothing else: every reader still reads the table and
/// every kept snapshot, and a file another writer put in `metadata/` stays.
#[test]
fn gc_deletes_the_iceberg_metadata_no_kept_snapshot_names() {
    let mut f = Fixture::new("ice-gc", 2);
    f.write_job("table", "[iceberg]\nmax_snapshots = 2\n");
    for round in 0..5u64 {
        f.produce(spec(round * 500, 500));
        f.run_once_ok();
    }
    let meta = f.job_table_dir().join("metadata");
    let lists = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&meta)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap-"))
            .collect();
        v.sort();
        v
    };
    let before = lists();
    assert!(before.len() >= 5, "{before:?}");
    // A losing writer's manifest list, and a file that is not sluice's (a REST catalog's own
    // metadata file).
    std::fs::copy(meta.join(&before[0]), meta.join("snap-1-99-loser.avro")).unwrap();
    std::fs::write(meta.join("00001-4a1f.metadata.json"), "{}").unwrap();
    let out = f.cli(&["gc", "--older-than", "0s"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("Iceberg metadata files"),
        "{}",
        output_text(&out)
    );
    let after = lists();
    assert_eq!(after.len(), 2, "the kept snapshots' lists: {after:?}");
    assert!(meta.join("00001-4a1f.metadata.json").exists());
    f.assert_clean();
    for (seq, id) in f.iceberg_snapshots() {
        let states = f.states();
        let r = read_iceberg(
            &f.job_table_dir().display().to_string(),
            "pyiceberg",
            &["--snapshot", &id.to_string()],
        );
        assert_eq!(
            n(&r, "rows") as u64,
            committed_rows(&states[seq as usize - 1]),
            "{r}"
        );
    }
}
