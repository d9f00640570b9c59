//! Avro payloads against the real broker: raw datums and the Confluent wire format with a
//! schema registry (Apicurio Registry, serving Confluent's API, started by
//! `tests/support/registry.sh`), encoded by fastavro (`tests/avro_encode.py`), not by sluice. Also table schema changes: compatible ones widen
//! the table, incompatible ones are refused with a field-by-field diff.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::registry::{Registry, Tls};
use common::*;
use sluice::ops::generate::{generate, GenSpec};

/// A test schema; `payment` is the repository's own.
fn schema(name: &str) -> PathBuf {
    match name {
        "payment" => repo().join("schemas/payment.avsc"),
        _ => repo().join(format!("tests/schemas/{name}.avsc")),
    }
}

/// One message to encode: a generated event under a writer schema, or raw bytes.
enum Msg {
    Event {
        partition: i32,
        schema: &'static str,
        record: serde_json::Value,
    },
    Raw {
        partition: i32,
        bytes: Vec<u8>,
    },
    /// The Confluent frame of `schema`'s registered id around `datum` (bytes as they are).
    Framed {
        partition: i32,
        schema: &'static str,
        datum: Vec<u8>,
    },
}

/// The events of `spec` as (partition, JSON record).
fn events(spec: &GenSpec) -> Vec<(i32, serde_json::Value)> {
    let mut out = Vec::new();
    generate(spec, |r| {
        out.push((r.partition, serde_json::from_slice(&r.payload).unwrap()));
    });
    out
}

/// Encodes `msgs` with fastavro: `format` raw or confluent (registering `schemas` first).
fn encode(
    msgs: &[Msg],
    format: &str,
    schemas: &[&str],
    registry: Option<&Registry>,
) -> Vec<(i32, Vec<u8>)> {
    let mut c = Command::new(python());
    c.arg(repo().join("tests/avro_encode.py"))
        .args(["--format", format]);
    for s in schemas {
        c.arg("--schema")
            .arg(format!("{s}={}", schema(s).display()));
    }
    if let Some(r) = registry {
        c.args(["--registry", &r.url]);
        if let Some(a) = &r.auth {
            c.args(["--auth", a]);
        }
        if let Some(ca) = &r.ca {
            c.arg("--cafile").arg(ca);
        }
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for m in msgs {
        let line = match m {
            Msg::Event {
                partition,
                schema,
                record,
            } => serde_json::json!({"partition": partition, "schema": schema, "record": record}),
            Msg::Raw { partition, bytes } => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::json!({"partition": partition, "raw_hex": hex})
            }
            Msg::Framed {
                partition,
                schema,
                datum,
            } => {
                let hex: String = datum.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::json!({"partition": partition, "schema": schema, "datum_hex": hex})
            }
        };
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "avro_encode.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (p, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (p.parse().unwrap(), bytes)
        })
        .collect()
}

