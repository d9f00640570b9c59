//! Helpers for the end-to-end tests: a real broker (started by `make test`, address in
//! SLUICE_TEST_BROKERS), the real `sluice` binary, and an independent Python reader.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice::ops::generate::GenSpec;
use sluice::table::state::TableState;

pub mod catalogs;
pub mod every_type;
pub mod registry;

/// A process's stdout then stderr, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An environment variable `make test` sets (the broker's listeners and credentials).
pub fn test_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with `make test`"))
}

pub fn brokers() -> String {
    std::env::var("SLUICE_TEST_BROKERS").expect(
        "SLUICE_TEST_BROKERS is not set: run the tests with `make test`, which starts a broker",
    )
}

/// A random seed, or the one in environment variable `var` to repeat a run; printed.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{var}={seed}");
    seed
}

/// Runs `python -c script args...` with the tools' Python; returns its stdout, after asserting
/// that it succeeded.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn python() -> String {
    std::env::var("SLUICE_TEST_PYTHON")
        .expect("SLUICE_TEST_PYTHON is not set: run the tests with `make test`")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A topic and a table of one test: unique names, so tests run in parallel.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub partitions: i32,
    pub job: PathBuf,
    /// The broker the topic is on (the shared test broker unless made with [`Fixture::on`]).
    pub brokers: String,
}

/// A job file built key by key, written as TOML (no string surgery on job text).
#[derive(Debug, Clone, Default)]
pub struct JobFile(toml::Table);

impl JobFile {
    /// Sets `key` of table `section` (dotted: `source.properties`).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut t = &mut self.0;
        for part in section.split('.') {
            let entry = t
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().expect("a section is a table");
        }
        t.insert(key.to_string(), value.into());
        self
    }

    /// Removes `key` of table `section` (if there).
    pub fn without(mut self, section: &str, key: &str) -> Self {
        if let Some(t) = self.0.get_mut(section).and_then(|v| v.as_table_mut()) {
            t.remove(key);
        }
        self
    }

    /// Merges a TOML fragment, its keys winning.
    pub fn merge(mut self, text: &str) -> Self {
        fn merge(into: &mut toml::Table, from: toml::Table) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        let extra: toml::Table = text.parse().expect("valid TOML");
        merge(&mut self.0, extra);
        self
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(&self.0).expect("a table serialises")
    }
}

/// Job settings that make group joins fast against the test broker.
pub const FAST_GROUP: &str = r#"
"session.timeout.ms" = "3000"
"heartbeat.interval.ms" = "500"
"max.poll.interval.ms" = "10000"
"#;

impl Fixture {
    pub fn new(name: &str, partitions: i32) -> Fixture {
        Fixture::on(&brokers(), name, partitions, &[])
    }

    /// A fixture whose topic is on `brokers`, created with topic configs `configs`.
    pub fn on(brokers: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Fixture {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let topic = format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000);
        create_topic_with(brokers, &topic, partitions, configs);
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture {
            job: dir.path().join("job.toml"),
            dir,
            topic,
            partitions,
            brokers: brokers.to_string(),
        };
        f.write_job("table", "");
        f
    }

    /// The fixture's job on table `table`: its broker and topic, the payment schema, fast
    /// group settings.
    pub fn job_file(&self, table: &str) -> JobFile {
        let schema = repo().join("schemas/payment.avsc");
        JobFile::default()
            .set("source", "brokers", self.brokers.clone())
            .set("source", "topics", vec![self.topic.clone()])
            .set("source", "group_id", format!("g-{}-{table}", self.topic))
            .merge(&format!("[source.properties]\n{FAST_GROUP}"))
            .set("schema", "file", schema.display().to_string())
            .set("event_time", "field", "created_at")
            .set("storage", "url", table)
            // Every table is also registered in a SQL catalog (sqlite, beside the job file):
            // loaders racing, dying and retrying keep it current (`assert_clean`).
            .merge("[iceberg]\nenabled = true\ncatalog = \"sqlite:catalog.db\"\nnamespace = \"tests\"\n")
    }

