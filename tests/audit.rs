//! `sluice verify` and `sluice gc` against tables loaded from a real broker.

mod common;

use common::*;

fn verify(f: &Fixture) -> (bool, String) {
    let out = f.cli(&["verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn gc(f: &Fixture, args: &[&str]) -> String {
    let out = f.cli(&[&["gc"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn gc_removes_only_what_crashes_left_and_verify_stays_clean() {
    let mut f = Fixture::new("gc", 4);
    f.write_job("table", "[commit]\nmax_rows = 3000\ncheckpoint_every = 2\n");
    f.produce(common::GenSpecExt::with_malformed(spec(0, 20_000), 5));
    // Crash after uploading the files of the third commit: orphans, no entry.
    assert!(!f.run_once(Some("after-upload:3")).status.success());
    let committed_before = f.state().files.len();
    let on_disk = parquet_files(&f.table_dir("table")).len();
    assert!(on_disk > committed_before, "the crash left no orphan files");
    let (ok, text) = verify(&f);
    assert!(ok, "orphans are not violations: {text}");

    // The default grace period protects young files; --older-than 0s takes them.
    let out = gc(&f, &[]);
    assert!(out.contains(" 0 deleted"), "{out}");
    let out = gc(&f, &["--dry-run", "--older-than", "0s"]);
    assert_eq!(
        parquet_files(&f.table_dir("table")).len(),
        on_disk,
        "a dry run deleted: {out}"
    );
    let out = gc(&f, &["--older-than", "0s"]);
    assert_eq!(
        parquet_files(&f.table_dir("table")).len(),
        committed_before + f.state().dead_letters.len(),
        "{out}"
    );
    // Every committed file is still there, and loading finishes exactly once.
    let (ok, text) = verify(&f);
    assert!(ok, "{text}");
    f.run_once_ok();
    let (ok, text) = verify(&f);
    assert!(ok && text.contains("checkpoints"), "{text}");
    let r = f.read();
    let dead = n(&r, "dead_letters");
    assert!(dead > 0);
    assert_exactly_once(&r, 20_000, dead);
    assert!(gc(&f, &["--older-than", "0s"]).contains(" 0 deleted"));
}

#[test]
fn verify_names_missing_and_damaged_files() {
    let f = Fixture::new("verify", 2);
    f.produce(spec(0, 5_000));
    f.run_once_ok();
    let (ok, text) = verify(&f);
    assert!(ok, "{text}");
    let s = f.state();
    let table = f.table_dir("table");
    let damaged = &s.files[0].path;
    let missing = &s.files[1].path;
    let p = table.join(damaged);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(table.join(missing)).unwrap();
    let (ok, text) = verify(&f);
    assert!(!ok, "{text}");
    assert!(
        text.contains(damaged) && text.contains("size_mismatch"),
        "{text}"
    );
    assert!(
        text.contains(missing) && text.contains("missing_file"),
        "{text}"
    );
}

/// Rewrites the newest manifest entry with `edit` (a hand-made fault).
fn edit_last_entry(f: &Fixture, edit: impl FnOnce(&mut serde_json::Value)) -> u64 {
    let seq = f.state().seq;
    let path = f
        .table_dir("table")
        .join(format!("_sluice/log/{seq:020}.json"));
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut entry);
    std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
    seq
}

#[test]
fn verify_finds_a_range_that_exceeds_its_files_and_asks_kafka_what_it_holds() {
    let f = Fixture::new("holes", 1);
    f.produce(spec(0, 2_000));
    f.run_once_ok();
    let report = f.cli_json(&["verify", "--json"]);
    assert_eq!(
        report["violations"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert_eq!(report["offsets_checked"], 2_000, "{report}");
    let hole = |seq: u64, from: i64, to: i64| {
        format!(
            r#""kind":"hole","seq":{seq},"topic":"{}","partition":0,"from":{from},"to":{to}"#,
            f.topic
        )
    };

    // An entry written before ranges recorded their accounting, claiming 30 offsets past the
    // partition's end: the count check cannot see it (rows do not exceed the range), the
    // offset check does; Kafka holds no record there, so they are no loss.
    let mut records = serde_json::Value::Null;
    let seq = edit_last_entry(&f, |e| {
        let r = e["ranges"][0].as_object_mut().unwrap();
        records = r.remove("records").unwrap();
        r.insert("to".into(), 2_030.into());
    });
    let out = f.cli(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("unaccounted"), "{text}");
    assert!(text.contains(&hole(seq, 2_000, 2_030)), "{text}");
    let out = f.cli(&["verify", "--kafka"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("offsets [2000, 2030) of entry") && text.contains("hold no record in Kafka"),
        "{text}"
    );

    // Kafka now has records there: the same hole is a loss.
    f.produce(spec(2_000, 100));
    let out = f.cli(&["verify", "--kafka"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(r#""kind":"lost""#) && text.contains(r#""from":2000,"to":2030,"records":30"#),
        "{text}"
    );

    // An entry as the bug of issue 9 wrote it: a range past its files, with its records
    // counted. Both the count check and the offset check name it.
    edit_last_entry(&f, |e| {
        let r = &mut e["ranges"][0];
        r["records"] = records.clone();
        r["to"] = 2_050.into();
    });
    let out = f.cli(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(r#""kind":"unaccounted""#) && text.contains(r#""records":2000,"rows":2000"#),
        "{text}"
    );
    assert!(text.contains(&hole(seq, 2_000, 2_050)), "{text}");
}

/// An analyst's `OPTIMIZE` with delta-rs: a Delta version sluice did not write.
const OPTIMIZE: &str = "import sys
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
dt.optimize.compact()
print(dt.version())";

/// Another engine writes the Delta log (an `OPTIMIZE`): sluice stops projecting with an error
/// that names the version and the way out, loading goes on exactly once through the manifest,
/// `verify` names the foreign version, and the README's remedy (move the log aside, `sluice
/// delta sync`) gives every Delta reader the manifest's table again.
#[test]
fn a_foreign_delta_version_stops_the_projection_not_the_load() {
    let mut f = Fixture::new("foreign", 2);
    f.write_job("table", "[commit]\nmax_rows = 2000\n");
    f.produce(spec(0, 6_000));
    f.run_once_ok();
    let seq = f.state().seq;
    assert!(seq >= 3, "several entries, several files to optimize");
    let table = f.job_table_dir();
    let out = std::process::Command::new(python())
        .args(["-c", OPTIMIZE])
        .arg(&table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deltalake optimize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), seq.to_string());
    let (ok, text) = verify(&f);
    assert!(!ok, "verify missed the foreign version: {text}");
    assert!(
        text.contains(&format!(
            r#"{{"kind":"delta_foreign_version","version":{seq},"operation":"OPTIMIZE"}}"#
        )),
        "{text}"
    );

    // The load goes on; the projection stops with an error that says what to do.
    f.produce(spec(6_000, 2_000));
    let out = f.run_once(None);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(n(&stats, "rows"), 2_000);
    assert!(
        log.contains(&format!("Delta version {seq} ")) && log.contains("sluice delta sync"),
        "{log}"
    );
    assert_exactly_once(&read_table(&f.job), 8_000, 0);
    assert_eq!(f.state().seq, seq + 1);
    let (ok, text) = verify(&f);
    assert!(!ok && text.contains("delta_foreign_version"), "{text}");

    // The way out the error names: the log moved aside, rebuilt from the manifest.
    std::fs::rename(table.join("_delta_log"), table.join("_delta_log.optimized")).unwrap();
    let out = f.cli(&["delta", "sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&f.read(), 8_000, 0);
}
