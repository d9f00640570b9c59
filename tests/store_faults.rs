//! The continuous loader against a store that misbehaves as S3 sometimes does. A proxy
//! (tests/support/faulty_s3.py) in front of moto answers some requests 503 SlowDown before
//! they reach the store, drops the connection after others were written (the answer is lost)
//! and answers 500 after others were written. Two continuous loaders, SIGKILLed now and then,
//! and scheduled runs race while a producer writes, 1% of it malformed. No writer may exit
//! because of a store fault, and every id must be in the table exactly once (an audit id by id
//! over a copy of the bucket read straight from moto, not through the proxy).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    audit_ids, create_bucket, python, repo, s3_options, seed, sigterm, spec, start_moto, Fixture,
    Server,
};
use sluice::ops::generate::GenSpec;

const PARTITIONS: i32 = 4;

/// Starts the fault-injecting proxy in front of `upstream`; returns it and its port.
fn start_proxy(upstream: u16, seed: u64, stats: &std::path::Path) -> (Server, u16) {
    let mut child = Command::new(python())
        .arg(repo().join("tests/support/faulty_s3.py"))
        .args([
            "--listen",
            "0",
            "--upstream",
            &format!("127.0.0.1:{upstream}"),
        ])
        .args([
            "--slowdown",
            "0.05",
            "--lost",
            "0.03",
            "--after-500",
            "0.03",
        ])
        .args(["--seed", &seed.to_string(), "--stats"])
        .arg(stats)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("faulty_s3.py announced no port: {line:?}")
    });
    (Server(child), port)
}

/// Copies every object of `bucket` under `prefix` from moto (directly) into `dir`.
fn mirror(moto: u16, bucket: &str, prefix: &str, dir: &std::path::Path) {
    let script = r#"
import os, sys, boto3
from botocore.config import Config
port, bucket, prefix, out = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for o in page.get("Contents", []):
        rel = o["Key"][len(prefix) + 1:]
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, o["Key"], path)
        n += 1
print(n)
"#;
    let out = Command::new(python())
        .args(["-c", script, &moto.to_string(), bucket, prefix])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mirroring the bucket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The continuous loaders; a test that fails leaves none behind.
struct Loaders(Vec<(Child, String)>);

impl Drop for Loaders {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loader that exited on its own (it was not killed by the test) failed.
fn assert_running(child: &mut Child, f: &Fixture, log: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "a continuous loader exited ({status}) though nobody stopped it: {}",
            f.log(log)
        );
    }
}

#[test]
fn a_flaky_store_fails_no_writer_and_every_id_lands_once() {
    let seed = seed("SLUICE_STORE_FAULTS_SEED");
    eprintln!("store faults seed {seed} (SLUICE_STORE_FAULTS_SEED={seed} repeats it)");
    let (_moto, moto) = start_moto();
    create_bucket(moto, "lake");
    let mut f = Fixture::new("flaky", PARTITIONS);
    let stats = f.dir.path().join("proxy-stats.json");
    let (_proxy, port) = start_proxy(moto, seed, &stats);
    let mut job = f
        .job_file("table")
        .set("storage", "url", "s3://lake/payments")
        .merge("[commit]\ninterval = \"1s\"\n");
    for (k, v) in s3_options(port) {
        job = job.set("storage.options", &k, v);
    }
    f.write("table", &job);

    // The producer: 400 events five times a second for 40 s, 1% malformed, every id recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let produced: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let producer = {
        let (stop, produced) = (stop.clone(), produced.clone());
        let (brokers, topic) = (f.brokers.clone(), f.topic.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut first_id = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(40) {
                let tick = Instant::now();
                let spec = GenSpec {
                    partitions: PARTITIONS,
                    malformed_permille: 10,
                    seed: first_id + 1,
                    ..spec(first_id, 400)
                };
                sluice::ops::generate::produce(&brokers, &topic, &spec).unwrap();
                let mut ids = Vec::new();
                sluice::ops::generate::generate(&spec, |r| ids.push((r.key, r.malformed)));
                produced.lock().unwrap().extend(ids);
                first_id += 400;
                std::thread::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed()));
            }
        })
    };

    // Two continuous loaders; every 3 s, in turn, one of them is SIGKILLed and replaced, or a
    // scheduled run races them (and must succeed).
    let mut loaders = Loaders(
        (0..2)
            .map(|i| {
                let log = format!("run-{i}.log");
                (f.spawn_run(&log), log)
            })
            .collect(),
    );
    let (mut kills, mut scheduled, mut round) = (0, 0, 0);
    while !producer.is_finished() {
        std::thread::sleep(Duration::from_secs(3));
        for (child, log) in loaders.0.iter_mut() {
            assert_running(child, &f, log);
        }
        round += 1;
        if round % 2 == 1 {
            let victim = kills % 2;
            let _ = loaders.0[victim].0.kill();
            let _ = loaders.0[victim].0.wait();
            let log = format!("run-{}.log", kills + 2);
            loaders.0[victim] = (f.spawn_run(&log), log);
            kills += 1;
        } else {
            let log = format!("once-{scheduled}.log");
            let out = f.spawn_once(&log).wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "a scheduled run failed: {}",
                f.log(&log)
            );
            scheduled += 1;
        }
    }
    producer.join().unwrap();

    // Stopped on request, each loader commits what it holds and exits cleanly; a last
    // scheduled run loads what is left.
    // (A loader replaced in the last round may not have put its signal handlers in place yet:
    // it logs `starting` once it has.)
    for (child, log) in loaders.0.iter_mut() {
        f.wait_log(log, "starting", 30);
        assert_running(child, &f, log);
        sigterm(child);
    }
    for (mut child, log) in std::mem::take(&mut loaders.0) {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "a loader stopped with {status}: {}",
            f.log(&log)
        );
    }
    let out = f.run_once(None);
    assert!(
        out.status.success(),
        "the last scheduled run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let retried: usize = (0..kills + 2)
        .map(|i| {
            f.log(&format!("run-{i}.log"))
                .matches("commit failed")
                .count()
        })
        .sum();
    eprintln!("commits retried after a store fault outlasted the store's retries: {retried}");

    // The faults happened.
    let faults: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    eprintln!("seed {seed}: {kills} kills, {scheduled} scheduled runs; proxy: {faults}");
    for kind in ["slowdown", "lost", "after_500"] {
        assert!(
            faults[kind].as_u64().unwrap_or(0) > 0,
            "no `{kind}` fault was injected: {faults}"
        );
    }

    // The audit, over a copy of the bucket read from moto itself.
    let copy = f.dir.path().join("copy");
    mirror(moto, "lake", "payments", &copy);
    let url = url::Url::from_directory_path(&copy).unwrap();
    let local = f.job_file("copy").set("storage", "url", url.to_string());
    f.write("copy", &local);
    let produced = produced.lock().unwrap().clone();
    let audit = audit_ids(&f, &produced, &format!("store faults seed {seed}"));
    eprintln!("audit: {audit}");
    let report = f.cli_json(&["verify", "--json"]);
    assert_eq!(
        report["violations"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}