    /// Writes `job` as `<table>.toml` and makes it the fixture's job.
    pub fn write(&mut self, table: &str, job: &JobFile) -> PathBuf {
        let path = self.dir.path().join(format!("{table}.toml"));
        std::fs::write(&path, job.to_toml()).unwrap();
        self.job = path.clone();
        path
    }

    /// Writes (or rewrites) the job file; `extra` is TOML merged into it.
    pub fn write_job(&mut self, table: &str, extra: &str) -> PathBuf {
        let job = self.job_file(table).merge(extra);
        self.write(table, &job)
    }

    pub fn table_dir(&self, table: &str) -> PathBuf {
        self.dir.path().join(table)
    }

    /// Produces `count` events with ids from `first_id`; returns how many were malformed.
    pub fn produce(&self, spec: GenSpec) -> u64 {
        let spec = GenSpec {
            partitions: self.partitions,
            ..spec
        };
        sluice::ops::generate::produce(&self.brokers, &self.topic, &spec).unwrap()
    }

    pub fn state(&self) -> TableState {
        let job = sluice::config::Job::load(&self.job).unwrap();
        let m = sluice::open_manifest(&job).unwrap();
        rt().block_on(m.load()).unwrap()
    }

    /// Runs `sluice verify` (which must find the table clean, its Delta log included and up
    /// to date), then the independent readers: DuckDB over the manifest's files, and the Delta
    /// readers (deltalake, DuckDB's delta extension, polars), which must each see every
    /// committed row once.
    pub fn read(&self) -> serde_json::Value {
        self.assert_clean();
        read_table(&self.job)
    }

    /// `sluice verify` finds the table clean, its Delta log included and up to date, and each
    /// Delta reader sees every committed row once at the latest version.
    pub fn assert_clean(&self) {
        let v = self.cli(&["verify", "--json"]);
        assert!(
            v.status.success(),
            "sluice verify: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        assert_eq!(
            report["delta"]["behind"], 0,
            "the Delta log lags: {}",
            report["delta"]
        );
        self.assert_delta_readers_agree();
        if !report["iceberg"].is_null() {
            assert_eq!(
                report["iceberg"]["behind"], 0,
                "the Iceberg metadata lags: {}",
                report["iceberg"]
            );
            self.assert_iceberg_readers_agree(ICEBERG_ENGINES.as_slice());
            let c = &report["iceberg"]["catalog"];
            if !c.is_null() {
                assert_eq!(c["behind"], 0, "the Iceberg catalog lags: {c}");
                assert_eq!(c["seq"], report["entries"], "{c}");
            }
        }
    }

    /// The table's current Iceberg snapshot: its id and the manifest entry it names.
    pub fn iceberg_current(&self) -> (i64, u64) {
        let job = sluice::config::Job::load(&self.job).unwrap();
        let m = sluice::open_manifest(&job).unwrap();
        let s = rt()
            .block_on(sluice::table::iceberg::load_latest(m.store()))
            .unwrap()
            .expect("the table has Iceberg metadata");
        let seq = s.meta.sluice_entry().expect("a snapshot of sluice's").0;
        (s.meta.current_snapshot_id.unwrap(), seq)
    }

    /// The snapshots the latest Iceberg metadata keeps: the manifest entry each names, and its
    /// id, in order.
    pub fn iceberg_snapshots(&self) -> Vec<(u64, i64)> {
        let job = sluice::config::Job::load(&self.job).unwrap();
        let m = sluice::open_manifest(&job).unwrap();
        let s = rt()
            .block_on(sluice::table::iceberg::load_latest(m.store()))
            .unwrap()
            .expect("the table has Iceberg metadata");
        let mut out: Vec<(u64, i64)> = s
            .meta
            .snapshots
            .iter()
            .map(|x| {
                let seq = x.summary["sluice.seq"].parse().unwrap();
                (seq, x.snapshot_id)
            })
            .collect();
        out.sort();
        out
    }

