//! Change data capture for a test: Debezium's PostgreSQL connector in a Kafka Connect standalone
//! worker (tests/support/debezium.sh; Kafka 4.1.1's Connect, Debezium 3.7, on Java 17), writing
//! the changes of a table `schema.table` to the topic `<prefix>.<schema>.<table>`; and the
//! workload that makes them (tests/cdc_workload.py). The worker is stopped and its replication
//! slot dropped when dropped.
//!
//! What the events look like (JSON with schemas, the default): a key `{"schema":…,"payload":
//! {"id":…}}` (a null key for a table without a primary key), a value with the envelope
//! `{"schema":…,"payload":{"before","after","source","op","ts_ms",…}}`, op `r` (snapshot), `c`,
//! `u`, `d`; a delete is followed by a tombstone (null value); an update of the primary key is a
//! delete (header `__debezium.newkey`) + tombstone of the old key and a create (header
//! `__debezium.oldkey`) of the new one. Under `REPLICA IDENTITY DEFAULT` an update's `before` is
//! null, a delete's `before` holds the key and nulls, and a TOASTed column an update did not
//! change is the string `__debezium_unavailable_value`. Delivery is at least once: after
//! [`Debezium::kill`] the events after the last flushed offset (flushed every second) come again.

use std::path::Path;
use std::process::{Command, Output};

use super::{python, repo};

fn script(cmd: &str, dir: &Path, envs: &[(&str, &str)]) -> Output {
    Command::new(repo().join("tests/support/debezium.sh"))
        .arg(cmd)
        .arg(dir)
        .envs(envs.iter().copied())
        .env("SLUICE_TEST_PYTHON", python())
        .output()
        .unwrap()
}

/// A Debezium PostgreSQL connector in its own Kafka Connect standalone worker: `url` is the
/// worker's REST URL (`http://127.0.0.1:PORT`; the connector is `sluice-cdc`, its state at
/// `{url}/connectors/sluice-cdc/status`). Its settings, offsets (`offsets`) and log
/// (`connect.log`) are in a folder of its own; a restart keeps them and resumes from the offsets.
pub struct Debezium {
    dir: tempfile::TempDir,
    pub url: String,
    prefix: String,
}

impl Debezium {
    /// Captures `tables` (Debezium's `table.include.list`, e.g. `public.accounts,public.payments`)
    /// of the database at `pg_url` (`postgresql://user@host:port/db`, a user with REPLICATION or
    /// superuser) into topics `<prefix>.<schema>.<table>` on `brokers`: JSON with schemas, an
    /// initial snapshot, 3 partitions per topic (created before it starts). Returns once the
    /// connector and its task are RUNNING and its replication slot exists: every change committed
    /// from then on is captured.
    pub fn start(brokers: &str, pg_url: &str, tables: &str, prefix: &str) -> Debezium {
        Self::start_with(brokers, pg_url, tables, prefix, &[])
    }

    /// As [`Debezium::start`], with more of debezium.sh's settings: `CONVERTER` (`json`,
    /// `json-noschema`, `avro` with `REGISTRY_URL`), `SNAPSHOT` (`snapshot.mode`: `initial`,
    /// `no_data`, …), `PARTITIONS`, `SLOT`, `EXTRA_PROPS` (a file of connector properties, e.g.
    /// `skipped.operations=none` for TRUNCATE events, op `t`).
    pub fn start_with(
        brokers: &str,
        pg_url: &str,
        tables: &str,
        prefix: &str,
        settings: &[(&str, &str)],
    ) -> Debezium {
        let dir = tempfile::tempdir().unwrap();
        let mut envs = vec![
            ("BROKERS", brokers),
            ("PG_URL", pg_url),
            ("TABLES", tables),
            ("TOPIC_PREFIX", prefix),
        ];
        envs.extend_from_slice(settings);
        let url = Self::run_start(dir.path(), &envs);
        Debezium {
            dir,
            url,
            prefix: prefix.to_string(),
        }
    }

    fn run_start(dir: &Path, envs: &[(&str, &str)]) -> String {
        let out = script("start", dir, envs);
        assert!(
            out.status.success(),
            "debezium.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Stops the worker (SIGTERM: it flushes its offsets) and starts it again on the same
    /// folder, with the same settings; it resumes after the offsets it flushed. After
    /// [`Debezium::kill`], this is the start after a crash.
    pub fn restart(&mut self) {
        self.stop();
        self.url = Self::run_start(self.dir.path(), &[]);
    }

    /// SIGKILLs the worker (an unclean stop: the offsets of the last second are not flushed, and
    /// their events are sent again by the next start). [`Debezium::restart`] starts it again.
    pub fn kill(&mut self) {
        let out = script("kill", self.dir.path(), &[]);
        assert!(
            out.status.success(),
            "debezium.sh kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the worker (SIGTERM, then SIGKILL after 10 s); its slot stays.
    pub fn stop(&mut self) {
        let _ = script("stop", self.dir.path(), &[]);
    }

    /// The topic of `table` (`schema.table`, e.g. `public.accounts`).
    pub fn topic(&self, table: &str) -> String {
        format!("{}.{table}", self.prefix)
    }

    /// The name of its replication slot (also its publication's).
    pub fn slot(&self) -> String {
        let settings = std::fs::read_to_string(self.dir.path().join("settings")).unwrap();
        settings
            .lines()
            .find_map(|l| l.strip_prefix("SLOT="))
            .unwrap()
            .to_string()
    }

    /// The worker's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("connect.log")).unwrap_or_default()
    }
}

impl Drop for Debezium {
    fn drop(&mut self) {
        // Stops the worker, then drops its slot and publication (a slot nobody reads keeps WAL
        // forever); a server that is gone already is no error.
        let _ = script("drop-slot", self.dir.path(), &[]);
    }
}

/// Runs `tests/cdc_workload.py args...` (`setup --url URL`, `run --url URL --ops N --seed K …`,
/// `dump --url URL --table T`) with the tools' Python; its stdout, after asserting it succeeded.
pub fn workload(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/cdc_workload.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cdc_workload.py {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
