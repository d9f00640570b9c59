//! Manifest conformance: one suite, run against every storage backend sluice claims —
//! `memory://`, local files, S3 (a local moto server) and Azure Blob (a local Azurite).
//! The servers are started by the tests from `.tools/` (installed by `make test`).

mod common;

use common::{create_bucket, free_port, s3_options, start_moto, tool, wait_port, Server};

use std::process::{Command, Stdio};
use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use sluice::manifest::{Entry, EntryKind, Manifest, OffsetRange};

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
    let out = Command::new(common::python())
        .args([
            "-c",
            "import sys; from azure.storage.blob import BlobServiceClient as B; B.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
            &conn,
            name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
    let (store, root) =
        object_store::parse_url_opts(&url::Url::parse(url).unwrap(), options.iter().cloned())
            .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::from(store);
    Manifest::new(store, root, every)
}

fn entry(partition: i32, from: i64, to: i64) -> Entry {
    Entry {
        format: 1,
        seq: 0,
        kind: EntryKind::Append,
        commit_id: uuid::Uuid::new_v4().to_string(),
        writer: "conformance".into(),
        committed_at_ms: 0,
        ranges: vec![OffsetRange::new("t", partition, from, to)],
        files: vec![],
        dead_letters: vec![],
        removed: vec![],
    }
}

/// The suite every backend must pass.
async fn conformance(open: impl Fn(u64) -> Manifest) {
    // Commits, reload, checkpoints.
    let m = open(3);
    let mut s = m.load().await.unwrap();
    assert_eq!(s.seq, 0, "a new table has no entries");
    for i in 0..7 {
        m.try_commit(&mut s, &mut entry(0, i * 10, i * 10 + 10))
            .await
            .unwrap();
    }
    let reloaded = open(3).load().await.unwrap();
    assert_eq!(reloaded.seq, 7);
    assert_eq!(reloaded.partition("t", 0).unwrap().ranges, vec![(0, 70)]);
    assert_eq!(m.list_checkpoints().await.unwrap(), vec![3, 6]);
    assert_eq!(m.read_checkpoint(6).await.unwrap().unwrap().seq, 6);

    // A stale writer conflicts, then is fenced after re-reading.
    let mut stale = m.read_checkpoint(6).await.unwrap().unwrap();
    let err = m
        .try_commit(&mut stale, &mut entry(0, 60, 65))
        .await
        .unwrap_err();
    assert!(
        matches!(err, sluice::error::ManifestError::Conflict { seq: 7 }),
        "{err}"
    );
    m.refresh(&mut stale).await.unwrap();
    assert_eq!(stale.check_append(&entry(0, 60, 65).ranges).len(), 1);

    // A put whose answer was lost: retrying the same entry finds it and succeeds once.
    let mut e = entry(1, 0, 5);
    let mut a = m.load().await.unwrap();
    let mut b = a.clone();
    m.try_commit(&mut a, &mut e.clone()).await.unwrap();
    m.try_commit(&mut b, &mut e).await.unwrap();
    assert_eq!(a.seq, b.seq);
    assert_eq!(m.load().await.unwrap().seq, a.seq);

    // N racers for one sequence number: exactly one winner, every round.
    for round in 0..5 {
        let base = m.load().await.unwrap();
        let mut tasks = Vec::new();
        for racer in 0..16 {
            let m = open(3);
            let mut s = base.clone();
            tasks.push(tokio::spawn(async move {
                let mut e = entry(100 + racer, round, round + 1);
                m.try_commit(&mut s, &mut e).await.is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as u32;
        }
        assert_eq!(wins, 1, "round {round}: {wins} winners");
        assert_eq!(m.load().await.unwrap().seq, base.seq + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    conformance(|every| Manifest::new(store.clone(), Path::from("tables/t"), every)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_files() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    conformance(|every| open(&url, &[], every)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_moto() {
    let (_server, port) = start_moto();
    create_bucket(port, "sluice");
    let opts = s3_options(port);
    conformance(|every| open("s3://sluice/tables/t", &opts, every)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_azurite() {
    let (_server, port, _dir) = start_azurite();
    azure_container(port, "sluice");
    let opts = azure_options(port);
    conformance(|every| open("az://sluice/tables/t", &opts, every)).await;
}

/// The loader itself into S3: a real broker, a moto bucket, then `sluice verify`.
#[test]
fn loader_into_s3() {
    let (_server, port) = start_moto();
    create_bucket(port, "lake");
    let mut f = common::Fixture::new("s3", 2);
    let opts: String = s3_options(port)
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect();
    f.write_job("table", &format!("[storage.options]\n{opts}"));
    // Point the storage URL at the bucket.
    let text = std::fs::read_to_string(&f.job)
        .unwrap()
        .replace("url = \"table\"", "url = \"s3://lake/payments\"");
    std::fs::write(&f.job, text).unwrap();
    f.produce(common::spec(0, 5_000));
    let stats = f.run_once_ok();
    assert_eq!(common::n(&stats, "rows"), 5_000);
    let report = f.cli_json(&["verify", "--json"]);
    assert_eq!(report["rows"], 5_000);
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);
    let files = f.cli(&["files"]);
    let listed = String::from_utf8_lossy(&files.stdout);
    assert!(
        listed
            .lines()
            .all(|l| l.starts_with("s3://lake/payments/date=")),
        "{listed}"
    );
}
