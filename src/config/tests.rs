//! Job files: defaults, errors naming the key, no side effects while parsing.

use super::*;
use crate::record::schema::TimeFormat;

fn schema_dir() -> PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    std::fs::write(
        d.join("s.avsc"),
        r#"{"type":"record","name":"e","fields":[{"name":"id","type":"string"},{"name":"ts","type":"string"}]}"#,
    )
    .unwrap();
    d
}

fn job(dir: &Path, extra: &str) -> Result<Job, ConfigError> {
    let text = format!(
        r#"
[source]
brokers = "${{BROKERS}}"
topics = ["payments"]
[schema]
file = "s.avsc"
[event_time]
field = "ts"
[storage]
url = "memory://"
{extra}
"#
    );
    Job::parse(&dir.join("j.toml"), &text, &|k| {
        (k == "BROKERS").then(|| "127.0.0.1:9092".to_string())
    })
}

#[test]
fn defaults_apply() {
    let d = schema_dir();
    let j = job(&d, "").unwrap();
    assert_eq!(j.brokers, "127.0.0.1:9092");
    assert_eq!(expand_env("a${X:-b}c", &|_| None), Ok("abc".to_string()));
    assert_eq!(
        expand_env("${X:-b}", &|_| Some("y".into())),
        Ok("y".to_string())
    );
    assert_eq!(j.window.millis(), 3_600_000);
    assert_eq!(j.layout.template(), "date={date}/hour={hour}");
    assert_eq!(j.commit.interval, Duration::from_secs(60));
    assert_eq!(j.compression, Compression::Zstd(1));
    assert_eq!(j.bad_records, BadRecordPolicy::DeadLetter);
    assert_eq!(j.group_id, "sluice-j");
    assert_eq!(
        j.event_time,
        EventTime::Field {
            name: "ts".into(),
            format: TimeFormat::Rfc3339
        }
    );
}

#[test]
fn errors_name_the_key() {
    let d = schema_dir();
    let e = job(&d, "[commit]\ninterval = \"100ms\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("commit.interval"), "{e}");
    let e = job(&d, "[window]\nsize = \"7m\"").unwrap_err().to_string();
    assert!(e.contains("window.size"), "{e}");
    let e = job(&d, "[commit]\nintervall = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("intervall"), "{e}");
    let e = job(&d, "[storage.options]\nkey = \"${MISSING}\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MISSING") && e.contains("storage.options.key"),
        "{e}"
    );
    assert_eq!(
        redact_url("s3://AKIAEXAMPLE:s3cr3t@bucket/t?sig=abc"),
        "s3://bucket/t"
    );
    let e = job(&d, "[bad_records]\npolicy = \"ignore\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("policy = \"ignore\"") && e.contains("dead_letter"),
        "{e}"
    );
}

#[test]
fn parsing_touches_no_filesystem_and_the_commit_policy_is_pure() {
    let d = schema_dir();
    let j = job(&d, "").unwrap();
    let url = resolve_storage_url("not/yet/here", &d).unwrap();
    assert!(
        url.starts_with("file://") && url.ends_with("not/yet/here/"),
        "{url}"
    );
    assert!(!d.join("not").exists(), "parsing created a folder");
    let p = j.commit;
    let idle = Buffered::default();
    let some = Buffered {
        bytes: 10,
        rows: 1,
        ranges: true,
    };
    assert!(!p.due(Duration::from_secs(3600), idle), "nothing to commit");
    assert!(!p.due(Duration::from_secs(1), some));
    assert!(p.due(p.interval, some));
    let markers_only = Buffered {
        ranges: true,
        ..idle
    };
    assert!(
        p.due(p.interval, markers_only),
        "a range of markers is committed too"
    );
    let full = Buffered {
        rows: p.max_rows,
        ..some
    };
    assert!(p.due(Duration::ZERO, full));
}

