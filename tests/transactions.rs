//! Transactions, end to end on Apache Kafka: an independent transactional producer
//! (confluent-kafka, tests/txn_producer.py) commits and aborts transactions interleaved with
//! plain writes on the same partitions while continuous loaders are SIGKILLed and scheduled
//! runs race them. Every committed record is loaded once, no aborted one ever; the markers and
//! aborted records are recorded as not records, and `verify --kafka` confirms the broker holds
//! no committed record in any of them. A partition ending in a commit marker reads lag 0; a
//! transaction left open ends a `--once` run at the last stable offset.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Expected rows: the producer's `committed` ids (and nothing it aborted or left open).
fn committed(states: &[(String, String)]) -> Vec<(String, bool)> {
    states
        .iter()
        .filter(|(_, s)| s == "committed")
        .map(|(id, _)| (id.clone(), false))
        .collect()
}

fn not_record_offsets(f: &Fixture) -> u64 {
    let state = f.state();
    let m = sluice::open_manifest(&sluice::config::Job::load(&f.job).unwrap()).unwrap();
    let mut n = 0;
    for seq in 1..=state.seq {
        if let Some(e) = rt().block_on(m.read_entry(seq)).unwrap() {
            n += e.ranges.iter().map(|r| r.not_record_count()).sum::<u64>();
        }
    }
    n
}

#[test]
fn committed_transactions_load_once_aborted_never_while_loaders_die_and_race() {
    let seed = seed("SLUICE_TXN_SEED");
    let mut f = Fixture::new("txn", 3);
    f.write_job("table", "[commit]\ninterval = \"1s\"\nmax_rows = 1500\n");
    let ids = f.dir.path().join("ids.txt");
    let ids_arg = ids.display().to_string();
    let mut producer = txn_producer(
        &f.brokers,
        &f.topic,
        f.partitions,
        &[
            "--count",
            "24000",
            "--rate",
            "3000",
            "--txn-size",
            "60",
            "--seed",
            &seed.to_string(),
            "--marker-last",
            "--out",
            &ids_arg,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // Two continuous loaders, one SIGKILLed and replaced every ~1.5 s; scheduled runs racing.
    let mut loaders: Vec<Child> = (0..2).map(|i| f.spawn_run(&format!("c{i}.log"))).collect();
    let mut spawned = 2;
    let mut onces: Vec<Child> = Vec::new();
    let mut round = 0u64;
    while producer.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1500));
        round += 1;
        let victim = (seed.wrapping_add(round) % 2) as usize;
        let mut dead = loaders.swap_remove(victim);
        dead.kill().unwrap();
        dead.wait().unwrap();
        loaders.push(f.spawn_run(&format!("c{spawned}.log")));
        spawned += 1;
        if round.is_multiple_of(2) {
            onces.push(f.spawn_once(&format!("once{round}.log")));
        }
    }
    let out = producer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for l in &loaders {
        sigterm(l);
    }
    for mut l in loaders {
        l.wait().unwrap();
    }
    for o in onces {
        let out = o.wait_with_output().unwrap();
        assert!(out.status.success(), "a scheduled run failed");
    }
    f.run_once_ok();

    let states = produced_states(&ids);
    let expected = committed(&states);
    let aborted = states.iter().filter(|(_, s)| s == "aborted").count();
    assert!(
        aborted > 1000 && expected.len() > 10_000,
        "{aborted} aborted"
    );
    let r = f.read();
    // The audit first: it names each id missing or doubled (and the counts below follow).
    audit_ids(&f, &expected, &format!("seed {seed}"));
    assert_eq!(n(&r, "rows") as usize, expected.len(), "{r}");
    assert_eq!(n(&r, "distinct_ids"), n(&r, "rows"), "{r}");
    // Markers and aborted records are recorded as not records (each aborted record, and a
    // marker per transaction and partition it wrote to); the broker holds no committed record
    // in any of them.
    let transactions = n(&counts, "transactions") as usize;
    let not_records = not_record_offsets(&f) as usize;
    assert!(
        not_records >= aborted + transactions,
        "{not_records} not records for {aborted} aborted records in {transactions} transactions"
    );
    let v = verify_with_kafka(&f);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(
        v["unrecorded_non_records"].as_array().unwrap().len(),
        0,
        "{v}"
    );
    // Every partition ends with a commit marker: loaded to its end, the lag is 0.
    let st = f.cli_json(&["status", "--json"]);
    for p in st["partitions"].as_array().unwrap() {
        assert_eq!(p["lag"], 0, "{st}");
    }
    assert_eq!(st["lag"], 0, "{st}");
}

