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