fn avro_job(dir: &Path, schema_section: &str) -> Result<Job, ConfigError> {
    let text = format!(
        r#"
[source]
brokers = "b:9092"
topics = ["payments"]
[schema]
file = "s.avsc"
{schema_section}
[event_time]
field = "ts"
[storage]
url = "memory://"
"#
    );
    Job::parse(&dir.join("j.toml"), &text, &|k| match k {
        "REG_PASSWORD" => Some("pw".into()),
        "REG_URL" => Some("https://reg.example:8081/".into()),
        _ => None,
    })
}

#[test]
fn payload_formats_and_the_registry() {
    let d = schema_dir();
    assert_eq!(avro_job(&d, "").unwrap().format, PayloadFormat::Json);
    let raw = avro_job(&d, r#"format = "avro""#).unwrap();
    assert_eq!((raw.format, raw.writers), (PayloadFormat::Avro, None));

    let reg = avro_job(
        &d,
        r#"format = "confluent-avro"
[schema.registry]
url = "${REG_URL}"
username = "loader"
password = "${REG_PASSWORD}"
timeout = "3s""#,
    )
    .unwrap();
    assert_eq!(reg.format, PayloadFormat::ConfluentAvro);
    let Some(WriterSchemas::Registry(r)) = &reg.writers else {
        panic!("{:?}", reg.writers)
    };
    assert_eq!(r.url, "https://reg.example:8081");
    assert_eq!(
        r.auth,
        RegistryAuth::Basic {
            username: "loader".into(),
            password: "pw".into()
        }
    );
    assert_eq!(r.timeout, Duration::from_secs(3));
    assert!(
        !format!("{r:?}").contains("pw"),
        "credentials never printed"
    );

    let dir = avro_job(
        &d,
        "format = \"confluent-avro\"\n[schema.registry]\ndirectory = \"ids\"",
    )
    .unwrap();
    assert_eq!(dir.writers, Some(WriterSchemas::Directory(d.join("ids"))));

    let err = |section: &str| avro_job(&d, section).unwrap_err().to_string();
    assert!(err(r#"format = "confluent-avro""#).contains("schema.registry"));
    assert!(
        err("format = \"avro\"\n[schema.registry]\ndirectory = \"x\"")
            .contains("only `confluent-avro`")
    );
    assert!(err(
        "format = \"confluent-avro\"\n[schema.registry]\nurl = \"http://a\"\ndirectory = \"x\""
    )
    .contains("exactly one"));
    assert!(
        err("format = \"confluent-avro\"\n[schema.registry]\nurl = \"ftp://a\"")
            .contains("http://")
    );
    assert!(err("format = \"confluent-avro\"\n[schema.registry]\nurl = \"http://a\"\ntoken = \"t\"\nusername = \"u\"").contains("not both"));
    assert!(err(r#"format = "protobuf""#).contains("protobuf"));
}

#[test]
fn iceberg_catalog_keys() {
    let d = schema_dir();
    let j = job(
        &d,
        "[iceberg]\nenabled = true\ncatalog = \"sqlite:cat.db\"\nnamespace = \"sales.eu\"\ncatalog_token = \"${BROKERS}\"",
    )
    .unwrap();
    let c = j.iceberg.unwrap().catalog.unwrap();
    // A relative sqlite path is from the job file's folder.
    assert_eq!(c.uri, format!("sqlite:{}", d.join("cat.db").display()));
    assert_eq!(c.namespace, ["sales", "eu"]);
    assert_eq!((c.name.as_str(), c.table.as_str()), ("sluice", "j"));
    assert_eq!(c.token.as_deref(), Some("127.0.0.1:9092"));
    let e = job(&d, "[iceberg]\ncatalog = \"sqlite:cat.db\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("iceberg.catalog") && e.contains("enabled = true"),
        "{e}"
    );
    let e = job(
        &d,
        "[iceberg]\nenabled = true\ncatalog = \"x\"\nnamespace = \"a..b\"",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("iceberg.namespace"), "{e}");
}