    /// The table after each manifest entry up to the latest (index `seq - 1`).
    pub fn states(&self) -> Vec<TableState> {
        let job = sluice::config::Job::load(&self.job).unwrap();
        let m = sluice::open_manifest(&job).unwrap();
        let mut state = TableState::default();
        let mut out = Vec::new();
        while let Some(e) = rt().block_on(m.read_entry(state.seq + 1)).unwrap() {
            state.apply(&e).unwrap();
            out.push(state.clone());
        }
        out
    }

    /// Each Iceberg reader (`engines`: of pyiceberg, duckdb, spark) sees the manifest's rows,
    /// each offset once, at the current snapshot, which names the manifest's last entry.
    pub fn assert_iceberg_readers_agree(&self, engines: &[&str]) {
        let state = self.state();
        let rows = committed_rows(&state) as i64;
        let (snapshot, seq) = self.iceberg_current();
        assert_eq!(seq, state.seq, "the current snapshot is of entry {seq}");
        let table = self.job_table_dir();
        for engine in engines {
            let r = read_iceberg(&table.display().to_string(), engine, &[]);
            assert_eq!(n(&r, "rows"), rows, "{engine} on the Iceberg table: {r}");
            assert_eq!(n(&r, "distinct_offsets"), rows, "{engine}: {r}");
            assert_eq!(n(&r, "version"), snapshot, "{engine}: {r}");
        }
        // pyiceberg through the job's SQL catalog: the same snapshot.
        if let Some((catalog, name)) = self.sql_catalog() {
            let r = read_iceberg(
                &name,
                "pyiceberg",
                &["--catalog", &catalog, "--catalog-name", "sluice"],
            );
            assert_eq!(n(&r, "rows"), rows, "pyiceberg through {catalog}: {r}");
            assert_eq!(
                n(&r, "version"),
                snapshot,
                "pyiceberg through {catalog}: {r}"
            );
        }
    }

    /// The job's SQL catalog as the readers name it (`sql:<SQLAlchemy URI>`) and the table's
    /// name there, when it has one in sqlite.
    pub fn sql_catalog(&self) -> Option<(String, String)> {
        let job = sluice::config::Job::load(&self.job).unwrap();
        let c = job.iceberg?.catalog?;
        let path = c.uri.strip_prefix("sqlite:")?;
        Some((
            format!("sql:sqlite:///{path}"),
            format!("{}.{}", c.namespace.join("."), c.table),
        ))
    }

    /// Spark (one session for the whole test run) reads both the Delta log and the Iceberg
    /// table: every committed row once.
    pub fn assert_spark_reads_both(&self) {
        let state = self.state();
        let rows = committed_rows(&state) as i64;
        let table = self.job_table_dir().display().to_string();
        let d = read_delta(&table, "spark", &[]);
        assert_eq!(n(&d, "rows"), rows, "Spark on the Delta log: {d}");
        assert_eq!(
            n(&d, "distinct_offsets"),
            rows,
            "Spark on the Delta log: {d}"
        );
        assert_eq!(
            n(&d, "version") as u64 + 1,
            state.seq,
            "Spark on the Delta log: {d}"
        );
        self.assert_iceberg_readers_agree(&["spark"]);
    }

    /// The local folder of the fixture's table.
    pub fn job_table_dir(&self) -> PathBuf {
        let job = sluice::config::Job::load(&self.job).unwrap();
        url::Url::parse(&job.storage_url)
            .unwrap()
            .to_file_path()
            .unwrap()
    }

    /// Each Delta reader sees the manifest's rows, each offset once, at the latest version.
    pub fn assert_delta_readers_agree(&self) {
        let state = self.state();
        let rows = committed_rows(&state) as i64;
        let table = self.job_table_dir();
        for engine in DELTA_ENGINES {
            let r = read_delta(&table.display().to_string(), engine, &[]);
            assert_eq!(n(&r, "rows"), rows, "{engine} on the Delta log: {r}");
            assert_eq!(n(&r, "distinct_offsets"), rows, "{engine}: {r}");
            assert_eq!(n(&r, "version") as u64 + 1, state.seq, "{engine}: {r}");
        }
    }