#[test]
fn an_open_transaction_ends_a_scheduled_run_at_the_last_stable_offset() {
    let f = Fixture::new("txnopen", 2);
    let ids = f.dir.path().join("ids.txt");
    let ids_arg = ids.display().to_string();
    // Committed and aborted transactions, then one left open (its producer sleeps).
    let (mut producer, _) = txn_producer_open(
        &f,
        &["--count", "3000", "--leave-open", "200", "--out", &ids_arg],
    );

    // The run ends at the last stable offset: it neither waits for the transaction nor loads
    // any of its records.
    let started = Instant::now();
    let stats = f.run_once_ok();
    assert!(started.elapsed() < Duration::from_secs(30));
    let states = produced_states(&ids);
    let expected = committed(&states);
    assert_eq!(n(&stats, "rows") as usize, expected.len(), "{stats}");
    audit_ids(&f, &expected, "with a transaction open");
    // Loaded up to the open transaction's first offset (the marker before it included),
    // nothing past it: the lag is exactly its records.
    let st = f.cli_json(&["status", "--json"]);
    assert_eq!(st["lag"], 200, "{st}");

    // The producer dies; the broker aborts its transaction after the timeout. Records after
    // it load; the open ones never do.
    producer.kill().unwrap();
    producer.wait().unwrap();
    let more = f.dir.path().join("more.txt");
    let more_arg = more.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = txn_producer(
        &f.brokers,
        &f.topic,
        f.partitions,
        &[
            "--first-id",
            "100000",
            "--count",
            "1000",
            "--transactional-id",
            "another",
            "--marker-last",
            "--out",
            &more_arg,
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = expected.clone();
    all.extend(committed(&produced_states(&more)));
    loop {
        f.run_once_ok();
        let st = f.cli_json(&["status", "--json"]);
        if st["lag"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open transaction was never aborted: {st}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    audit_ids(&f, &all, "after the open transaction was aborted");
    let v = verify_with_kafka(&f);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
    f.read();
}

/// A scheduled run that meets a fresh partition whose first records are an open transaction
/// (the end-of-partition event comes at the last stable offset, below the high watermark) must
/// not take the high watermark for the partition's start: once the transaction commits, the
/// next run loads every one of its records.
#[test]
fn a_transaction_open_at_a_fresh_partitions_start_loads_once_it_commits() {
    let f = Fixture::new("txnfirst", 2);
    let ids = f.dir.path().join("ids.txt");
    let ids_arg = ids.display().to_string();
    let (mut producer, mut lines) = txn_producer_open(
        &f,
        &[
            "--count",
            "0",
            "--leave-open",
            "30",
            "--open-seconds",
            "6",
            "--then-commit",
            "--out",
            &ids_arg,
        ],
    );
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 0, "{stats}");
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("\"committed\""), "producer: {line}");
    assert!(producer.wait().unwrap().success());
    let expected: Vec<(String, bool)> = produced_states(&ids)
        .into_iter()
        .map(|(id, _)| (id, false))
        .collect();
    assert_eq!(expected.len(), 30);
    let stats = f.run_once_ok();
    // verify --kafka sees records before a partition's first range (what the old pin skipped).
    let v = verify_with_kafka(&f);
    assert_eq!(v["violations"], serde_json::json!([]), "{v}");
    assert_eq!(n(&stats, "rows"), 30, "{stats}");
    audit_ids(&f, &expected, "after the first transaction committed");
    let st = f.cli_json(&["status", "--json"]);
    assert_eq!(st["lag"], 0, "{st}");
    f.read();
}
