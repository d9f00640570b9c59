//! `sluice init` against live topics: the two bench shapes and a nested one (JSON), and Confluent
//! Avro through a registry. Each job it writes is then run with `run --once`, and an
//! independent reader (delta-rs, through tests/delta_reader.py) counts every valid record once.
//! The producers are independent of sluice (tests/init_producer.py: confluent-kafka, fastavro).
//! Also its refusals: an empty topic, a missing one, payloads that are not JSON or Avro, an
//! existing file without --force.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::registry::Registry;
use common::*;

fn produce(f: &Fixture, shape: &str, count: u64, bad: u64, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo().join("tests/init_producer.py"))
        .args([
            "--brokers",
            &f.brokers,
            "--topic",
            &f.topic,
            "--shape",
            shape,
        ])
        .args(["--count", &count.to_string(), "--bad", &bad.to_string()])
        .args(["--partitions", &f.partitions.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init_producer.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sluice ARGS` run in `dir`.
fn sluice_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .env_remove("SLUICE_BROKERS")
        .env_remove("SLUICE_TABLE_URL")
        .args(args)
        .output()
        .unwrap()
}

fn init(f: &Fixture, extra: &[&str]) -> Output {
    let mut args = vec!["init", "--brokers", &f.brokers, "--topic", &f.topic];
    args.extend_from_slice(extra);
    sluice_in(f.dir.path(), &args)
}

fn field_type(schema: &serde_json::Value, path: &[&str]) -> serde_json::Value {
    let mut record = schema;
    let mut ty = serde_json::Value::Null;
    for (i, name) in path.iter().enumerate() {
        let field = record["fields"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == *name))
            .unwrap_or_else(|| panic!("no field {name} in {record}"));
        ty = field["type"].clone();
        if i + 1 < path.len() {
            // Into a (nullable) nested record.
            record = match &field["type"] {
                serde_json::Value::Array(b) => b.iter().find(|t| t.is_object()).unwrap(),
                t => t,
            };
        }
    }
    ty
}

/// Runs the written job once and checks the table against the producer's counts, with sluice's
/// own accounting, `verify`, and an independent reader.
fn load_and_count(f: &Fixture, produced: &serde_json::Value) {
    let job = format!("jobs/{}.toml", f.topic);
    let out = sluice_in(f.dir.path(), &["run", "--once", "--job", &job]);
    assert!(out.status.success(), "run --once: {}", output_text(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["rows"], produced["valid"], "{stats}");
    assert_eq!(stats["dead_letters"], produced["bad"], "{stats}");
    let out = sluice_in(f.dir.path(), &["verify", "--job", &job, "--json"]);
    assert!(out.status.success(), "verify: {}", output_text(&out));
    let table = f.dir.path().join("warehouse").join(&f.topic);
    let read = read_delta(table.to_str().unwrap(), "deltalake", &[]);
    assert_eq!(read["rows"], produced["valid"], "{read}");
    assert_eq!(read["distinct_offsets"], produced["valid"], "{read}");
}

fn written_schema(f: &Fixture) -> serde_json::Value {
    let p = f.dir.path().join(format!("schemas/{}.avsc", f.topic));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn init_writes_a_job_that_loads_every_valid_record_of_the_payment_shape() {
    let f = Fixture::new("init-pay", 3);
    let produced = produce(&f, "payments", 3000, 9, &[]);
    let out = init(&f, &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    // The share accepted is every JSON object of the sample: the junk among the 1,000 sampled
    // records (whatever share of the 9 in 3,009 it caught) is all that is refused.
    let number_after = |what: &str| -> u64 {
        let at = said
            .find(what)
            .unwrap_or_else(|| panic!("no `{what}` in {said}"))
            + what.len();
        said[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        number_after("the schema accepts "),
        number_after("payloads: "),
        "{said}"
    );
    assert!(
        said.contains("event time: `created_at`, a timestamp"),
        "{said}"
    );
    assert!(said.contains("sampled 1000 records"), "{said}");
    let schema = written_schema(&f);
    assert_eq!(
        field_type(&schema, &["created_at"]),
        serde_json::json!({"type": "long", "logicalType": "timestamp-micros"})
    );
    assert_eq!(
        field_type(&schema, &["amount"]),
        serde_json::json!({"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}),
        "amounts written as decimal strings"
    );
    let names: Vec<&str> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..3],
        ["event_id", "payment_id", "merchant_id"],
        "payload order"
    );
    load_and_count(&f, &produced);
}

#[test]
fn init_infers_the_sensor_shape_numbers_nulls_nested_and_epoch_millis() {
    let f = Fixture::new("init-sensor", 3);
    let produced = produce(&f, "sensor", 3000, 6, &[]);
    let out = init(&f, &["--sample", "900"]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("sampled 900 records"), "{said}");
    let schema = written_schema(&f);
    use serde_json::json;
    assert_eq!(field_type(&schema, &["device_id"]), "long");
    assert_eq!(field_type(&schema, &["temperature"]), "double");
    assert_eq!(
        field_type(&schema, &["humidity"]),
        json!(["null", "double"])
    );
    assert_eq!(field_type(&schema, &["ok"]), "boolean");
    assert_eq!(field_type(&schema, &["firmware", "build"]), "long");
    assert!(
        field_type(&schema, &["firmware"])[0] == "null",
        "nullable record"
    );
    assert_eq!(
        field_type(&schema, &["tags"]),
        json!({"type": "array", "items": "string"})
    );
    assert_eq!(
        field_type(&schema, &["measured_at"]),
        json!({"type": "long", "logicalType": "timestamp-millis"})
    );
    assert!(said.contains("event time: `measured_at`"), "{said}");
    load_and_count(&f, &produced);
}

#[test]
fn init_infers_nested_records_arrays_optional_fields_and_maps() {
    let f = Fixture::new("init-nested", 2);
    let produced = produce(&f, "nested", 2500, 5, &[]);
    let out = init(&f, &[]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    let schema = written_schema(&f);
    use serde_json::json;
    assert_eq!(
        field_type(&schema, &["customer", "email"]),
        json!(["null", "string"])
    );
    assert_eq!(field_type(&schema, &["customer", "address"])[0], "null");
    assert_eq!(field_type(&schema, &["lines"])["items"]["type"], "record");
    assert_eq!(field_type(&schema, &["total"]), "double");
    assert_eq!(field_type(&schema, &["coupon"]), json!(["null", "string"]));
    assert_eq!(
        field_type(&schema, &["attrs"]),
        json!({"type": "map", "values": "long"})
    );
    assert!(said.contains("event time: `placed_at`"), "{said}");
    load_and_count(&f, &produced);
}

#[test]
fn init_takes_a_confluent_avro_topics_schema_from_the_registry() {
    let registry = Registry::start();
    let url = registry.url.clone();
    let f = Fixture::new("init-avro", 2);
    let produced = produce(&f, "sensor", 2000, 4, &["--confluent", "--registry", &url]);

    let refused = init(&f, &[]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains(&format!("Confluent Avro (schema ids {})", produced["id"]))
            && output_text(&refused).contains("--registry"),
        "{}",
        output_text(&refused)
    );

    let out = init(&f, &["--registry", &url]);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("(id {})", produced["id"])), "{said}");
    let job = std::fs::read_to_string(f.dir.path().join(format!("jobs/{}.toml", f.topic))).unwrap();
    assert!(job.contains("format = \"confluent-avro\""), "{job}");
    assert!(
        said.contains("event time: `measured_at`, a timestamp"),
        "{said}"
    );
    load_and_count(&f, &produced);
}

#[test]
fn init_refuses_clearly_and_never_overwrites_without_force() {
    // A topic that does not exist.
    let f = Fixture::new("init-refuse", 2);
    let out = init(&f, &["--out", "x.toml"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("has no records to sample"),
        "{}",
        output_text(&out)
    );
    assert!(!f.dir.path().join("x.toml").exists());

    let out = sluice_in(
        f.dir.path(),
        &[
            "init",
            "--brokers",
            &f.brokers,
            "--topic",
            "no-such-topic-for-init",
        ],
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("topic `no-such-topic-for-init` does not exist"),
        "{}",
        output_text(&out)
    );

    // Payloads that are neither JSON objects nor Confluent Avro.
    produce_payloads(
        &f.topic,
        0,
        &["plain text".to_string(), "[1, 2]".to_string()],
    );
    let out = init(&f, &[]);
    assert!(!out.status.success());
    let said = output_text(&out);
    assert!(
        said.contains("is a JSON object or Confluent Avro"),
        "{said}"
    );
    assert!(
        said.contains("\"plain text\"") || said.contains("\"[1, 2]\""),
        "{said}"
    );

    // An existing job file is never overwritten without --force.
    let g = Fixture::new("init-force", 1);
    produce(&g, "payments", 50, 0, &[]);
    let job = g.dir.path().join(format!("jobs/{}.toml", g.topic));
    std::fs::create_dir_all(job.parent().unwrap()).unwrap();
    std::fs::write(&job, "# mine\n").unwrap();
    let out = init(&g, &[]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("exists; pass --force"),
        "{}",
        output_text(&out)
    );
    assert_eq!(std::fs::read_to_string(&job).unwrap(), "# mine\n");
    assert!(!g
        .dir
        .path()
        .join(format!("schemas/{}.avsc", g.topic))
        .exists());
    let out = init(&g, &["--force"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(std::fs::read_to_string(&job)
        .unwrap()
        .contains("[event_time]"));
}

/// On the SASL_SSL listener (SCRAM-SHA-512 over TLS), as on a managed Kafka: the password comes
/// from the environment for the sample, and the job written names the variable, never the
/// secret; the job then loads with the variable set.
#[test]
fn init_on_an_authenticated_listener_keeps_the_password_out_of_files_and_output() {
    let f = Fixture::new("init-sasl", 2);
    let produced = produce(&f, "payments", 500, 0, &[]);
    let password = test_env("SLUICE_TEST_SASL_PASSWORD");
    let props = [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanism=SCRAM-SHA-512".to_string(),
        format!("sasl.username={}", test_env("SLUICE_TEST_SASL_USER")),
        "sasl.password".to_string(),
        format!("ssl.ca.location={}/ca.pem", test_env("SLUICE_TEST_TLS_DIR")),
    ];
    let sasl = test_env("SLUICE_TEST_SASL_BROKERS");
    let mut args = vec!["init", "--brokers", &sasl, "--topic", &f.topic];
    for p in &props {
        args.extend(["--property", p.as_str()]);
    }
    // Without the variable: refused, naming it.
    let out = sluice_in(f.dir.path(), &args);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("$SLUICE_SASL_PASSWORD"),
        "{}",
        output_text(&out)
    );

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(f.dir.path())
            .env_remove("SLUICE_BROKERS")
            .env_remove("SLUICE_TABLE_URL")
            .env("SLUICE_SASL_PASSWORD", &password)
            .env("SLUICE_LOG", "debug")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&args);
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("export SLUICE_SASL_PASSWORD"), "{said}");
    let job = std::fs::read_to_string(f.dir.path().join(format!("jobs/{}.toml", f.topic))).unwrap();
    assert!(job.contains("\"${SLUICE_SASL_PASSWORD}\""), "{job}");
    assert!(
        !job.contains(&password) && !said.contains(&password),
        "the secret leaked"
    );

    let job = format!("jobs/{}.toml", f.topic);
    let out = run(&["run", "--once", "--job", &job]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        !output_text(&out).contains(&password),
        "the secret leaked into the run's logs"
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["rows"], produced["valid"], "{stats}");
}