    /// `sluice ARGS --job JOB`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.sluice()
            .args(args)
            .arg("--job")
            .arg(&self.job)
            .output()
            .unwrap()
    }

    /// `sluice ARGS --job JOB`, which must succeed and print JSON.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "sluice {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn sluice(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.env("SLUICE_LOG", "info,rdkafka=warn")
            .env_remove("SLUICE_FAILPOINT");
        c
    }

    /// `sluice run --once`; returns the output.
    pub fn run_once(&self, failpoint: Option<&str>) -> Output {
        let mut c = self.sluice();
        c.args(["run", "--once", "--job"]).arg(&self.job);
        if let Some(fp) = failpoint {
            c.env("SLUICE_FAILPOINT", fp);
        }
        c.output().unwrap()
    }

    /// `sluice run --once`, which must succeed; returns its stats line.
    pub fn run_once_ok(&self) -> serde_json::Value {
        let out = self.run_once(None);
        assert!(
            out.status.success(),
            "sluice run --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts a continuous `sluice run` in the background.
    pub fn spawn_run(&self, log: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        self.sluice()
            .args(["run", "--job"])
            .arg(&self.job)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Spawns `sluice run --once`, its log (stderr) to `log` in the fixture's folder.
    pub fn spawn_once(&self, log: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        self.sluice()
            .args(["run", "--once", "--job"])
            .arg(&self.job)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits until log `name` contains `text`, or panics after `secs`.
    pub fn wait_for_log(&self, secs: u64, name: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log(name).contains(text) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for `{text}` in {name}: {}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until the log `name` contains `needle`, or panics after `secs`.
    pub fn wait_log(&self, name: &str, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log(name).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in {name} after {secs} s: {}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `cond` holds for the committed state, or panics after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, cond: impl Fn(&TableState) -> bool) {
        self.wait_for_logging(secs, what, &[], cond)
    }

    /// [`Fixture::wait_for`], and on a timeout the ends of these logs in the panic.
    pub fn wait_for_logging(
        &self,
        secs: u64,
        what: &str,
        logs: &[&str],
        cond: impl Fn(&TableState) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let state = self.state();
            if cond(&state) {
                return;
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = logs
                    .iter()
                    .map(|l| {
                        let text = self.log(l);
                        let tail: Vec<&str> = text.lines().rev().take(30).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        format!("--- the end of {l}:\n{}", tail.join("\n"))
                    })
                    .collect();
                panic!(
                    "timed out waiting for {what} (entry {}, {} rows committed)\n{}",
                    state.seq,
                    committed_rows(&state),
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The independent reader (tests/reader.py: DuckDB and pyarrow) on the table of `job`.
pub fn read_table(job: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo().join("tests/reader.py"))
        .arg("--sluice")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg("--job")
        .arg(job)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The Delta readers of tests/delta_reader.py.
pub const DELTA_ENGINES: [&str; 3] = ["deltalake", "duckdb", "polars"];

/// One read of the Delta table at `table` (a folder or `s3://` URL) by `engine`
/// (tests/delta_reader.py); `args`: `--version N`, `--where PRED`, `--s3-endpoint URL`.
pub fn read_delta(table: &str, engine: &str, args: &[&str]) -> serde_json::Value {
    let lines = read_delta_lines(table, engine, args);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap()
}

/// Every line a Delta reader printed (several with `--loop-until FILE`).
pub fn read_delta_lines(table: &str, engine: &str, args: &[&str]) -> Vec<serde_json::Value> {
    reader_lines("tests/delta_reader.py", table, engine, args)
}

pub const ICEBERG_ENGINES: [&str; 2] = ["pyiceberg", "duckdb"];

/// One read of the Iceberg table at `table` (its root, or `s3://` URL) by `engine`
/// (tests/iceberg_reader.py); `args`: `--snapshot ID`, `--where PRED`, `--s3-endpoint URL`.
pub fn read_iceberg(table: &str, engine: &str, args: &[&str]) -> serde_json::Value {
    let lines = read_iceberg_lines(table, engine, args);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap()
}

/// Every line an Iceberg reader printed (several with `--loop-until FILE`).
pub fn read_iceberg_lines(table: &str, engine: &str, args: &[&str]) -> Vec<serde_json::Value> {
    reader_lines("tests/iceberg_reader.py", table, engine, args)
}

fn reader_lines(script: &str, table: &str, engine: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut c = Command::new(python());
    c.arg(repo().join(script))
        .args(["--table", table, "--engine", engine])
        .args(args);
    if table.starts_with("s3://") {
        // The credentials of s3_options (moto accepts any).
        c.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{script} --engine {engine} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn committed_rows(s: &TableState) -> u64 {
    s.partitions.iter().map(|p| p.rows).sum()
}

pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

pub fn spec(first_id: u64, count: u64) -> GenSpec {
    GenSpec {
        first_id,
        count,
        ..Default::default()
    }
}

pub fn n(v: &serde_json::Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("`{key}` missing in {v}"))
}

/// Asserts the reader found exactly the ids `0..count` once each, in the right windows, and
/// that every offset of every partition is loaded or dead-lettered exactly once.
pub fn assert_exactly_once(r: &serde_json::Value, count: i64, dead: i64) {
    assert_eq!(n(r, "rows") + n(r, "dead_letters"), count, "{r}");
    assert_eq!(n(r, "dead_letters"), dead, "{r}");
    assert_eq!(n(r, "distinct_ids"), n(r, "rows"), "duplicate ids: {r}");
    assert_eq!(
        n(r, "distinct_offsets"),
        n(r, "rows"),
        "duplicate offsets: {r}"
    );
    assert_eq!(n(r, "dead_distinct_offsets"), n(r, "dead_letters"), "{r}");
    assert_eq!(n(r, "loaded_and_dead"), 0, "{r}");
    assert_eq!(n(r, "rows_pyarrow"), n(r, "rows"), "{r}");
    assert_eq!(
        n(r, "window_mismatches"),
        0,
        "rows outside their window: {r}"
    );
    let parts = r["partitions"].as_object().unwrap();
    let total: i64 = parts.values().map(|p| n(p, "count")).sum();
    assert_eq!(total, count, "{r}");
    for (p, v) in parts {
        assert_eq!(n(v, "count"), n(v, "distinct"), "partition {p}: {r}");
        assert_eq!(
            n(v, "max") - n(v, "min") + 1,
            n(v, "count"),
            "partition {p} has a gap: {r}"
        );
        assert_eq!(n(v, "min"), 0, "partition {p}: {r}");
    }
}

pub trait GenSpecExt {
    fn with_malformed(self, permille: u32) -> GenSpec;
}

impl GenSpecExt for GenSpec {
    fn with_malformed(self, permille: u32) -> GenSpec {
        GenSpec {
            malformed_permille: permille,
            ..self
        }
    }
}

// Local servers the tests start themselves (from .tools/, installed by `make test`).

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "server for {port} exited"
        );
        assert!(Instant::now() < deadline, "server on {port} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn tool(rel: &str) -> std::path::PathBuf {
    let p = repo().join(".tools").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make test`, which installs it",
        p.display()
    );
    p
}

pub fn start_moto() -> (Server, u16) {
    let port = free_port();
    let mut child = Command::new(tool("venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child);
    (Server(child), port)
}

pub fn create_bucket(port: u16, name: &str) {
    // The server may accept connections a moment before it answers requests: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(python())
            .args([
                "-c",
                "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT'))",
                &format!("http://127.0.0.1:{port}/{name}"),
            ])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn s3_options(port: u16) -> Vec<(String, String)> {
    [
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Produces the records of `spec` (ids `first_id..first_id + count`) all to one partition,
/// every one acknowledged.
pub fn produce_to(topic: &str, partition: i32, spec: GenSpec) {
    let spec = GenSpec {
        only_partition: Some(partition),
        ..spec
    };
    sluice::ops::generate::produce(&brokers(), topic, &spec).unwrap();
}

/// Produces `payloads` in order to one partition of `topic` (callers count what was loaded).
pub fn produce_payloads(topic: &str, partition: i32, payloads: &[String]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("acks", "all")
        .create()
        .unwrap();
    for body in payloads {
        p.send(
            BaseRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(body),
        )
        .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// The independent producer of tests/txn_producer.py (confluent-kafka): transactions that
/// commit or abort, plain writes, tombstones; it appends `ID STATE` lines to `--out`.
pub fn txn_producer(brokers: &str, topic: &str, partitions: i32, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(repo().join("tests/txn_producer.py"))
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .args(args);
    c
}

/// Starts a tests/txn_producer.py producer that leaves a transaction open (`--leave-open`), and
/// waits until it is: returns the producer and the lines it prints after that.
pub fn txn_producer_open(
    f: &Fixture,
    args: &[&str],
) -> (
    Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut producer = txn_producer(&f.brokers, &f.topic, f.partitions, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(producer.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("\"open\""), "producer: {line}");
    (producer, lines)
}

/// The `ID STATE` lines a producer of tests/txn_producer.py wrote.
pub fn produced_states(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, state) = l.split_once(' ')?;
            Some((id.to_string(), state.to_string()))
        })
        .collect()
}

/// The id-by-id audit (tests/ids.py) of the fixture's table against `expected`: each `(id,
/// dead)` must be exactly one row (`dead` false) or exactly one dead letter found by its key
/// (`dead` true), and nothing else may be in the table. Panics with the report otherwise.
pub fn audit_ids(f: &Fixture, expected: &[(String, bool)], what: &str) -> serde_json::Value {
    let list = f.dir.path().join("expected-ids.txt");
    let text: String = expected
        .iter()
        .map(|(id, dead)| format!("{id} {}\n", *dead as u8))
        .collect();
    std::fs::write(&list, text).unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/ids.py"))
        .arg("--sluice")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg("--job")
        .arg(&f.job)
        .arg("--produced")
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: the id audit found differences: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sluice verify --kafka --json`, which must be clean (it exits 1 on a violation); returns
/// the report.
pub fn verify_with_kafka(f: &Fixture) -> serde_json::Value {
    f.cli_json(&["verify", "--kafka", "--json"])
}

/// The test's own Apache Kafka broker (tests/support/broker.sh), for tests that kill, pause
/// or restart it; stopped when dropped.
pub struct OwnBroker {
    pub dir: tempfile::TempDir,
    pub brokers: String,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        let dir = tempfile::tempdir().unwrap();
        let brokers = broker_sh("start", dir.path());
        OwnBroker { dir, brokers }
    }

    /// SIGKILL (a crash).
    pub fn kill(&self) {
        broker_sh("kill", self.dir.path());
    }

    /// Starts it again on the same ports and log directory.
    pub fn restart(&self) {
        let again = broker_sh("start", self.dir.path());
        assert_eq!(again, self.brokers);
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        broker_sh("stop", self.dir.path());
    }
}

fn broker_sh(cmd: &str, dir: &Path) -> String {
    let script = std::env::var("SLUICE_KAFKA_BROKER_SH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/support/broker.sh"));
    let out = Command::new("bash")
        .arg(script)
        .arg(cmd)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "broker.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Creates `topic` with `partitions` and topic configs `configs` (e.g. `cleanup.policy`).
pub fn create_topic_with(brokers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = rt()
        .block_on(admin.create_topics(
            &[t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for x in r {
        x.unwrap();
    }
}
