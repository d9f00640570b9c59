//! Commit conformance: one suite, run through the committer against every storage backend
//! sluice claims — `memory://`, local files, S3 (a local moto server) and Azure Blob (a local
//! Azurite): commits and checkpoints, fencing of a stale writer, racers for one partition.
//! The servers are started by the tests from `.tools/` (installed by `make test`).

mod common;

use common::{create_bucket, free_port, s3_options, start_moto, tool, wait_port, Server};

use std::process::{Command, Stdio};
use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use sluice::table::commit::{Committer, Encoded, Outcome, Proposal};
use sluice::table::entry::{DataFile, EntryKind, OffsetRange};
use sluice::table::manifest::Manifest;
use sluice::table::state::Refusal;

const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn start_azurite() -> (Server, u16, tempfile::TempDir) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(tool("node_modules/.bin/azurite-blob"))
        .args(["--blobHost", "127.0.0.1", "--blobPort"])
        .arg(port.to_string())
        .args([
            "--inMemoryPersistence",
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child);
    (Server(child), port, dir)
}

fn azure_container(port: u16, name: &str) {
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    );
    common::run_python(
        "import sys; from azure.storage.blob import BlobServiceClient as B; B.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
        &[&conn, name],
    );
}

fn azure_options(port: u16) -> Vec<(String, String)> {
    [
        ("azure_storage_account_name", "devstoreaccount1".to_string()),
        ("azure_storage_account_key", AZURITE_KEY.to_string()),
        (
            "azure_storage_endpoint",
            format!("http://127.0.0.1:{port}/devstoreaccount1"),
        ),
        ("azure_allow_http", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn open(url: &str, options: &[(String, String)], every: u64) -> Manifest {
    let options: std::collections::BTreeMap<String, String> = options.iter().cloned().collect();
    let (store, root) =
        sluice::table::store::open_url(&url::Url::parse(url).unwrap(), &options).unwrap();
    Manifest::new(store, root, every)
}

fn committer(m: Manifest, name: &str) -> Committer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Committer::open(m, Arc::new(rt), name.into()).unwrap()
}

/// Prepares, writes (one small file) and publishes `[from, to)` of partition `p` of `t`.
fn commit(c: &Committer, p: i32, from: i64, to: i64) -> Outcome {
    let range = OffsetRange {
        records: Some((to - from) as u64),
        ..OffsetRange::new("t", p, from, to)
    };
    let proposal = Proposal {
        range: range.clone(),
        rows: (to - from) as u64,
        dead_letters: 0,
    };
    let (prepared, refused) = c
        .prepare(EntryKind::Append, vec![proposal], vec![])
        .unwrap();
    if !refused.is_empty() {
        return Outcome::Refused {
            refused,
            conflicts: 0,
        };
    }
    let file = DataFile {
        path: format!("data/{p}-{from}-{}.parquet", uuid::Uuid::new_v4().simple()),
        bytes: 0,
        rows: (to - from) as u64,
        topic: "t".into(),
        partition: p,
        first_offset: from,
        next_offset: to,
        window_start_ms: 0,
        window_end_ms: 1,
        min_event_ms: 0,
        max_event_ms: 0,
        schema_fingerprint: "f".into(),
        stats: None,
        spans: vec![],
        late: false,
    };
    let rows = file.rows;
    let written = prepared
        .write(vec![file], vec![], |_| {
            Ok(Encoded::new(b"body".to_vec(), rows))
        })
        .unwrap();
    let outcome = written.publish().unwrap();
    if let Outcome::Published { entry, .. } = &outcome {
        c.settle(entry);
    }
    outcome
}

fn seq(o: &Outcome) -> Option<u64> {
    match o {
        Outcome::Published { entry, .. } => Some(entry.seq),
        Outcome::Refused { .. } => None,
    }
}

fn load(m: &Manifest) -> sluice::table::state::TableState {
    common::rt().block_on(m.load()).unwrap()
}

/// The suite every backend must pass.
fn conformance(open: impl Fn(u64) -> Manifest + Sync) {
    // Commits, reload, checkpoints.
    assert_eq!(load(&open(3)).seq, 0, "a new table has no entries");
    let c = committer(open(3), "a");
    for i in 0..7 {
        assert_eq!(seq(&commit(&c, 0, i * 10, i * 10 + 10)), Some(i as u64 + 1));
    }
    let m = open(3);
    let reloaded = load(&m);
    assert_eq!(reloaded.seq, 7);
    assert_eq!(reloaded.partition("t", 0).unwrap().ranges, vec![(0, 70)]);
    let rt = common::rt();
    assert_eq!(rt.block_on(m.list_checkpoints()).unwrap(), vec![3, 6]);
    assert_eq!(rt.block_on(m.read_checkpoint(6)).unwrap().unwrap().seq, 6);

    // A writer that read the table before another committed is fenced, not duplicated.
    let stale = committer(open(3), "stale");
    assert_eq!(seq(&commit(&c, 0, 70, 75)), Some(8));
    match commit(&stale, 0, 70, 80) {
        Outcome::Refused { refused, .. } => assert!(
            matches!(&refused[..], [Refusal::Fenced(f)] if f.committed_end == Some(75)),
            "{refused:?}"
        ),
        other => panic!("a stale writer published: {other:?}"),
    }

    // N racers for one partition's next range: exactly one wins, every round; the others'
    // files are deleted.
    for round in 0..4i64 {
        let base = load(&open(3));
        let from = base.partition("t", 0).unwrap().end().unwrap();
        let racers: Vec<Committer> = (0..6)
            .map(|i| committer(open(3), &format!("r{i}")))
            .collect();
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let hs: Vec<_> = racers
                .iter()
                .map(|c| s.spawn(move || commit(c, 0, from, from + 1 + round)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = outcomes.iter().filter(|o| seq(o).is_some()).count();
        assert_eq!(wins, 1, "round {round}: {wins} winners");
        let after = load(&open(3));
        assert_eq!(after.seq, base.seq + 1);
        assert_eq!(
            after.partition("t", 0).unwrap().end(),
            Some(from + 1 + round)
        );
    }
}

#[test]
fn memory() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    conformance(|every| Manifest::new(store.clone(), Path::from("tables/t"), every));
}

#[test]
fn local_files() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    conformance(|every| open(&url, &[], every));
}

#[test]
fn s3_moto() {
    let (_server, port) = start_moto();
    create_bucket(port, "sluice");
    let opts = s3_options(port);
    conformance(|every| open("s3://sluice/tables/t", &opts, every));
}

#[test]
fn azure_azurite() {
    let (_server, port, _dir) = start_azurite();
    azure_container(port, "sluice");
    let opts = azure_options(port);
    conformance(|every| open("az://sluice/tables/t", &opts, every));
}

/// The loader itself into S3: a real broker, a moto bucket, then `sluice verify`, and the
/// Delta table read from S3 by deltalake and polars (DuckDB reads S3 through httpfs, which
/// cannot be installed offline).
#[test]
fn loader_into_s3() {
    let (_server, port) = start_moto();
    create_bucket(port, "lake");
    let mut f = common::Fixture::new("s3", 2);
    let mut job = f
        .job_file("table")
        .set("storage", "url", "s3://lake/payments");
    for (k, v) in s3_options(port) {
        job = job.set("storage.options", &k, v);
    }
    f.write("table", &job);
    f.produce(common::spec(0, 5_000));
    let stats = f.run_once_ok();
    assert_eq!(common::n(&stats, "rows"), 5_000);
    let report = f.cli_json(&["verify", "--json"]);
    assert_eq!(report["rows"], 5_000);
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);
    assert_eq!(report["delta"]["behind"], 0, "{}", report["delta"]);
    assert_eq!(report["delta"]["files"], report["data_files"]);
    let endpoint = format!("http://127.0.0.1:{port}");
    for engine in ["deltalake", "polars"] {
        let r = common::read_delta("s3://lake/payments", engine, &["--s3-endpoint", &endpoint]);
        assert_eq!(common::n(&r, "rows"), 5_000, "{engine} on S3: {r}");
        assert_eq!(common::n(&r, "distinct_offsets"), 5_000, "{engine}: {r}");
        assert_eq!(common::n(&r, "distinct_ids"), 5_000, "{engine}: {r}");
        assert_eq!(
            common::n(&r, "version") as u64 + 1,
            f.state().seq,
            "{engine}: {r}"
        );
    }
    // The Iceberg metadata on S3: every path in it is an s3:// URL pyiceberg reads.
    assert_eq!(report["iceberg"]["behind"], 0, "{}", report["iceberg"]);
    assert_eq!(report["iceberg"]["files"], report["data_files"]);
    let r = common::read_iceberg(
        "s3://lake/payments",
        "pyiceberg",
        &["--s3-endpoint", &endpoint],
    );
    assert_eq!(common::n(&r, "rows"), 5_000, "pyiceberg on S3: {r}");
    assert_eq!(common::n(&r, "distinct_offsets"), 5_000, "pyiceberg: {r}");
    assert_eq!(common::n(&r, "distinct_ids"), 5_000, "pyiceberg: {r}");
    assert_eq!(
        common::n(&r, "version"),
        f.iceberg_current().0,
        "pyiceberg: {r}"
    );
    let files = f.cli(&["files"]);
    let listed = String::from_utf8_lossy(&files.stdout);
    assert!(
        listed
            .lines()
            .all(|l| l.starts_with("s3://lake/payments/date=")),
        "{listed}"
    );
}