/// Produces `payloads` in order, each to its partition, every one acknowledged.
fn produce_bytes(topic: &str, payloads: &[(i32, Vec<u8>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("acks", "all")
        .create()
        .unwrap();
    for (partition, body) in payloads {
        loop {
            match p.send(
                BaseRecord::<(), _>::to(topic)
                    .partition(*partition)
                    .payload(body),
            ) {
                Ok(()) => break,
                Err((_, _)) => {
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

fn avro_job(f: &mut Fixture, table: &str, reader: &str, extra: &str) -> PathBuf {
    let job = f
        .job_file(table)
        .set("schema", "file", schema(reader).display().to_string())
        .merge(extra);
    f.write(table, &job)
}

#[test]
fn avro_and_confluent_avro_load_exactly_like_json() {
    let registry = Registry::start_with(Some("loader:s3cret"), None);
    let spec = GenSpec {
        count: 3000,
        partitions: 3,
        ..spec(0, 3000)
    };
    let evs = events(&spec);
    let msgs: Vec<Msg> = evs
        .iter()
        .map(|(p, r)| Msg::Event {
            partition: *p,
            schema: "payment",
            record: r.clone(),
        })
        .collect();
    let sch = ["payment"];

    // The same events three ways, one topic each.
    let mut json = Fixture::new("avro-json", 3);
    json.produce(spec.clone());
    json.write_job("json", "");
    json.run_once_ok();
    let json_report = read_table(&json.job);
    assert_exactly_once(&json_report, 3000, 0);

    let raw = Fixture::new("avro-raw", 3);
    produce_bytes(&raw.topic, &encode(&msgs, "raw", &sch, None));
    let confluent = Fixture::new("avro-confluent", 3);
    produce_bytes(
        &confluent.topic,
        &encode(&msgs, "confluent", &sch, Some(&registry)),
    );

    for (mut f, format, extra) in [
        (raw, "avro", String::new()),
        (
            confluent,
            "confluent-avro",
            // The password from the environment (here its default), as secrets are given.
            format!(
                "[schema.registry]\nurl = \"{}\"\nusername = \"loader\"\npassword = \"${{SLUICE_TEST_REGISTRY_PASSWORD:-s3cret}}\"\n",
                registry.url
            ),
        ),
    ] {
        avro_job(
            &mut f,
            "t",
            "payment",
            &format!("[schema]\nformat = \"{format}\"\n{extra}"),
        );
        let stats = f.run_once_ok();
        assert_eq!(n(&stats, "rows"), 3000, "{format}: {stats}");
        let r = read_table(&f.job);
        assert_exactly_once(&r, 3000, 0);
        assert_eq!(
            r["payload_hash"], json_report["payload_hash"],
            "{format}: the same rows as from JSON"
        );
        assert_eq!(r["files"], json_report["files"], "{format}");
        f.assert_clean();
        f.assert_delta_readers_agree();
    }
}

#[test]
fn interleaved_writer_versions_make_one_file_per_window_and_bad_records_dead_letters() {
    let registry = Registry::start();
    // Every event in one hour, on one partition; writers v1/v2/v3 record by record.
    let spec = GenSpec {
        count: 600,
        partitions: 1,
        span_ms: 3_000_000,
        disorder_permille: 0,
        ..spec(0, 600)
    };
    let mut msgs = Vec::new();
    for (i, (_, mut r)) in events(&spec).into_iter().enumerate() {
        let schema = ["payment_v1", "payment_v2", "payment_v3"][i % 3];
        if i % 3 == 1 {
            r["attempt"] = serde_json::json!(2 + i as i64 % 5);
        }
        if i % 3 == 2 {
            r["attempt"] = serde_json::json!(7);
            r["channel"] = serde_json::json!("web");
        }
        msgs.push(Msg::Event {
            partition: 0,
            schema,
            record: r,
        });
        // Bad records between them: an unknown id, a corrupt datum under a known id.
        if i == 100 {
            let mut b = vec![0u8];
            b.extend_from_slice(&999_999u32.to_be_bytes());
            b.extend_from_slice(b"\x02x");
            msgs.push(Msg::Raw {
                partition: 0,
                bytes: b,
            });
        }
        if i == 400 {
            // v1's id, and a datum that ends inside its first string.
            msgs.push(Msg::Framed {
                partition: 0,
                schema: "payment_v1",
                datum: b"\x40abc".to_vec(),
            });
        }
    }
    let mut f = Fixture::new("avro-versions", 1);
    let payloads = encode(
        &msgs,
        "confluent",
        &["payment_v1", "payment_v2", "payment_v3"],
        Some(&registry),
    );
    produce_bytes(&f.topic, &payloads);
    avro_job(
        &mut f,
        "t",
        "payment_v3",
        &format!(
            "[schema]\nformat = \"confluent-avro\"\n[schema.registry]\nurl = \"{}\"\n",
            registry.url
        ),
    );
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 600, "{stats}");
    let r = read_table(&f.job);
    assert_exactly_once(&r, 602, 2);
    assert_eq!(n(&r, "windows"), 1, "{r}");
    assert_eq!(n(&r, "files"), 1, "one window, one file: {r}");
    // Nulls and defaults where a version lacks a field; the promotion of v2's int.
    let q = read_sql(
        &f,
        "SELECT count(*) FILTER (WHERE country IS NULL AND customer_id IS NULL AND attempt = 1),
                count(*) FILTER (WHERE attempt = 7 AND channel = 'web'),
                count(*) FILTER (WHERE channel IS NULL),
                typeof(any_value(attempt))
         FROM t",
    );
    assert_eq!(q[0], serde_json::json!(200), "v1 rows: {q:?}");
    assert_eq!(q[1], serde_json::json!(200), "v3 rows: {q:?}");
    assert_eq!(q[2], serde_json::json!(400), "v1 and v2 rows: {q:?}");
    assert_eq!(q[3], serde_json::json!("BIGINT"));
    // The dead letters: offsets and reasons.
    let dead = dead_letters(&f);
    let offsets: Vec<i64> = dead.iter().map(|d| d.0).collect();
    assert_eq!(offsets, vec![101, 402], "{dead:?}");
    assert!(dead[0].1.contains("unknown schema id 999999"), "{dead:?}");
    assert!(dead[1].1.contains("does not decode"), "{dead:?}");
    f.assert_clean();
    f.assert_delta_readers_agree();
}

#[test]
fn a_registry_down_mid_run_loses_and_duplicates_nothing() {
    let registry = Registry::start();
    let spec1 = GenSpec {
        count: 300,
        partitions: 2,
        ..spec(0, 300)
    };
    let spec2 = GenSpec {
        first_id: 300,
        ..spec1.clone()
    };
    let as_msgs = |spec: &GenSpec, schema: &'static str| -> Vec<Msg> {
        events(spec)
            .into_iter()
            .map(|(partition, mut record)| {
                if schema == "payment_v2" {
                    record["attempt"] = serde_json::json!(2);
                }
                Msg::Event {
                    partition,
                    schema,
                    record,
                }
            })
            .collect()
    };
    // Both versions registered now; the loader meets v2 only while the registry is down.
    let first = encode(
        &as_msgs(&spec1, "payment_v1"),
        "confluent",
        &["payment_v1"],
        Some(&registry),
    );
    let second = encode(
        &as_msgs(&spec2, "payment_v2"),
        "confluent",
        &["payment_v2"],
        Some(&registry),
    );
    let mut f = Fixture::new("avro-outage", 2);
    avro_job(
        &mut f,
        "t",
        "payment_v3",
        &format!(
            "[schema]\nformat = \"confluent-avro\"\n[schema.registry]\nurl = \"{}\"\ntimeout = \"500ms\"\n[commit]\ninterval = \"1s\"\n",
            registry.url
        ),
    );
    produce_bytes(&f.topic, &first);
    let mut run = f.spawn_run("run.log");
    f.wait_for(60, "the first 300 rows", |s| committed_rows(s) == 300);
    registry.signal("-STOP");
    produce_bytes(&f.topic, &second);
    f.wait_for_log(60, "run.log", "schema registry unavailable");
    // Several commit intervals pass: nothing past the records needing v2 is committed.
    std::thread::sleep(Duration::from_secs(4));
    let s = f.state();
    assert_eq!(committed_rows(&s), 300);
    let ends: i64 = s
        .partitions
        .iter()
        .map(|p| p.end().unwrap_or_default())
        .sum();
    assert_eq!(ends, 300, "no offset past the undecodable records");
    assert!(
        run.try_wait().unwrap().is_none(),
        "the loader waits, it does not exit"
    );
    // SIGKILLed while it waits; a replacement waits too and, told to stop (SIGTERM), exits
    // with an error naming the wait, committing nothing of what waited.
    run.kill().unwrap();
    run.wait().unwrap();
    let mut stopped = f.spawn_run("run2.log");
    f.wait_for_log(60, "run2.log", "schema registry unavailable");
    sigterm(&stopped);
    let status = stopped.wait().unwrap();
    let log = f.log("run2.log");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("stopped while waiting for the schema registry"),
        "{log}"
    );
    assert_eq!(committed_rows(&f.state()), 300);
    // A third loader, and the registry back.
    let mut run = f.spawn_run("run3.log");
    f.wait_for_log(60, "run3.log", "schema registry unavailable");
    registry.signal("-CONT");
    f.wait_for(60, "every row", |s| committed_rows(s) == 600);
    sigterm(&run);
    let status = run.wait().unwrap();
    assert!(status.success(), "{}", f.log("run3.log"));
    let r = read_table(&f.job);
    assert_exactly_once(&r, 600, 0);
    f.assert_clean();
}

#[test]
fn a_wrong_registry_url_waits_instead_of_dead_lettering_everything() {
    let registry = Registry::start();
    let spec = GenSpec {
        partitions: 1,
        ..spec(0, 50)
    };
    let msgs: Vec<Msg> = events(&spec)
        .into_iter()
        .map(|(partition, record)| Msg::Event {
            partition,
            schema: "payment",
            record,
        })
        .collect();
    let mut f = Fixture::new("avro-wrong-url", 1);
    produce_bytes(
        &f.topic,
        &encode(&msgs, "confluent", &["payment"], Some(&registry)),
    );
    // A path the registry does not serve: its 404s are not "schema not found".
    avro_job(
        &mut f,
        "t",
        "payment",
        &format!(
            "[schema]\nformat = \"confluent-avro\"\n[schema.registry]\nurl = \"{}/no/such/prefix\"\n",
            registry.url
        ),
    );
    let mut run = f.spawn_once("run.log");
    f.wait_for_log(60, "run.log", "check schema.registry.url");
    assert!(run.try_wait().unwrap().is_none(), "it waits");
    sigterm(&run);
    assert!(!run.wait().unwrap().success());
    let s = f.state();
    assert_eq!(
        s.seq,
        0,
        "nothing committed, no dead letters: {}",
        f.log("run.log")
    );
}

#[test]
fn an_https_registry_is_trusted_through_ca_file_and_only_so() {
    let tls = Tls::new();
    let registry = Registry::start_with(None, Some(&tls));
    assert!(registry.url.starts_with("https://"), "{}", registry.url);
    let spec = GenSpec {
        partitions: 2,
        ..spec(0, 200)
    };
    let msgs: Vec<Msg> = events(&spec)
        .into_iter()
        .map(|(partition, record)| Msg::Event {
            partition,
            schema: "payment",
            record,
        })
        .collect();
    let mut f = Fixture::new("avro-tls", 2);
    produce_bytes(
        &f.topic,
        &encode(&msgs, "confluent", &["payment"], Some(&registry)),
    );

    // Without the CA the registry's certificate is not trusted: decoding waits, loads nothing.
    let section = |ca: &str| {
        format!(
            "[schema]\nformat = \"confluent-avro\"\n[schema.registry]\nurl = \"{}\"\ntimeout = \"1s\"\n{ca}",
            registry.url
        )
    };
    avro_job(&mut f, "untrusted", "payment", &section(""));
    let mut run = f.spawn_once("untrusted.log");
    f.wait_for_log(60, "untrusted.log", "schema registry unavailable");
    assert!(
        f.log("untrusted.log")
            .to_lowercase()
            .contains("certificate"),
        "{}",
        f.log("untrusted.log")
    );
    assert_eq!(committed_rows(&f.state()), 0);
    run.kill().unwrap();
    run.wait().unwrap();

    avro_job(
        &mut f,
        "trusted",
        "payment",
        &section(&format!("ca_file = \"{}\"\n", tls.ca.display())),
    );
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 200, "{stats}");
    assert_exactly_once(&read_table(&f.job), 200, 0);
    f.assert_clean();
}

/// A JSON payment event `i` in the first hour, with `extra` fields (`,"k":v...`).
fn payment_json(i: u32, extra: &str) -> String {
    format!(
        r#"{{"event_id":"evt_{i}","payment_id":"p{i}","merchant_id":"m","amount":"1.00","currency":"EUR","status":"CAPTURED","method":"card","created_at":"2026-11-24T00:{:02}:00Z"{extra}}}"#,
        i % 60
    )
}

/// `sluice schema check` with the fixture's job: (exit code, stdout).
fn schema_check(f: &Fixture) -> (Option<i32>, String) {
    let out = f.cli(&["schema", "check"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn use_schema(f: &mut Fixture, name: &str) {
    let job = f
        .job_file("t")
        .set("schema", "file", schema(name).display().to_string());
    f.write("t", &job);
}

#[test]
fn job_schema_changes_widen_the_table_or_are_refused_with_a_diff() {
    let mut f = Fixture::new("schema-change", 1);
    // v2: `attempt` an int.
    use_schema(&mut f, "payment_v2");
    let first: Vec<String> = (0..50)
        .map(|i| payment_json(i, r#","attempt":3"#))
        .collect();
    produce_payloads(&f.topic, 0, &first);
    f.run_once_ok();

    // v3: `attempt` widened to a long (with a default), `channel` added (nullable).
    use_schema(&mut f, "payment_v3");
    let (code, text) = schema_check(&f);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("attempt: widened from integer to long"),
        "{text}"
    );
    assert!(text.contains("channel: added"), "{text}");
    // JSON payloads: a missing optional field is null, an unknown one is ignored; a missing
    // required one is a dead letter (JSON payloads get no defaults).
    let second: Vec<String> = (50..70)
        .map(|i| match i {
            50..=59 => payment_json(i, r#","attempt":5000000000,"channel":"web","unknown":1"#),
            60..=68 => payment_json(i, r#","attempt":6"#),
            _ => payment_json(i, ""),
        })
        .collect();
    produce_payloads(&f.topic, 0, &second);
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 19, "{stats}");
    assert_eq!(n(&stats, "dead_letters"), 1, "{stats}");
    f.assert_clean();
    f.assert_delta_readers_agree();
    let table = f.job_table_dir().display().to_string();
    for engine in ["deltalake", "duckdb", "polars"] {
        let r = read_delta(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 69, "{engine}");
        let big = rows
            .iter()
            .filter(|r| r["attempt"] == 5_000_000_000i64)
            .count();
        let small = rows.iter().filter(|r| r["attempt"] == 3).count();
        let web = rows.iter().filter(|r| r["channel"] == "web").count();
        assert_eq!((big, small, web), (10, 50, 10), "{engine}: both shapes");
    }

    // A type change: older files would not read. Refused, even with the flag.
    use_schema(&mut f, "payment_bad");
    let (code, text) = schema_check(&f);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("merchant_id: type changed from string to long"),
        "{text}"
    );
    let seq = f.state().seq;
    produce_payloads(&f.topic, 0, &[payment_json(70, r#","note":"n""#)]);
    for flag in [None, Some("--allow-incompatible-schema")] {
        let mut c = f.sluice();
        c.args(["run", "--once", "--job"]).arg(&f.job).args(flag);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("merchant_id: type changed from string to long"),
            "{err}"
        );
        assert!(err.contains("unreadable"), "{err}");
    }
    assert_eq!(f.state().seq, seq, "nothing committed");

    // Columns removed (and one added): refused without the flag, recorded with it.
    use_schema(&mut f, "payment_note");
    let (code, text) = schema_check(&f);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("attempt: removed") && text.contains("note: added"),
        "{text}"
    );
    let out = f.run_once(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-incompatible-schema"));
    assert_eq!(f.state().seq, seq, "nothing committed");
    let mut c = f.sluice();
    c.args(["run", "--once", "--allow-incompatible-schema", "--job"])
        .arg(&f.job);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(schema_check(&f).0, Some(0));
    f.assert_clean();
    f.assert_delta_readers_agree();
    for engine in ["deltalake", "duckdb", "polars"] {
        let r = read_delta(&table, engine, &["--rows"]);
        let rows = r["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 70, "{engine}");
        assert!(rows.iter().all(|r| r.get("attempt").is_none()), "{engine}");
        assert_eq!(
            rows.iter().filter(|r| r["note"] == "n").count(),
            1,
            "{engine}"
        );
    }
}

/// Runs one SQL query over the table's committed files (`t`), returning the first row.
fn read_sql(f: &Fixture, sql: &str) -> Vec<serde_json::Value> {
    let out = f.cli(&["files"]);
    let files: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|u| u.trim_start_matches("file://").to_string())
        .collect();
    let script = format!(
        "import duckdb, json, sys\ncon = duckdb.connect()\ncon.read_parquet({files:?}, hive_partitioning=True, union_by_name=True).create_view('t')\nprint(json.dumps([str(v) if not isinstance(v, (int, float, str, type(None))) else v for v in con.execute(sys.argv[1]).fetchall()[0]]))"
    );
    serde_json::from_str(&run_python(&script, &[sql])).unwrap()
}

/// The table's dead letters: (offset, error), by offset.
fn dead_letters(f: &Fixture) -> Vec<(i64, String)> {
    let out = f.cli(&["files", "--dead-letters"]);
    let files: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|u| u.trim_start_matches("file://").to_string())
        .collect();
    let script = "import duckdb, json, sys\nfiles = json.loads(sys.argv[1])\nprint(json.dumps(duckdb.connect().execute('SELECT \"offset\", error FROM read_parquet(?) ORDER BY 1', [files]).fetchall()))";
    let out = Command::new(python())
        .args(["-c", script, &serde_json::to_string(&files).unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
