//! Operating the loader: `status` against the broker, the metrics endpoint, progress, logs.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

#[test]
fn status_agrees_with_the_broker_and_the_manifest() {
    let mut f = Fixture::new("status", 3);
    f.write_job("table", "[commit]\ncheckpoint_every = 1\n");
    f.produce(spec(0, 3_000));
    f.run_once_ok();
    f.produce(spec(3_000, 600));
    let st = f.cli_json(&["status", "--json"]);
    assert_eq!(st["rows"], 3_000, "{st}");
    assert_eq!(st["lag"], 600, "{st}");
    assert_eq!(st["manifest_version"], 1);
    assert_eq!(
        st["checkpoint"], 1,
        "the state is read from the checkpoint: {st}"
    );
    for p in st["partitions"].as_array().unwrap() {
        assert_eq!(p["committed_through"], 1_000, "{p}");
        assert_eq!(p["high_watermark"], 1_200, "{p}");
        assert_eq!(p["lag"], 200, "{p}");
        assert_eq!(p["rows"], 1_000, "{p}");
        assert!(
            p["last_commit"].is_string() && p["max_event_time"].is_string(),
            "{p}"
        );
    }
    assert!(
        st["complete_through"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-24T02:"),
        "{st}"
    );
    // The human view says the same.
    let out = f.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lag 600") && text.contains("checkpoint 1"),
        "{text}"
    );
}

#[test]
fn metrics_count_what_was_loaded() {
    let mut f = Fixture::new("metrics", 2);
    // Loader entries only (the background compaction's are counted apart).
    f.write_job(
        "table",
        "[commit]\ninterval = \"1s\"\n[compaction]\nenabled = false\n",
    );
    f.produce(GenSpecExt::with_malformed(spec(0, 6_000), 10));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(f.dir.path().join("run.log")).unwrap();
    let child = f
        .sluice()
        .args([
            "run",
            "--log-format",
            "json",
            "--metrics-addr",
            &addr,
            "--job",
        ])
        .arg(&f.job)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    f.wait_for(60, "all events", |s| {
        s.partitions
            .iter()
            .map(|p| p.rows + p.dead_letters)
            .sum::<u64>()
            >= 6_000
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    let s = f.state();
    let rows: u64 = s.partitions.iter().map(|p| p.rows).sum();
    let dead: u64 = s.partitions.iter().map(|p| p.dead_letters).sum();
    assert_eq!(
        metric(&body, "sluice_rows_loaded_total"),
        rows as f64,
        "{body}"
    );
    assert_eq!(
        metric(&body, "sluice_dead_letters_total"),
        dead as f64,
        "{body}"
    );
    assert_eq!(
        metric(&body, "sluice_events_consumed_total"),
        6_000.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "sluice_commits_total"),
        s.seq as f64,
        "{body}"
    );
    assert_eq!(
        metric(&body, "sluice_files_total"),
        (s.files.len() + s.dead_letters.len()) as f64,
        "{body}"
    );
    assert_eq!(
        metric(&body, "sluice_commit_seconds_count"),
        s.seq as f64,
        "{body}"
    );
    for p in 0..2 {
        let name = format!(
            "sluice_committed_offset{{topic=\"{}\",partition=\"{p}\"}}",
            f.topic
        );
        assert_eq!(metric(&body, &name), 3_000.0, "{body}");
        let name = format!(
            "sluice_lag_messages{{topic=\"{}\",partition=\"{p}\"}}",
            f.topic
        );
        assert_eq!(metric(&body, &name), 0.0, "{body}");
    }
    assert_eq!(http_get(&addr, "/nope").0, 404);
    sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
    // JSON logs: one object a line.
    let log = f.log("run.log");
    let committed: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["fields"]["message"] == "committed")
        .collect();
    assert_eq!(committed.len() as u64, s.seq, "{log}");
}

#[test]
fn once_logs_progress_without_a_terminal() {
    let f = Fixture::new("progress", 2);
    f.produce(spec(0, 2_000));
    let out = f.run_once(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    let last = err
        .lines()
        .rfind(|l| l.contains("progress"))
        .unwrap_or_default();
    assert!(
        last.contains("done=2000") && last.contains("total=2000"),
        "{err}"
    );
}
