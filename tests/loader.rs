//! End-to-end tests of the loader against a real Kafka-protocol broker.

mod common;

use std::time::Duration;

use common::*;
use sluice::ops::generate::GenSpec;

#[test]
fn once_loads_every_event_exactly_once_in_its_window() {
    let f = Fixture::new("once", 4);
    // 100k events over 3 hourly windows, 5% of them up to 20 minutes out of order.
    assert_eq!(f.produce(spec(0, 100_000)), 0);
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 100_000, "{stats}");
    let r = f.read();
    assert_exactly_once(&r, 100_000, 0);
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, 99_999));
    assert_eq!(n(&r, "windows"), 3, "{r}");
    let seq = f.state().seq;
    assert!(seq >= 1);

    // Nothing new: nothing written, no manifest entry.
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "commits"), 0, "{stats}");
    assert_eq!(n(&stats, "files"), 0, "{stats}");
    assert_eq!(f.state().seq, seq);

    // 50k more, late: their event times fall in windows that already have files.
    f.produce(GenSpec {
        start_ms: 1_795_478_400_000 + 30 * 60_000,
        ..spec(100_000, 50_000)
    });
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 50_000, "{stats}");
    let r = f.read();
    assert_exactly_once(&r, 150_000, 0);
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, 149_999));
}

#[test]
fn malformed_events_are_dead_lettered_with_their_offsets() {
    let f = Fixture::new("dead", 4);
    let malformed = f.produce(GenSpec {
        malformed_permille: 10,
        ..spec(0, 20_000)
    });
    assert!(
        malformed > 100,
        "the generator made {malformed} malformed events"
    );
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "dead_letters"), malformed as i64, "{stats}");
    let r = f.read();
    assert_exactly_once(&r, 20_000, malformed as i64);
    assert_eq!(n(&r, "dead_without_error_or_payload"), 0, "{r}");
    let s = f.state();
    let dead: u64 = s.partitions.iter().map(|p| p.dead_letters).sum();
    assert_eq!(dead, malformed);
}

#[test]
fn fail_policy_stops_naming_the_record_and_commits_nothing_past_it() {
    let mut f = Fixture::new("fail", 2);
    f.write_job("table", "[bad_records]\npolicy = \"fail\"\n");
    f.produce(GenSpec {
        malformed_permille: 20,
        ..spec(0, 2_000)
    });
    let out = f.run_once(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&f.topic) && err.contains("partition") && err.contains("offset"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(f.state().seq, 0);
}

/// Needs the `failpoints` feature, which `make test` enables (a release build has none).
#[cfg(feature = "failpoints")]
#[test]
fn crash_at_each_commit_step_then_rerun_is_exactly_once() {
    let mut f = Fixture::new("crash", 4);
    f.produce(spec(0, 20_000));
    for (i, point) in [
        "mid-encode:3",
        "after-upload:2",
        "manifest-put:2",
        "after-manifest-put:2",
        "before-group-commit:2",
        "after-iceberg-commit:2",
    ]
    .iter()
    .enumerate()
    {
        let table = format!("t{i}");
        f.write_job(&table, "[commit]\nmax_rows = 3000\n");
        let out = f.run_once(Some(point));
        assert!(!out.status.success(), "{point}: the failpoint did not fire");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("failpoint"),
            "{point}"
        );
        let before = f.state();
        if point.ends_with(":2") && !point.starts_with("mid-encode") {
            assert!(
                before.seq >= 1,
                "{point}: the first commit should have landed"
            );
        }
        let stats = f.run_once_ok();
        assert_eq!(
            n(&stats, "rows") as u64 + committed_rows(&before),
            20_000,
            "{point}: {stats}"
        );
        assert_exactly_once(&f.read(), 20_000, 0);
    }
}

#[test]
fn killed_mid_run_then_rerun_is_exactly_once() {
    let mut f = Fixture::new("kill", 4);
    f.write_job("table", "[commit]\ninterval = \"1s\"\nmax_rows = 4000\n");
    f.produce(spec(0, 60_000));
    let mut child = f.spawn_run("run.log");
    f.wait_for(60, "two commits", |s| s.seq >= 2);
    child.kill().unwrap(); // SIGKILL: no flush, no cleanup
    child.wait().unwrap();
    let loaded = committed_rows(&f.state());
    assert!(loaded < 60_000, "the kill came too late to test anything");
    f.run_once_ok();
    assert_exactly_once(&f.read(), 60_000, 0);
}

#[test]
fn two_processes_in_one_group_one_killed_is_exactly_once() {
    let mut f = Fixture::new("group", 4);
    f.write_job("table", "[commit]\ninterval = \"1s\"\nmax_rows = 5000\n");
    f.produce(spec(0, 40_000));
    let mut a = f.spawn_run("a.log");
    let b = f.spawn_run("b.log");
    f.wait_for(60, "some commits", |s| committed_rows(s) >= 5_000);
    a.kill().unwrap();
    a.wait().unwrap();
    f.produce(spec(40_000, 40_000));
    f.wait_for(90, "all 80k events", |s| committed_rows(s) >= 80_000);
    sigterm(&b);
    let out = b.wait_with_output().unwrap();
    assert!(out.status.success(), "b: {}", f.log("b.log"));
    let r = f.read();
    assert_exactly_once(&r, 80_000, 0);
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, 79_999));
    assert!(f.log("b.log").contains("assigned"));
}

#[test]
fn sigterm_commits_what_is_buffered_and_exits_zero() {
    let mut f = Fixture::new("term", 2);
    f.write_job("table", "[commit]\ninterval = \"10m\"\n");
    f.produce(spec(0, 10_000));
    let child = f.spawn_run("run.log");
    f.wait_log("run.log", "assigned", 60);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        f.state().seq,
        0,
        "nothing is due before the 10-minute interval"
    );
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", f.log("run.log"));
    assert_eq!(committed_rows(&f.state()), 10_000, "{}", f.log("run.log"));
    assert_exactly_once(&f.read(), 10_000, 0);
}

