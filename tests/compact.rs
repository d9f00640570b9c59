//! `sluice compact`: a window's small files merged into files near the target size, with the
//! same rows (an independent reader's multiset digest), their lineage recorded, the Delta log
//! showing it as a data-less rewrite; a replace still works on compacted data.

mod common;

use std::process::Output;

use common::*;

fn ok(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The last Delta commit's actions.
fn last_delta_commit(f: &Fixture) -> Vec<serde_json::Value> {
    let dir = f.job_table_dir().join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let body = std::fs::read_to_string(commits.last().unwrap()).unwrap();
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn compaction_merges_hundreds_of_small_files_into_target_sized_ones_with_the_same_rows() {
    let mut f = Fixture::new("compact", 8);
    f.write_job(
        "table",
        "[commit]\ninterval = \"1s\"\n[compaction]\ntarget_size = \"256KiB\"\n",
    );
    // A continuous loader committing every second while events trickle in: one small file
    // per partition per commit. Half an hour of event time (some events up to 20 minutes
    // late): one window gets nearly all of them.
    let child = f.spawn_run("run.log");
    let (batches, per) = (120u64, 500u64);
    let count = batches * per;
    for i in 0..batches {
        f.produce(sluice::ops::generate::GenSpec {
            start_ms: 1_795_478_400_000 + (i * 15_000) as i64,
            span_ms: 15_000,
            seed: i,
            ..spec(i * per, per)
        });
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    f.wait_for(60, "every event", |s| committed_rows(s) >= count);
    sigterm(&child);
    child.wait_with_output().unwrap();
    let before = f.read();
    assert_exactly_once(&before, count as i64, 0);
    let files_before = n(&before, "files");
    assert!(files_before >= 200, "{before}");

    // A dry run changes nothing.
    let plans = ok(f.cli(&["compact", "--dry-run"]));
    assert!(!plans.as_array().unwrap().is_empty(), "{plans}");
    assert_eq!(f.state().files.len() as i64, files_before);

    let done = ok(f.cli(&["compact"]));
    let windows = done.as_array().unwrap();
    assert!(!windows.is_empty(), "{done}");
    assert!(windows.iter().all(|w| w["refused"].is_null()), "{done}");
    let after = f.read();
    assert_exactly_once(&after, count as i64, 0);
    assert_eq!(
        after["content_hash"], before["content_hash"],
        "{before} {after}"
    );
    let files_after = n(&after, "files");
    assert!(
        files_after * 20 < files_before,
        "{files_before} files became {files_after}"
    );
    // Every compacted file records its lineage, and is near the target size: at least half of
    // it, except one last file per window.
    let state = f.state();
    let compacted: Vec<_> = state.files.iter().filter(|f| !f.spans.is_empty()).collect();
    assert!(!compacted.is_empty());
    let target = 256 * 1024;
    let small = compacted.iter().filter(|f| f.bytes < target / 2).count();
    assert!(
        small <= windows.len(),
        "{small} compacted files under half the target: {:?}",
        compacted.iter().map(|f| f.bytes).collect::<Vec<_>>()
    );
    assert!(compacted.iter().all(|f| f.bytes < target * 3 / 2));
    assert!(
        compacted.iter().any(|f| f.partition == -1),
        "merged across partitions"
    );
    // The Delta log shows a rewrite: remove + add, no data change.
    let actions = last_delta_commit(&f);
    let info = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert_eq!(info["operation"], "OPTIMIZE");
    let adds: Vec<_> = actions.iter().filter_map(|a| a.get("add")).collect();
    let removes: Vec<_> = actions.iter().filter_map(|a| a.get("remove")).collect();
    assert!(!adds.is_empty() && !removes.is_empty());
    assert!(adds
        .iter()
        .chain(&removes)
        .all(|a| a["dataChange"] == false));
    assert!(adds.iter().all(|a| a["tags"]["sluice.spans"].is_string()));
    // Nothing left to compact.
    let again = ok(f.cli(&["compact"]));
    assert!(again.as_array().unwrap().is_empty(), "{again}");

    // A replace of one partition's offsets on compacted data: the compacted files it touches
    // are swapped out, the rows of the other partitions carried over.
    let out = f.cli(&[
        "backfill",
        "--partition",
        "1",
        "--from",
        "100",
        "--to",
        "300",
        "--replace",
    ]);
    ok(out);
    let replaced = f.read();
    assert_exactly_once(&replaced, count as i64, 0);
    assert_eq!(
        replaced["content_hash"], before["content_hash"],
        "{replaced}"
    );
    let state = f.state();
    assert!(state.files.iter().any(|f| f.path.contains("part-carry-")));
    // And compaction again, over carried and re-derived files.
    ok(f.cli(&["compact", "--target-size", "1MiB"]));
    let last = f.read();
    assert_exactly_once(&last, count as i64, 0);
    assert_eq!(last["content_hash"], before["content_hash"], "{last}");
}
