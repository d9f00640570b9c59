//! Closed windows: a window closes only when every partition's watermark has passed its end;
//! records that arrive for it later follow `window.late_records`; `sluice wait` and the
//! marker objects tell schedulers; an idle partition holds no window open; a continuous
//! loader compacts each window when it closes.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sluice::ops::generate::GenSpec;

const DAY: i64 = 1_795_478_400_000; // 2026-11-24T00:00:00Z
const MIN: i64 = 60_000;

/// `count` events on one partition, event times spread evenly from `from_min` minutes after
/// midnight over `span_min` minutes, in order.
fn events(f: &Fixture, partition: i32, first_id: u64, count: u64, from_min: i64, span_min: i64) {
    produce_to(
        &f.topic,
        partition,
        GenSpec {
            first_id,
            count,
            start_ms: DAY + from_min * MIN,
            span_ms: (span_min * MIN).max(1),
            disorder_permille: 0,
            ..Default::default()
        },
    );
}

fn sluice(job: &PathBuf, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--job")
        .arg(job)
        .output()
        .unwrap()
}

fn once(job: &PathBuf) -> Output {
    sluice(job, &["run", "--once"])
}

fn once_ok(job: &PathBuf) {
    let out = once(job);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sluice wait` on window `hh:00` of the test day; its exit code.
fn wait(job: &PathBuf, hour: i64, timeout: &str) -> i32 {
    let at = format!("2026-11-24T{hour:02}:00:00Z");
    let out = sluice(
        job,
        &[
            "wait",
            "--window-closed",
            &at,
            "--timeout",
            timeout,
            "--poll",
            "200ms",
        ],
    );
    out.status.code().unwrap_or(-1)
}

fn marker(f: &Fixture, table: &str, hour: i64) -> PathBuf {
    f.table_dir(table)
        .join(format!("_sluice/closed/2026-11-24T{hour:02}:00:00Z.json"))
}

#[test]
fn windows_close_when_every_partition_passed_them_and_late_records_follow_the_policy() {
    let mut f = Fixture::new("close", 2);
    let closing = "allowed_lateness = \"0s\"\nidle_timeout = \"1h\"\n";
    let mut jobs = Vec::new();
    for (table, policy) in [("load", "load"), ("dead", "dead_letter"), ("fail", "fail")] {
        let job = f.write_job(
            table,
            &format!(
                "[window]\n{closing}late_records = \"{policy}\"\n[compaction]\nenabled = false\n"
            ),
        );
        jobs.push(job);
    }
    let (load, dead, fail) = (&jobs[0], &jobs[1], &jobs[2]);
    let all = |f: &Fixture| {
        for j in &jobs {
            once_ok(j);
        }
        let _ = f;
    };

    // Partition 0 reaches 02:30, partition 1 only 00:50: no window is closed.
    events(&f, 0, 0, 300, 0, 150);
    events(&f, 1, 300, 100, 0, 50);
    all(&f);
    assert_eq!(
        wait(load, 0, "1s"),
        2,
        "window 00:00 must not be closed yet"
    );
    assert!(!marker(&f, "load", 0).exists());

    // Partition 1 reaches 02:10: windows 00:00 and 01:00 close, 02:00 does not.
    events(&f, 1, 400, 100, 60, 70);
    all(&f);
    for j in &jobs {
        assert_eq!(wait(j, 0, "5s"), 0);
        assert_eq!(wait(j, 1, "5s"), 0);
        assert_eq!(wait(j, 2, "1s"), 2);
    }
    assert!(marker(&f, "load", 0).exists() && marker(&f, "load", 1).exists());
    assert!(!marker(&f, "load", 2).exists());
    f.job = load.clone();
    let st = f.cli_json(&["status", "--json"]);
    assert_eq!(st["closed_through"], "2026-11-24T02:00:00.000Z", "{st}");
    for p in st["partitions"].as_array().unwrap() {
        assert!(p["watermark"].is_string(), "{p}");
    }

    // A record for window 00:00 after it closed, on partition 0.
    events(&f, 0, 500, 1, 30, 0);
    // load: a late addition in its window's folder.
    once_ok(load);
    let st = f.cli_json(&["status", "--json"]);
    assert_eq!(
        st["late_windows"][0]["window_start"], "2026-11-24T00:00:00.000Z",
        "{st}"
    );
    assert_eq!(st["late_windows"][0]["rows"], 1, "{st}");
    assert_eq!(st["partitions"][0]["late_rows"], 1, "{st}");
    let late: Vec<_> = f.state().files.into_iter().filter(|x| x.late).collect();
    assert_eq!((late.len(), late[0].rows), (1, 1));
    assert!(
        late[0].path.starts_with("date=2026-11-24/hour=00/"),
        "{}",
        late[0].path
    );
    assert_exactly_once(&f.read(), 501, 0);
    // dead_letter: the record is a dead letter saying why.
    once_ok(dead);
    f.job = dead.clone();
    let r = f.read();
    assert_exactly_once(&r, 501, 1);
    let files = f.cli_json(&["files", "--json", "--dead-letters"]);
    assert!(files.to_string().contains("\"offsets\""), "{files}");
    // fail: the run stops, naming the record; nothing of it is loaded.
    let out = once(fail);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("late record") && err.contains("offset 300"),
        "{err}"
    );
    f.job = fail.clone();
    assert_eq!(committed_rows(&f.state()), 500);

    // `wait` returns when the window closes: started before, it sees the closing entry.
    let waiting = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "wait",
            "--window-closed",
            "2026-11-24T02:30:00Z",
            "--timeout",
            "60s",
            "--poll",
            "100ms",
            "--job",
        ])
        .arg(load)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    events(&f, 0, 600, 10, 190, 5);
    events(&f, 1, 610, 10, 190, 5);
    once_ok(load);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(marker(&f, "load", 2).exists());

    // The marker is written only after the closing entry: a loader that dies in between
    // leaves the entry without its marker, and the next one writes it.
    once_ok(dead);
    f.job = dead.clone();
    // Close 03:00 for `dead`, with a crash between its entry and its markers.
    events(&f, 0, 700, 10, 250, 5);
    events(&f, 1, 710, 10, 250, 5);
    let out = f.run_once(Some("before-markers"));
    assert!(!out.status.success(), "the failpoint must abort the run");
    let s = f.state();
    assert!(
        s.closed_through_ms.unwrap() >= DAY + 4 * 60 * MIN,
        "{:?}",
        s.closed_through_ms
    );
    assert!(
        !marker(&f, "dead", 3).exists(),
        "a marker before its entry was complete"
    );
    once_ok(dead);
    assert!(marker(&f, "dead", 3).exists());
    f.assert_clean();
}

#[test]
fn an_idle_partition_holds_no_window_open_and_closed_windows_are_compacted() {
    let mut f = Fixture::new("idle", 2);
    f.write_job(
        "table",
        "[window]\nallowed_lateness = \"0s\"\nidle_timeout = \"10s\"\n[commit]\ninterval = \"1s\"\n",
    );
    let child = f.spawn_run("run.log");
    // Partition 1 gets nothing. Partition 0 gets window 00:00 in several commits (small files).
    for i in 0..5u64 {
        events(&f, 0, i * 100, 100, i as i64 * 10, 10);
        std::thread::sleep(Duration::from_millis(1200));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = f.state();
        let closed = s.closed_through_ms.unwrap_or(i64::MIN) >= DAY + 60 * MIN;
        let compacted = s.files.iter().any(|x| !x.spans.is_empty());
        if closed && compacted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed {:?}, files {}: {}",
            s.closed_through_ms,
            s.files.len(),
            f.log("run.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(marker(&f, "table", 0).exists());
    sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
    let s = f.state();
    let window0: Vec<_> = s
        .files
        .iter()
        .filter(|x| x.window_start_ms == DAY)
        .collect();
    assert_eq!(window0.len(), 1, "window 00:00 compacted into one file");
    let r = f.read();
    assert_exactly_once(&r, 500, 0);
}

#[test]
fn an_event_stamped_in_the_future_closes_no_window_past_the_clock() {
    let mut f = Fixture::new("future", 2);
    f.write_job(
        "table",
        "[window]\nallowed_lateness = \"0s\"\nidle_timeout = \"1h\"\n",
    );
    // Both partitions: an hour of events, one of them stamped in 2099.
    let year_2099 = 4_070_908_800_000i64; // 2099-01-01T00:00:00Z
    for p in 0..2 {
        events(&f, p, p as u64 * 100, 99, 0, 60);
        produce_to(
            &f.topic,
            p,
            GenSpec {
                first_id: 1_000 + p as u64,
                count: 1,
                start_ms: year_2099,
                span_ms: 1,
                disorder_permille: 0,
                ..Default::default()
            },
        );
    }
    f.run_once_ok();
    let now = chrono::Utc::now().timestamp_millis();
    let closed = f.state().closed_through_ms.unwrap();
    assert!(
        closed <= now,
        "closed through {closed}, after the clock {now}"
    );
    // The test day's windows are closed (by the clock), 2099's are not.
    assert_eq!(wait(&f.job, 0, "5s"), 0);
    let out = f.cli(&[
        "wait",
        "--window-closed",
        "2099-01-01T00:00:00Z",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_exactly_once(&f.read(), 200, 0);
}