#[test]
fn bad_job_files_get_errors_naming_file_and_key() {
    let mut f = Fixture::new("cfg", 1);
    for (extra, key) in [
        ("[commit]\ninterval = \"100ms\"\n", "commit.interval"),
        ("[commit]\nintervall = \"1s\"\n", "intervall"),
        ("[window]\nsize = \"7m\"\n", "window.size"),
        (
            "[parquet]\ncompression = \"brotli\"\n",
            "parquet.compression",
        ),
    ] {
        let job = f.write_job("table", extra);
        let out = f
            .sluice()
            .args(["run", "--once", "--job"])
            .arg(&job)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(key) && err.contains("table.toml"),
            "{key}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = f
        .sluice()
        .args(["run", "--job", "/nonexistent/job.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/job.toml"));
}

#[test]
fn once_resumes_inside_the_last_batch_without_losing_it() {
    // A crash right after a commit that ended inside the partitions' last record batch: the
    // broker's ListOffsets answer (some brokers answer with the last batch's base offset) is then below the
    // committed end, and the rest of the batch must still be loaded by the next run.
    let mut f = Fixture::new("midbatch", 2);
    f.write_job("table", "[commit]\nmax_rows = 1000\n");
    f.produce(spec(0, 3_000));
    let out = f.run_once(Some("before-group-commit:1"));
    assert!(!out.status.success());
    let loaded = committed_rows(&f.state());
    assert!(loaded > 0 && loaded < 3_000, "{loaded}");
    f.run_once_ok();
    assert_exactly_once(&f.read(), 3_000, 0);
}

#[test]
fn crash_loop_while_producing_is_exactly_once() {
    // SIGKILL the continuous loader at pseudo-random moments while events are produced,
    // restarting it each time; SLUICE_CRASH_LOOPS sets how many kills (default 24).
    let kills: u64 = std::env::var("SLUICE_CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut f = Fixture::new("crashloop", 4);
    f.write_job("table", "[commit]\ninterval = \"1s\"\nmax_rows = 2500\n");
    let per_round = 4_000;
    let mut seed = 0x5eed_u64;
    for round in 0..kills {
        f.produce(GenSpec {
            seed: round + 1,
            ..spec(round * per_round, per_round)
        });
        let mut child = f.spawn_run(&format!("run{round}.log"));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(300 + (seed >> 33) % 2500));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let total = (kills * per_round) as i64;
    f.run_once_ok();
    let r = f.read();
    assert_exactly_once(&r, total, 0);
    // Spark, one session for the run, on both projections of the table after the crashes.
    f.assert_spark_reads_both();
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, total - 1));
}

#[test]
fn once_publishes_no_offset_it_skipped_past_its_target() {
    // A scheduled run loads each partition up to its end as of the start. Records that arrive
    // later are read (librdkafka keeps fetching) but not kept; the end-of-partition event that
    // follows them must not stretch the published range over them. Partition 0 is small and
    // done at once; partition 1 keeps the run busy (a commit every 1,000 rows). The run is
    // paused while 5,000 more records arrive in partition 0, so that it reads them, and their
    // end, while partition 1 still has most of its records to load.
    let mut f = Fixture::new("eofskip", 2);
    f.write_job("table", "[commit]\nmax_rows = 1000\n");
    produce_to(&f.topic, 0, spec(0, 1_000));
    produce_to(&f.topic, 1, spec(1_000, 300_000));
    let run = f
        .sluice()
        .args(["run", "--once", "--job"])
        .arg(&f.job)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &run.id().to_string()])
            .status()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while f.state().partition(&f.topic, 0).and_then(|p| p.end()) != Some(1_000) {
        assert!(
            std::time::Instant::now() < deadline,
            "partition 0 was not loaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal("-STOP");
    let p1 = f.state().partition(&f.topic, 1).and_then(|p| p.end());
    produce_to(&f.topic, 0, spec(301_000, 5_000));
    signal("-CONT");
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        p1.unwrap_or(0) < 200_000,
        "partition 1 was nearly loaded when the run was paused ({p1:?}): the run had no time to read partition 0's new records"
    );
    let s = f.state();
    let p1_end = s.partition(&f.topic, 1).and_then(|p| p.end());
    assert_eq!(
        p1_end,
        Some(300_000),
        "the first run did not load partition 1 to its end"
    );
    // The next run loads what the first one left.
    f.run_once_ok();
    let r = f.read();
    assert_exactly_once(&r, 306_000, 0);
}

#[test]
fn once_with_latest_on_an_empty_table_pins_its_start() {
    // Scheduled runs with start_offset = "latest": the first run finds nothing, but records
    // where each partition stands, so the next run loads what arrived in between.
    let mut f = Fixture::new("pin", 2);
    let job = f.job_file("table").set("source", "start_offset", "latest");
    f.write("table", &job);
    let first = f.run_once_ok();
    assert_eq!(n(&first, "rows"), 0, "{first}");
    let s = f.state();
    assert_eq!(s.partitions.len(), 2, "both partitions pinned: {s:?}");
    assert!(s.partitions.iter().all(|p| p.end() == Some(0)));
    f.produce(spec(0, 1_000));
    let second = f.run_once_ok();
    assert_eq!(n(&second, "rows"), 1_000, "{second}");
    assert_exactly_once(&f.read(), 1_000, 0);
    // Nothing new: nothing published.
    let seq = f.state().seq;
    assert_eq!(n(&f.run_once_ok(), "commits"), 0);
    assert_eq!(f.state().seq, seq);
}
