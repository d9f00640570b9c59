//! The table registered and kept current in Iceberg catalogs, read through them by independent
//! engines: a SQL catalog in sqlite (also served by the Iceberg project's own REST catalog
//! server over the same database, so Java's JdbcCatalog reads sluice's rows) and in
//! PostgreSQL, and a REST catalog server that sluice commits to; an engine committing to the
//! catalog is named by `verify` and never overwritten.

mod common;

use common::catalogs::{IcebergRest, Postgres};
use common::every_type::{event, every_type_job, noted_events, widen_schema};
use common::*;
use serde_json::{json, Value};

/// The table's latest metadata file, as sluice wrote it.
fn latest_metadata(f: &Fixture) -> String {
    let table = f.job_table_dir();
    let v = std::fs::read_to_string(table.join("metadata/version-hint.text")).unwrap();
    table
        .join(format!("metadata/v{}.metadata.json", v.trim()))
        .display()
        .to_string()
}

fn verify_report(f: &Fixture) -> Value {
    let out = f.cli(&["verify", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metadata_location(catalog: &str, name: &str, catalog_name: &str) -> String {
    let r = std::process::Command::new(python())
        .arg(repo().join("tests/iceberg_reader.py"))
        .args([
            "--engine",
            "pyiceberg",
            "--catalog",
            catalog,
            "--table",
            name,
        ])
        .args(["--catalog-name", catalog_name, "--metadata-location"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

#[test]
fn a_sql_catalog_points_at_each_version_and_java_and_pyiceberg_read_through_it() {
    let mut f = Fixture::new("ice-sql", 2);
    f.write_job("orders", "[iceberg]\nnamespace = \"sales.eu\"\n");
    let (catalog, name) = f.sql_catalog().unwrap();
    assert_eq!(name, "sales.eu.orders");
    for round in 0..3u64 {
        f.produce(spec(round * 1_000, 1_000));
        f.run_once_ok();
        // The catalog's row is sluice's newest metadata file, every commit.
        assert_eq!(
            metadata_location(&catalog, &name, "sluice"),
            latest_metadata(&f)
        );
    }
    f.assert_clean();
    let report = verify_report(&f);
    assert_eq!(report["iceberg"]["catalog"]["behind"], 0, "{report}");
    // Java's JdbcCatalog (behind the Iceberg REST catalog server) reads the same rows: the
    // table, its namespace, and every row once.
    let db = catalog.strip_prefix("sql:sqlite:///").unwrap();
    let rest = IcebergRest::start_with(Some(&format!("jdbc:sqlite:{db}")), Some("sluice"));
    let r = read_iceberg(
        &name,
        "pyiceberg",
        &["--catalog", &format!("rest:{}", rest.url)],
    );
    let rows = committed_rows(&f.state()) as i64;
    assert_eq!(n(&r, "rows"), rows, "through Java's JdbcCatalog: {r}");
    assert_eq!(n(&r, "distinct_offsets"), rows, "{r}");
    drop(rest);

    // An engine commits to the catalog (pyiceberg appends through the SqlCatalog): sluice
    // loads on, never moves the catalog's table back, and verify names it.
    let script = r#"
import sys, pyarrow as pa
from pyiceberg.catalog import load_catalog
c = load_catalog("sluice", type="sql", uri=sys.argv[1], init_catalog_tables="false")
t = c.load_table(sys.argv[2])
t.append(t.scan(limit=1).to_arrow())
print(t.metadata_location)
"#;
    let uri = catalog.strip_prefix("sql:").unwrap();
    let foreign = run_python(script, &[uri, &name]).trim().to_string();
    f.produce(spec(3_000, 500));
    let out = f.run_once(None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("sluice did not write"),
        "{}",
        output_text(&out)
    );
    assert_eq!(metadata_location(&catalog, &name, "sluice"), foreign);
    let report = verify_report(&f);
    assert!(
        report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["kind"] == "iceberg_catalog_foreign"),
        "{report}"
    );
    assert_eq!(committed_rows(&f.state()), 3_500);
}

#[test]
fn a_postgres_catalog_is_registered_and_committed_to_conditionally() {
    let pg = Postgres::start();
    let mut f = Fixture::new("ice-pg", 2);
    // Two tables in one catalog; the second job starts when the first has versions.
    f.write_job(
        "payments",
        &format!(
            "[iceberg]\ncatalog = \"{}\"\nnamespace = \"finance\"\n",
            pg.url
        ),
    );
    let catalog = format!("sql:{}", pg.sqlalchemy_url());
    for round in 0..3u64 {
        f.produce(spec(round * 800, 800));
        f.run_once_ok();
        assert_eq!(
            metadata_location(&catalog, "finance.payments", "sluice"),
            latest_metadata(&f)
        );
    }
    let report = verify_report(&f);
    assert_eq!(report["violations"], json!([]), "{report}");
    assert_eq!(report["iceberg"]["catalog"]["behind"], 0, "{report}");
    let rows = committed_rows(&f.state()) as i64;
    let r = read_iceberg("finance.payments", "pyiceberg", &["--catalog", &catalog]);
    assert_eq!(n(&r, "rows"), rows, "pyiceberg through PostgreSQL: {r}");
    assert_eq!(n(&r, "distinct_offsets"), rows, "{r}");
    // Two loaders at once: the conditional update lets each version through once, and the
    // catalog ends at the newest.
    f.produce(spec(2_400, 3_000));
    let a = f.spawn_once("a.log");
    let b = f.spawn_once("b.log");
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    }
    f.run_once_ok();
    assert_eq!(
        metadata_location(&catalog, "finance.payments", "sluice"),
        latest_metadata(&f)
    );
    let r = read_iceberg("finance.payments", "pyiceberg", &["--catalog", &catalog]);
    assert_eq!(n(&r, "rows"), 5_400, "{r}");
    assert_eq!(n(&r, "distinct_offsets"), 5_400, "{r}");
}

#[test]
fn a_rest_catalog_gets_every_snapshot_schema_change_and_expiry() {
    let rest = IcebergRest::start();
    let mut f = Fixture::new("ice-rest", 2);
    let schema = every_type_job(&mut f);
    let job = std::fs::read_to_string(&f.job).unwrap();
    // At most 3 snapshots kept: older ones are removed from the catalog's table too.
    let mut job: toml::Table = job.parse().unwrap();
    let ice = job["iceberg"].as_table_mut().unwrap();
    ice.insert("catalog".into(), rest.url.clone().into());
    ice.insert("namespace".into(), "events".into());
    ice.insert("table".into(), "every_type".into());
    ice.insert("max_snapshots".into(), 3.into());
    let job = toml::to_string(&job).unwrap();
    std::fs::write(&f.job, job).unwrap();
    let catalog = format!("rest:{}", rest.url);
    let name = "events.every_type";
    let (payloads, _): (Vec<String>, Vec<Value>) = (0..200).map(event).unzip();
    for chunk in payloads.chunks(50) {
        produce_payloads(&f.topic, 0, chunk);
        f.run_once_ok();
        let (snapshot, _) = f.iceberg_current();
        let r = read_iceberg(name, "pyiceberg", &["--catalog", &catalog]);
        assert_eq!(n(&r, "version"), snapshot, "{r}\n{}", rest.log());
    }
    // A wider schema: the catalog's table gets the new schema (its ids) with the snapshot.
    widen_schema(&schema);
    let payloads = noted_events(200..260);
    produce_payloads(&f.topic, 0, &payloads[..30]);
    produce_payloads(&f.topic, 1, &payloads[30..]);
    // Two loaders at once (a partition each): their catalog commits race; a refused one reads
    // the table again and goes on from it.
    let (a, b) = (f.spawn_once("a.log"), f.spawn_once("b.log"));
    for c in [a, b] {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    f.run_once_ok();
    f.assert_clean();
    let report = verify_report(&f);
    assert_eq!(report["violations"], json!([]), "{report}");
    assert_eq!(report["iceberg"]["catalog"]["behind"], 0, "{report}");
    let (snapshot, _) = f.iceberg_current();
    let r = read_iceberg(name, "pyiceberg", &["--catalog", &catalog, "--rows"]);
    assert_eq!(n(&r, "version"), snapshot, "{r}");
    let mut rows = r["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["i"].as_i64());
    assert_eq!(rows.len(), 260, "{r}");
    let note = |i: i64| rows.iter().find(|r| r["i"] == i).unwrap()["note"].clone();
    assert_eq!(note(250 - 50), "note-250");
    assert_eq!(note(10), Value::Null);
    // The catalog's table keeps the snapshots sluice keeps (3), each reading as its entry.
    let kept = f.iceberg_snapshots();
    assert_eq!(kept.len(), 3, "{kept:?}");
    // The catalog wrote its own metadata file (not sluice's), holding the same snapshots.
    let at = metadata_location(&catalog, name, "sluice");
    assert_ne!(at, latest_metadata(&f));
    let theirs: Value =
        serde_json::from_str(&std::fs::read_to_string(at.trim_start_matches("file:")).unwrap())
            .unwrap();
    let mut ids: Vec<i64> = theirs["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot-id"].as_i64().unwrap())
        .collect();
    ids.sort();
    let mut want: Vec<i64> = kept.iter().map(|(_, id)| *id).collect();
    want.sort();
    assert_eq!(ids, want, "the catalog's snapshots");
    let states = f.states();
    for (seq, id) in kept {
        let r = read_iceberg(
            name,
            "pyiceberg",
            &["--catalog", &catalog, "--snapshot", &id.to_string()],
        );
        let want = committed_rows(&states[seq as usize - 1]);
        assert_eq!(
            n(&r, "rows") as u64,
            want,
            "snapshot {id} of entry {seq}: {r}"
        );
    }
}

#[test]
fn a_postgres_catalog_over_tls_verifies_the_server_certificate() {
    let tls = common::registry::Tls::new();
    let pg = Postgres::start_tls(&tls);
    let mut f = Fixture::new("ice-pgtls", 1);
    // The server's certificate is signed by a CA the system does not trust: nothing is
    // registered (loading goes on), and the log says why.
    f.write_job(
        "t",
        &format!("[iceberg]\ncatalog = \"{}?sslmode=verify-full\"\n", pg.url),
    );
    f.produce(spec(0, 300));
    let out = f.run_once(None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("certificate"),
        "{}",
        output_text(&out)
    );
    // Plain TCP is refused by this server.
    f.write_job(
        "t",
        &format!("[iceberg]\ncatalog = \"{}?sslmode=disable\"\n", pg.url),
    );
    f.produce(spec(300, 300));
    let out = f.run_once(None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("no encryption"),
        "{}",
        output_text(&out)
    );
    // With the CA as sslrootcert: registered at the newest version.
    f.write_job(
        "t",
        &format!(
            "[iceberg]\ncatalog = \"{}?sslmode=verify-full&sslrootcert={}\"\n",
            pg.url,
            tls.ca.display()
        ),
    );
    f.produce(spec(600, 300));
    let out = f.run_once(None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        !output_text(&out).contains("Iceberg"),
        "{}",
        output_text(&out)
    );
    let catalog = format!("sql:{}?sslmode=require", pg.sqlalchemy_url());
    assert_eq!(
        metadata_location(&catalog, "tests.t", "sluice"),
        latest_metadata(&f)
    );
    let r = read_iceberg("tests.t", "pyiceberg", &["--catalog", &catalog]);
    assert_eq!(n(&r, "rows"), 900, "{r}\n{}", pg.log());
}
