//! `sluice backfill`: filling history, refusing overlaps, atomic replace, sandboxes.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

fn backfill(f: &Fixture, args: &[&str]) -> Output {
    f.cli(&[&["backfill"], args].concat())
}

fn ok(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A table whose loader started at the latest offset, after `history` events per partition.
fn started_at_latest(name: &str, history: u64) -> (Fixture, std::process::Child) {
    let mut f = Fixture::new(name, 4);
    let job = f
        .job_file("table")
        .set("source", "start_offset", "latest")
        .set("commit", "interval", "1s");
    f.write("table", &job);
    f.produce(spec(0, history * 4));
    let child = f.spawn_run("run.log");
    f.wait_log("run.log", "assigned", 60);
    std::thread::sleep(Duration::from_secs(1));
    (f, child)
}

#[test]
fn backfill_fills_the_history_of_a_table_started_at_latest_while_the_loader_runs() {
    let (f, child) = started_at_latest("hole", 2_500);
    f.produce(spec(10_000, 8_000));
    f.wait_for(60, "the live events", |s| committed_rows(s) >= 8_000);
    // The history is missing. Where each partition's table starts depends on the broker's
    // idea of "latest" at the moment the loader started, so ask the manifest.
    let state = f.state();
    let starts: Vec<(i32, i64)> = state
        .partitions
        .iter()
        .map(|p| (p.partition, p.ranges[0].0))
        .collect();
    assert_eq!(starts.len(), 4);
    let (p0, s0) = starts[0];
    let (p0s, over) = (p0.to_string(), (s0 + 500).to_string());
    // An overlapping backfill is refused, naming the offsets.
    let out = backfill(&f, &["--partition", &p0s, "--from", "0", "--to", &over]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("[{s0}, {over})")) && err.contains("already loaded"),
        "{err}"
    );
    // A dry run changes nothing.
    let seq = f.state().seq;
    let plan = ok(backfill(
        &f,
        &[
            "--partition",
            &p0s,
            "--from",
            "0",
            "--to",
            &s0.to_string(),
            "--dry-run",
        ],
    ));
    assert_eq!(plan["ranges"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(f.state().seq, seq);
    // Fill the history while the continuous loader keeps appending.
    f.produce(spec(18_000, 2_000));
    let mut filled = 0;
    for (p, start) in &starts {
        let stats = ok(backfill(
            &f,
            &[
                "--partition",
                &p.to_string(),
                "--from",
                "0",
                "--to",
                &start.to_string(),
            ],
        ));
        filled += n(&stats, "rows");
    }
    assert_eq!(filled, starts.iter().map(|s| s.1).sum::<i64>());
    f.produce(spec(20_000, 2_000));
    f.wait_for(60, "everything", |s| committed_rows(s) >= 22_000);
    sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
    let r = f.read();
    assert_exactly_once(&r, 22_000, 0);
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, 21_999));
    // Everything is loaded now: another backfill of the history is refused.
    assert!(!backfill(&f, &["--from", "0", "--to", "100"])
        .status
        .success());
}

