//! Catalog servers for a test: an Apache Iceberg REST catalog (tests/support/iceberg_rest.sh)
//! and a PostgreSQL server (tests/support/postgres.sh) for SQL catalogs. Each is stopped and its
//! folder removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::repo;

/// Runs `tests/support/<script> start DIR` with `envs`; its stdout (the URL), or a panic with its
/// stderr.
fn start(script: &str, dir: &Path, envs: &[(&str, &str)]) -> String {
    let out = Command::new(repo().join("tests/support").join(script))
        .arg("start")
        .arg(dir)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn stop(script: &str, dir: &Path) {
    let _ = Command::new(repo().join("tests/support").join(script))
        .arg("stop")
        .arg(dir)
        .status();
}

/// An Iceberg REST catalog (the REST catalog server of Iceberg 1.10's test fixtures, on Java 17)
/// for one test: `url` is its base URL, `http://127.0.0.1:PORT` (the API is under `/v1`).
pub struct IcebergRest {
    dir: tempfile::TempDir,
    pub url: String,
}

impl IcebergRest {
    /// With its own sqlite catalog database; the tables it creates go under `warehouse()`. Its
    /// backing JdbcCatalog is named `rest_backend`.
    pub fn start() -> IcebergRest {
        Self::start_with(None, None)
    }

    /// Serving the catalog database at `jdbc_uri` (e.g. `jdbc:sqlite:/path/catalog.db`, one a
    /// pyiceberg SqlCatalog wrote), and the rows of the catalog named `catalog_name` (the
    /// `catalog_name` column; by default `rest_backend`).
    pub fn start_with(jdbc_uri: Option<&str>, catalog_name: Option<&str>) -> IcebergRest {
        let dir = tempfile::tempdir().unwrap();
        let mut envs = Vec::new();
        if let Some(u) = jdbc_uri {
            envs.push(("ICEBERG_REST_JDBC_URI", u));
        }
        if let Some(n) = catalog_name {
            envs.push(("ICEBERG_REST_CATALOG_NAME", n));
        }
        let url = start("iceberg_rest.sh", dir.path(), &envs);
        IcebergRest { dir, url }
    }

    /// Where the tables it creates are written (a local folder; `file://` + this is its
    /// `warehouse` property).
    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("warehouse")
    }

    /// Its log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rest.log")).unwrap_or_default()
    }
}

impl Drop for IcebergRest {
    fn drop(&mut self) {
        stop("iceberg_rest.sh", self.dir.path());
    }
}

/// A PostgreSQL 15 server for one test, with the database `sluice` of the superuser `sluice`
/// (trust authentication, no password): `url` is `postgresql://sluice@127.0.0.1:PORT/sluice`. It
/// has `wal_level=logical` (for change data capture) and runs with fsync off.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub url: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let url = start("postgres.sh", dir.path(), &[]);
        Postgres { dir, url }
    }

    /// Serving TLS only, with `tls`'s certificate for 127.0.0.1 (clients without TLS are
    /// refused).
    pub fn start_tls(tls: &super::registry::Tls) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        );
        let url = start(
            "postgres.sh",
            dir.path(),
            &[("PG_TLS_CERT", cert.as_str()), ("PG_TLS_KEY", key.as_str())],
        );
        Postgres { dir, url }
    }

    /// The URL for SQLAlchemy (pyiceberg's SqlCatalog): `postgresql+psycopg2://…`.
    pub fn sqlalchemy_url(&self) -> String {
        self.url
            .replacen("postgresql://", "postgresql+psycopg2://", 1)
    }

    /// The URL for JDBC (Iceberg's JdbcCatalog):
    /// `jdbc:postgresql://127.0.0.1:PORT/sluice?user=sluice`.
    pub fn jdbc_url(&self) -> String {
        let rest = self.url.trim_start_matches("postgresql://sluice@");
        format!("jdbc:postgresql://{rest}?user=sluice")
    }

    /// Its log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop("postgres.sh", self.dir.path());
    }
}