#[test]
fn replace_swaps_files_atomically_while_readers_query() {
    let mut f = Fixture::new("replace", 4);
    // A Delta checkpoint every two versions: every reader below opens the table from one.
    f.write_job(
        "table",
        "[commit]\nmax_rows = 4000\n[delta]\ncheckpoint_every = 2\n",
    );
    f.produce(spec(0, 20_000));
    f.run_once_ok();
    let before = f.state();
    let old_files: Vec<String> = before.files.iter().map(|x| x.path.clone()).collect();

    // A reader querying in a loop while the replace runs: it must see exactly 20k distinct
    // ids every time (never both the old and new files, never neither).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let job = f.job.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 3 {
                let r = read_table(&job);
                assert_eq!(n(&r, "rows"), 20_000, "a reader saw {r}");
                assert_eq!(n(&r, "distinct_ids"), 20_000, "a reader saw {r}");
                reads += 1;
            }
            reads
        })
    };
    // And an analyst on the Delta log (deltalake), reading the latest version in a loop.
    let table = f.job_table_dir().display().to_string();
    let done = f.dir.path().join("replace-done");
    let delta_reader = {
        let (table, done) = (table.clone(), done.display().to_string());
        std::thread::spawn(move || read_delta_lines(&table, "deltalake", &["--loop-until", &done]))
    };
    // And one on the Iceberg table (pyiceberg).
    let iceberg_reader = {
        let (table, done) = (table.clone(), done.display().to_string());
        std::thread::spawn(move || {
            read_iceberg_lines(&table, "pyiceberg", &["--loop-until", &done])
        })
    };
    let stats = ok(backfill(
        &f,
        &["--from", "0", "--to", "latest", "--replace"],
    ));
    assert_eq!(n(&stats, "rows"), 20_000, "{stats}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads >= 3);
    std::fs::write(&done, "").unwrap();
    let delta_reads = delta_reader.join().unwrap();
    let iceberg_reads = iceberg_reader.join().unwrap();
    assert!(iceberg_reads.len() >= 2, "{iceberg_reads:?}");
    for r in &iceberg_reads {
        assert_eq!(n(r, "rows"), 20_000, "an Iceberg reader saw {r}");
        assert_eq!(n(r, "distinct_ids"), 20_000, "an Iceberg reader saw {r}");
    }
    assert!(delta_reads.len() >= 2, "{delta_reads:?}");
    for r in &delta_reads {
        assert_eq!(n(r, "rows"), 20_000, "a Delta reader saw {r}");
        assert_eq!(n(r, "distinct_ids"), 20_000, "a Delta reader saw {r}");
        assert_eq!((n(r, "id_min"), n(r, "id_max")), (0, 19_999), "{r}");
    }
    let last = delta_reads.last().unwrap();
    assert_eq!(
        n(last, "version") as u64,
        before.seq,
        "the last read is the replace's version"
    );

    let after = f.state();
    assert_eq!(after.seq, before.seq + 1, "a replace is one entry");
    assert!(
        after.files.iter().all(|x| !old_files.contains(&x.path)),
        "old files still listed"
    );
    assert_exactly_once(&f.read(), 20_000, 0);
    assert!(
        f.job_table_dir()
            .join("_delta_log/_last_checkpoint")
            .exists(),
        "no Delta checkpoint was written"
    );
    // Time travel: Delta version N is the table after manifest entry N + 1, file for file
    // (versions past a checkpoint are read from it).
    let job = sluice::config::Job::load(&f.job).unwrap();
    let m = sluice::open_manifest(&job).unwrap();
    let mut state = sluice::table::state::TableState::default();
    for seq in 1..=after.seq {
        state
            .apply(&rt().block_on(m.read_entry(seq)).unwrap().unwrap())
            .unwrap();
        let version = (seq - 1).to_string();
        let r = read_delta(&table, "deltalake", &["--version", &version]);
        let mut want: Vec<String> = state.files.iter().map(|x| x.path.clone()).collect();
        want.sort();
        assert_eq!(r["files"], serde_json::json!(want), "version {version}");
        assert_eq!(
            n(&r, "rows") as u64,
            committed_rows(&state),
            "version {version}: {r}"
        );
    }
    // The same through Iceberg: every kept snapshot is the table after its entry, file for
    // file (the replace's snapshot an `overwrite`).
    let states = f.states();
    let snapshots = f.iceberg_snapshots();
    assert_eq!(snapshots.len(), states.len());
    for (seq, id) in snapshots {
        let s = &states[seq as usize - 1];
        let mut want: Vec<String> = s.files.iter().map(|x| x.path.clone()).collect();
        want.sort();
        let r = read_iceberg(&table, "pyiceberg", &["--snapshot", &id.to_string()]);
        assert_eq!(
            r["files"],
            serde_json::json!(want),
            "Iceberg snapshot of entry {seq}"
        );
        assert_eq!(n(&r, "rows") as u64, committed_rows(s), "entry {seq}: {r}");
    }
    // Partition pruning: a query on one hour opens that window's files only (DuckDB's own
    // file-system log), and counts that window's rows.
    let mut hour1: Vec<String> = after
        .files
        .iter()
        .filter(|x| x.path.starts_with("date=2026-11-24/hour=01/"))
        .map(|x| x.path.clone())
        .collect();
    hour1.sort();
    assert!(!hour1.is_empty() && hour1.len() < after.files.len());
    let rows1: u64 = after
        .files
        .iter()
        .filter(|x| hour1.contains(&x.path))
        .map(|x| x.rows)
        .sum();
    for engine in ["duckdb", "deltalake"] {
        let r = read_delta(
            &table,
            engine,
            &["--where", "date = '2026-11-24' AND hour = 1"],
        );
        assert_eq!(r["files"], serde_json::json!(hour1), "{engine} pruned: {r}");
        assert_eq!(n(&r, "rows") as u64, rows1, "{engine}: {r}");
    }
    let r = read_delta(
        &table,
        "polars",
        &["--where", "date = '2026-11-24' AND hour = 1"],
    );
    assert_eq!(
        n(&r, "files_scanned") as usize,
        hour1.len(),
        "polars pruned: {r}"
    );
    // The replaced files are out of the manifest, but Delta time travel still reads them (and
    // the Iceberg snapshots the metadata keeps list them): gc keeps them for the retention
    // period, and deletes them once it is zero and the table keeps no Iceberg metadata.
    let gc = f.cli(&["gc", "--dry-run", "--older-than", "0s"]);
    let gc = String::from_utf8_lossy(&gc.stdout);
    assert!(old_files.iter().all(|p| !gc.contains(p.as_str())), "{gc}");
    assert!(
        gc.contains(&format!(
            "{} files out of the manifest but readable by Delta time travel",
            old_files.len()
        )),
        "{gc}"
    );
    let job = f
        .job_file("table")
        .merge("[commit]\nmax_rows = 4000\n[delta]\ncheckpoint_every = 2\nretention = \"0s\"\n[iceberg]\nenabled = false\n")
        .without("iceberg", "catalog");
    f.write("table", &job);
    let gc = f.cli(&["gc", "--dry-run", "--older-than", "0s"]);
    let gc = String::from_utf8_lossy(&gc.stdout);
    assert!(old_files.iter().all(|p| gc.contains(p.as_str())), "{gc}");
}

#[test]
fn backfill_to_a_sandbox_table_leaves_the_main_table_alone() {
    let mut f = Fixture::new("sandbox", 2);
    f.write_job("table", "");
    f.produce(spec(0, 4_000));
    f.run_once_ok();
    let seq = f.state().seq;
    let sandbox = f.table_dir("sandbox");
    let stats = ok(backfill(
        &f,
        &[
            "--from",
            "0",
            "--to",
            "1000",
            "--to-table",
            sandbox.to_str().unwrap(),
        ],
    ));
    assert_eq!(n(&stats, "rows"), 2_000);
    assert_eq!(f.state().seq, seq);
    assert_exactly_once(&f.read(), 4_000, 0);
    // The sandbox is a table of its own.
    let mut g = f;
    let job = g.write_job("sandbox", "");
    assert_eq!(job, g.job);
    let report = g.cli_json(&["verify", "--json"]);
    assert_eq!(report["rows"], 2_000, "{report}");
}
