//! Iceberg catalogs: after the metadata files, the table is registered and kept current in a
//! catalog, so engines find it by name.
//!
//! - A **SQL catalog** (the tables Iceberg's JDBC catalog and pyiceberg's `SqlCatalog` share, in
//!   sqlite or PostgreSQL): the table's row points at sluice's newest `v<N>.metadata.json`; a
//!   commit is the conditional update both of them make (`... WHERE metadata_location = <the
//!   one read>`), so a racing writer or engine is never overwritten.
//! - A **REST catalog** (the Iceberg REST protocol): the table is registered from the newest
//!   metadata file, then each commit sends the snapshots, schemas, specs and properties it lacks
//!   with the requirements that the table is the same (uuid) and its `main` branch is where it
//!   was read; the catalog writes its own metadata file.
//!
//! The metadata files stay the truth: a catalog is brought to the newest version, however many
//! it is behind, in one commit. A catalog whose table points at anything sluice did not write
//! (an engine committed to it) is left alone and named, as a foreign metadata version is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::metadata::{TableMetadata, SUMMARY_SEQ};
use super::project::metadata_rel;

/// Where the table is registered, and as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    /// `sqlite:///path`, `postgresql://user@host/db` or `http(s)://host/…` (a REST catalog).
    pub uri: String,
    /// The SQL catalog's `catalog_name`; unused by a REST catalog.
    pub name: String,
    pub namespace: Vec<String>,
    pub table: String,
    /// A REST catalog's bearer token.
    pub token: Option<String>,
    /// A REST catalog's `warehouse` (sent to `/v1/config`).
    pub warehouse: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("Iceberg catalog {uri}: {message}")]
    Failed { uri: String, message: String },
    #[error(
        "Iceberg catalog {uri}: table {table} is at {current}, which sluice did not write (an engine committed to it): sluice stopped updating the catalog (the metadata files go on). To resume, point the table back at sluice's newest metadata file or drop it from the catalog"
    )]
    Foreign {
        uri: String,
        table: String,
        current: String,
    },
    #[error(
        "Iceberg catalog `{0}`: not a catalog URI (sqlite:///path, postgresql://…, http(s)://…)"
    )]
    Uri(String),
}

/// Where a catalog's table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pointer {
    /// Not registered.
    Missing,
    /// A SQL catalog at sluice's `metadata/v<N>.metadata.json`.
    Version(u64),
    /// A REST catalog at a snapshot sluice wrote for manifest entry `seq`.
    Entry(u64),
    /// Anything else: what it points at.
    Foreign(String),
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Registered,
    Updated,
    /// Already there (or further: another loader got there first).
    Current,
}

enum Backend {
    Sqlite(PathBuf),
    Postgres {
        config: Box<tokio_postgres::Config>,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    Rest {
        base: String,
    },
}

/// A table's catalog.
pub struct Catalog {
    settings: CatalogSettings,
    backend: Backend,
    pg: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    http: reqwest::Client,
    /// The REST catalog's path prefix (from `/v1/config`), read once.
    prefix: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.describe())
    }
}

/// Attempts at a conditional commit another writer keeps winning.
const ATTEMPTS: usize = 8;

impl Catalog {
    pub fn open(settings: CatalogSettings) -> Result<Catalog, CatalogError> {
        let uri = settings
            .uri
            .strip_prefix("jdbc:")
            .unwrap_or(&settings.uri)
            .to_string();
        let backend = if let Some(path) = uri.strip_prefix("sqlite:") {
            // `sqlite:///abs`, SQLAlchemy's `sqlite:////abs` and JDBC's `sqlite:/abs`.
            // After `//` (an empty authority), one or two slashes start an absolute path.
            let path = path.strip_prefix("//").unwrap_or(path);
            let path = match path.strip_prefix('/') {
                Some(rest) if rest.starts_with('/') => rest,
                _ => path,
            };
            if path.is_empty() {
                return Err(CatalogError::Uri(settings.uri.clone()));
            }
            Backend::Sqlite(PathBuf::from(path))
        } else if uri.starts_with("postgresql://") || uri.starts_with("postgres://") {
            postgres_backend(&uri).map_err(|message| CatalogError::Failed {
                uri: redact(&settings.uri),
                message,
            })?
        } else if uri.starts_with("http://") || uri.starts_with("https://") {
            Backend::Rest {
                base: uri.trim_end_matches('/').to_string(),
            }
        } else {
            return Err(CatalogError::Uri(settings.uri.clone()));
        };
        Ok(Catalog {
            settings,
            backend,
            pg: Default::default(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            prefix: Default::default(),
        })
    }

    /// The catalog and the table's name in it, without secrets.
    pub fn describe(&self) -> String {
        format!("{} table {}", redact(&self.settings.uri), self.table_name())
    }

    fn table_name(&self) -> String {
        let mut parts = self.settings.namespace.clone();
        parts.push(self.settings.table.clone());
        parts.join(".")
    }

    fn failed(&self, message: impl std::fmt::Display) -> CatalogError {
        CatalogError::Failed {
            uri: redact(&self.settings.uri),
            message: message.to_string(),
        }
    }

    fn foreign(&self, current: String) -> CatalogError {
        CatalogError::Foreign {
            uri: redact(&self.settings.uri),
            table: self.table_name(),
            current,
        }
    }

    /// Brings the catalog's table to `meta`, sluice's version `version` of the table at
    /// `location` (absolute, no trailing `/`).
    pub async fn publish(
        &self,
        location: &str,
        version: u64,
        meta: &TableMetadata,
    ) -> Result<Published, CatalogError> {
        match &self.backend {
            Backend::Rest { .. } => self.publish_rest(location, version, meta).await,
            _ => self.publish_sql(location, version).await,
        }
    }

    /// Where the catalog's table is now.
    pub async fn pointer(&self, location: &str) -> Result<Pointer, CatalogError> {
        match &self.backend {
            Backend::Rest { .. } => Ok(match self.rest_load().await? {
                None => Pointer::Missing,
                Some(t) => rest_pointer(&t),
            }),
            _ => Ok(match self.sql_current().await? {
                None => Pointer::Missing,
                Some(cur) => match our_version(location, &cur) {
                    Some(v) => Pointer::Version(v),
                    None => Pointer::Foreign(cur),
                },
            }),
        }
    }

    /// A REST catalog's table metadata (`None` for a SQL catalog, whose metadata is a file
    /// of sluice's, or a table it does not have).
    pub async fn table_metadata(&self) -> Result<Option<TableMetadata>, CatalogError> {
        if !matches!(self.backend, Backend::Rest { .. }) {
            return Ok(None);
        }
        match self.rest_load().await? {
            None => Ok(None),
            Some(t) => serde_json::from_value(t["metadata"].clone())
                .map(Some)
                .map_err(|e| self.failed(format!("the table's metadata: {e}"))),
        }
    }

    // ---- SQL ----

    async fn publish_sql(&self, location: &str, version: u64) -> Result<Published, CatalogError> {
        let new = format!("{location}/{}", metadata_rel(version));
        self.sql_setup().await?;
        for _ in 0..ATTEMPTS {
            let landed = match self.sql_current().await? {
                None => {
                    if self.sql_insert(&new).await? {
                        return Ok(Published::Registered);
                    }
                    false
                }
                Some(cur) => match our_version(location, &cur) {
                    Some(v) if v >= version => return Ok(Published::Current),
                    Some(_) => self.sql_update(&cur, &new).await?,
                    None => return Err(self.foreign(cur)),
                },
            };
            if landed {
                return Ok(Published::Updated);
            }
        }
        Err(self.failed(format!(
            "the table's row kept changing under {ATTEMPTS} conditional updates"
        )))
    }

    fn ns(&self) -> String {
        self.settings.namespace.join(".")
    }

    async fn sql_setup(&self) -> Result<(), CatalogError> {
        let ns = self.ns();
        let name = self.settings.name.clone();
        match &self.backend {
            Backend::Sqlite(path) => {
                let c = sqlite(path).map_err(|e| self.failed(e))?;
                c.execute_batch(&format!("{CREATE_TABLES};{CREATE_NAMESPACES}"))
                    .and_then(|_| {
                        c.execute(
                            "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES (?1, ?2, 'exists', 'true') ON CONFLICT DO NOTHING",
                            rusqlite::params![name, ns],
                        )
                    })
                    .map_err(|e| self.failed(e))?;
            }
            Backend::Postgres { .. } => {
                let c = self.pg().await?;
                let r = async {
                    c.batch_execute(&format!("{CREATE_TABLES};{CREATE_NAMESPACES}"))
                        .await?;
                    c.execute(
                        "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
                        &[&name, &ns],
                    )
                    .await
                }
                .await;
                self.pg_result(r)?;
            }
            Backend::Rest { .. } => {}
        }
        Ok(())
    }

    async fn sql_current(&self) -> Result<Option<String>, CatalogError> {
        let (name, ns, table) = (&self.settings.name, self.ns(), &self.settings.table);
        match &self.backend {
            Backend::Sqlite(path) => {
                let c = sqlite(path).map_err(|e| self.failed(e))?;
                if !sqlite_has_tables(&c).map_err(|e| self.failed(e))? {
                    return Ok(None);
                }
                let mut q = c.prepare(&format!("{SELECT} WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3")).map_err(|e| self.failed(e))?;
                let mut rows = q
                    .query(rusqlite::params![name, ns, table])
                    .map_err(|e| self.failed(e))?;
                match rows.next().map_err(|e| self.failed(e))? {
                    None => Ok(None),
                    Some(r) => Ok(Some(
                        r.get::<_, Option<String>>(0)
                            .map_err(|e| self.failed(e))?
                            .unwrap_or_default(),
                    )),
                }
            }
            Backend::Postgres { .. } => {
                let c = self.pg().await?;
                let r = async {
                    let exists = c
                        .query_one("SELECT to_regclass('iceberg_tables') IS NOT NULL", &[])
                        .await?
                        .get::<_, bool>(0);
                    if !exists {
                        return Ok(None);
                    }
                    let row = c
                        .query_opt(
                            &format!("{SELECT} WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3"),
                            &[name, &ns, table],
                        )
                        .await?;
                    Ok(row.map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()))
                }
                .await;
                self.pg_result(r)
            }
            Backend::Rest { .. } => Ok(None),
        }
    }

    /// Registers the table; `false` when another writer registered it first.
    async fn sql_insert(&self, new: &str) -> Result<bool, CatalogError> {
        let (name, ns, table) = (&self.settings.name, self.ns(), &self.settings.table);
        match &self.backend {
            Backend::Sqlite(path) => {
                let c = sqlite(path).map_err(|e| self.failed(e))?;
                let typed = sqlite_typed(&c).map_err(|e| self.failed(e))?;
                let n = c
                    .execute(
                        insert_sql(typed, "?1", "?2", "?3", "?4"),
                        rusqlite::params![name, ns, table, new],
                    )
                    .map_err(|e| self.failed(e))?;
                Ok(n == 1)
            }
            Backend::Postgres { .. } => {
                let c = self.pg().await?;
                let r = async {
                    let typed = c
                        .query_one(
                            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'iceberg_tables' AND column_name = 'iceberg_type'",
                            &[],
                        )
                        .await?
                        .get::<_, i64>(0)
                        > 0;
                    c.execute(
                        insert_sql(typed, "$1", "$2", "$3", "$4"),
                        &[name, &ns, table, &new],
                    )
                    .await
                }
                .await;
                Ok(self.pg_result(r)? == 1)
            }
            Backend::Rest { .. } => Ok(false),
        }
    }

    /// The commit both JDBC and pyiceberg make: `false` when the row moved since it was read.
    async fn sql_update(&self, cur: &str, new: &str) -> Result<bool, CatalogError> {
        let (name, ns, table) = (&self.settings.name, self.ns(), &self.settings.table);
        match &self.backend {
            Backend::Sqlite(path) => {
                let c = sqlite(path).map_err(|e| self.failed(e))?;
                let n = c
                    .execute(
                        "UPDATE iceberg_tables SET metadata_location = ?1, previous_metadata_location = ?2 WHERE catalog_name = ?3 AND table_namespace = ?4 AND table_name = ?5 AND metadata_location = ?2",
                        rusqlite::params![new, cur, name, ns, table],
                    )
                    .map_err(|e| self.failed(e))?;
                Ok(n == 1)
            }
            Backend::Postgres { .. } => {
                let c = self.pg().await?;
                let r = c
                    .execute(
                        "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 AND metadata_location = $2",
                        &[&new, &cur, name, &ns, table],
                    )
                    .await;
                Ok(self.pg_result(r)? == 1)
            }
            Backend::Rest { .. } => Ok(false),
        }
    }

    /// A connected PostgreSQL client (connected again after a failure).
    async fn pg(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, tokio_postgres::Client>, CatalogError> {
        let Backend::Postgres { config, tls } = &self.backend else {
            return Err(self.failed("not a PostgreSQL catalog"));
        };
        let mut g = self.pg.lock().await;
        if g.as_ref().is_none_or(|c| c.is_closed()) {
            let client = match tls {
                None => {
                    let (client, conn) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| self.failed(pg_error(&e)))?;
                    tokio::spawn(conn);
                    client
                }
                Some(tls) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                    let (client, conn) = config
                        .connect(tls)
                        .await
                        .map_err(|e| self.failed(pg_error(&e)))?;
                    tokio::spawn(conn);
                    client
                }
            };
            *g = Some(client);
        }
        tokio::sync::MutexGuard::try_map(g, |c| c.as_mut())
            .map_err(|_| self.failed("no connection"))
    }

    fn pg_result<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, CatalogError> {
        r.map_err(|e| self.failed(pg_error(&e)))
    }

    // ---- REST ----

    async fn publish_rest(
        &self,
        location: &str,
        version: u64,
        meta: &TableMetadata,
    ) -> Result<Published, CatalogError> {
        let ours = serde_json::to_value(meta).map_err(|e| self.failed(e))?;
        let seq = meta.sluice_entry().map_or(0, |(s, _)| s);
        for _ in 0..ATTEMPTS {
            let Some(table) = self.rest_load().await? else {
                self.rest_namespace().await?;
                let body = json!({
                    "name": self.settings.table,
                    "metadata-location": format!("{location}/{}", metadata_rel(version)),
                });
                match self.rest("POST", "register", Some(body)).await? {
                    (200, _) => return Ok(Published::Registered),
                    (409, _) => continue,
                    (status, body) => {
                        return Err(
                            self.failed(format!("registering the table: HTTP {status}: {body}"))
                        )
                    }
                }
            };
            let theirs = &table["metadata"];
            match rest_pointer(&table) {
                Pointer::Entry(s) if s >= seq => return Ok(Published::Current),
                Pointer::Entry(_) if theirs["table-uuid"] == ours["table-uuid"] => {}
                Pointer::Entry(_) => {
                    return Err(self.foreign(format!("table uuid {}", theirs["table-uuid"])))
                }
                Pointer::Foreign(what) => return Err(self.foreign(what)),
                Pointer::Missing | Pointer::Version(_) => {
                    return Err(self.failed("the catalog answered no table"))
                }
            }
            let (requirements, updates) = rest_changes(theirs, &ours);
            let body = json!({
                "identifier": {"namespace": self.settings.namespace, "name": self.settings.table},
                "requirements": requirements,
                "updates": updates,
            });
            match self.rest("POST", &self.table_path(), Some(body)).await? {
                (200, _) => return Ok(Published::Updated),
                // A requirement failed (another writer moved the table), or the commit's
                // outcome is unknown: read the table again and decide from what it holds.
                (409 | 500 | 502 | 503 | 504, _) => continue,
                (status, body) => {
                    return Err(
                        self.failed(format!("committing to the table: HTTP {status}: {body}"))
                    )
                }
            }
        }
        Err(self.failed(format!("the table kept changing under {ATTEMPTS} commits")))
    }

    fn table_path(&self) -> String {
        format!("tables/{}", urlencode(&self.settings.table))
    }

    /// The table as the catalog loads it (`LoadTableResult`), if it has it.
    async fn rest_load(&self) -> Result<Option<Value>, CatalogError> {
        match self.rest("GET", &self.table_path(), None).await? {
            (200, body) => Ok(Some(
                serde_json::from_str(&body).map_err(|e| self.failed(e))?,
            )),
            (404, _) => Ok(None),
            (status, body) => Err(self.failed(format!("loading the table: HTTP {status}: {body}"))),
        }
    }

    async fn rest_namespace(&self) -> Result<(), CatalogError> {
        let body = json!({"namespace": self.settings.namespace, "properties": {}});
        match self.rest_at("POST", "namespaces", Some(body)).await? {
            (200 | 409, _) => Ok(()),
            (status, body) => {
                Err(self.failed(format!("creating the namespace: HTTP {status}: {body}")))
            }
        }
    }

    /// A request under the table's namespace (`namespaces/{ns}/{path}`).
    async fn rest(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), CatalogError> {
        let ns = urlencode(&self.settings.namespace.join("\u{1f}"));
        self.rest_at(method, &format!("namespaces/{ns}/{path}"), body)
            .await
    }

    async fn rest_at(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), CatalogError> {
        let Backend::Rest { base } = &self.backend else {
            return Err(self.failed("not a REST catalog"));
        };
        let prefix = self
            .prefix
            .get_or_try_init(|| async {
                let mut url = format!("{base}/v1/config");
                if let Some(w) = &self.settings.warehouse {
                    url = format!("{url}?warehouse={}", urlencode(w));
                }
                let (status, text) = self.send(reqwest::Method::GET, &url, None).await?;
                if status != 200 {
                    return Err(self.failed(format!("{url}: HTTP {status}: {text}")));
                }
                let config: Value = serde_json::from_str(&text).map_err(|e| self.failed(e))?;
                let prefix = config["overrides"]["prefix"]
                    .as_str()
                    .or(config["defaults"]["prefix"].as_str())
                    .unwrap_or_default();
                Ok::<_, CatalogError>(match prefix {
                    "" => String::new(),
                    p => format!("{}/", urlencode(p)),
                })
            })
            .await?;
        let method = match method {
            "POST" => reqwest::Method::POST,
            _ => reqwest::Method::GET,
        };
        self.send(method, &format!("{base}/v1/{prefix}{path}"), body)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), CatalogError> {
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.settings.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| self.failed(e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| self.failed(e))?;
        Ok((status, text))
    }
}

/// The version `N` when `metadata_location` is sluice's `metadata/v<N>.metadata.json` of the
/// table at `location`.
pub fn our_version(location: &str, metadata_location: &str) -> Option<u64> {
    metadata_location
        .strip_prefix(location)?
        .strip_prefix("/metadata/v")?
        .strip_suffix(".metadata.json")?
        .parse()
        .ok()
}

/// Where a REST catalog's table (a `LoadTableResult`) is.
fn rest_pointer(table: &Value) -> Pointer {
    let meta = &table["metadata"];
    let current = meta["current-snapshot-id"].as_i64();
    let snap = meta["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["snapshot-id"].as_i64() == current);
    match snap.and_then(|s| s["summary"][SUMMARY_SEQ].as_str()?.parse().ok()) {
        Some(seq) => Pointer::Entry(seq),
        None => Pointer::Foreign(format!(
            "{} (snapshot {})",
            table["metadata-location"].as_str().unwrap_or("?"),
            current.map_or("none".to_string(), |c| c.to_string())
        )),
    }
}

/// The requirements and updates that take a REST catalog's table from `theirs` (its metadata,
/// at an older snapshot of sluice's) to `ours`: the schemas, specs and snapshots it lacks, in
/// order, the current schema and spec, the properties that differ, `main` moved to our current
/// snapshot, and the snapshots we expired removed.
pub fn rest_changes(theirs: &Value, ours: &Value) -> (Vec<Value>, Vec<Value>) {
    let ids = |v: &Value, list: &str, key: &str| -> BTreeSet<i64> {
        v[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x[key].as_i64())
            .collect()
    };
    let requirements = vec![
        json!({"type": "assert-table-uuid", "uuid": ours["table-uuid"]}),
        json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": theirs["current-snapshot-id"]}),
    ];
    let mut updates = Vec::new();
    let their_schemas = ids(theirs, "schemas", "schema-id");
    for s in ours["schemas"].as_array().into_iter().flatten() {
        if !their_schemas.contains(&s["schema-id"].as_i64().unwrap_or(-1)) {
            updates.push(json!({"action": "add-schema", "schema": s, "last-column-id": ours["last-column-id"]}));
        }
    }
    if theirs["current-schema-id"] != ours["current-schema-id"] {
        updates
            .push(json!({"action": "set-current-schema", "schema-id": ours["current-schema-id"]}));
    }
    let their_specs = ids(theirs, "partition-specs", "spec-id");
    for s in ours["partition-specs"].as_array().into_iter().flatten() {
        if !their_specs.contains(&s["spec-id"].as_i64().unwrap_or(-1)) {
            updates.push(json!({"action": "add-spec", "spec": s}));
        }
    }
    if theirs["default-spec-id"] != ours["default-spec-id"] {
        updates.push(json!({"action": "set-default-spec", "spec-id": ours["default-spec-id"]}));
    }
    let mut props = BTreeMap::new();
    for (k, v) in ours["properties"].as_object().into_iter().flatten() {
        if theirs["properties"][k] != *v {
            props.insert(k.clone(), v.clone());
        }
    }
    if !props.is_empty() {
        updates.push(json!({"action": "set-properties", "updates": props}));
    }
    let their_snaps = ids(theirs, "snapshots", "snapshot-id");
    let mut added: Vec<&Value> = ours["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| !their_snaps.contains(&s["snapshot-id"].as_i64().unwrap_or(-1)))
        .collect();
    added.sort_by_key(|s| s["sequence-number"].as_i64());
    for s in added {
        updates.push(json!({"action": "add-snapshot", "snapshot": s}));
    }
    if let Some(cur) = ours["current-snapshot-id"].as_i64() {
        updates.push(json!({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": cur}));
    }
    // Snapshots of ours the metadata files expired (never another engine's).
    let our_snaps = ids(ours, "snapshots", "snapshot-id");
    let expired: Vec<i64> = theirs["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["summary"][SUMMARY_SEQ].is_string())
        .filter_map(|s| s["snapshot-id"].as_i64())
        .filter(|id| !our_snaps.contains(id))
        .collect();
    if !expired.is_empty() {
        updates.push(json!({"action": "remove-snapshots", "snapshot-ids": expired}));
    }
    (requirements, updates)
}

const CREATE_TABLES: &str = "CREATE TABLE IF NOT EXISTS iceberg_tables (catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000), iceberg_type VARCHAR(5), PRIMARY KEY (catalog_name, table_namespace, table_name))";
const CREATE_NAMESPACES: &str = "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL, property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000), PRIMARY KEY (catalog_name, namespace, property_key))";
const SELECT: &str = "SELECT metadata_location FROM iceberg_tables";

/// The JDBC catalog's insert (with `iceberg_type` where the table has the column, as catalogs
/// created by Iceberg 1.4 and earlier do not); a row already there inserts nothing.
fn insert_sql(typed: bool, a: &str, b: &str, c: &str, d: &str) -> &'static str {
    // Both placeholder styles, spelled out: the statements are constants.
    match (typed, a) {
        (true, "?1") => "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type) VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE') ON CONFLICT DO NOTHING",
        (false, "?1") => "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location) VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT DO NOTHING",
        (true, _) => "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type) VALUES ($1, $2, $3, $4, NULL, 'TABLE') ON CONFLICT DO NOTHING",
        (false, _) => {
            let _ = (b, c, d);
            "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location) VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING"
        }
    }
}

fn sqlite(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

fn sqlite_has_tables(c: &rusqlite::Connection) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'iceberg_tables'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn sqlite_typed(c: &rusqlite::Connection) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT count(*) FROM pragma_table_info('iceberg_tables') WHERE name = 'iceberg_type'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// A PostgreSQL catalog from its URL: `sslmode` `disable` (plain), `prefer`/`require`/
/// `verify-ca`/`verify-full` (TLS, the server's certificate verified against the system's
/// roots and `sslrootcert`, a PEM file, when given).
fn postgres_backend(uri: &str) -> Result<Backend, String> {
    let mut url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut mode = "prefer".to_string();
    let mut root = None;
    let mut keep = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "sslmode" => mode = v,
            "sslrootcert" => root = Some(v),
            _ => keep.push((k, v)),
        }
    }
    let tls_mode = match mode.as_str() {
        "disable" => None,
        "prefer" => Some(tokio_postgres::config::SslMode::Prefer),
        "require" | "verify-ca" | "verify-full" => Some(tokio_postgres::config::SslMode::Require),
        other => return Err(format!("sslmode `{other}` is not one sluice knows")),
    };
    url.set_query(None);
    if !keep.is_empty() {
        url.query_pairs_mut().extend_pairs(keep);
    }
    let mut config: tokio_postgres::Config = url
        .as_str()
        .parse()
        .map_err(|e: tokio_postgres::Error| e.to_string())?;
    let tls = match tls_mode {
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            None
        }
        Some(m) => {
            config.ssl_mode(m);
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if let Some(path) = root {
                use rustls::pki_types::pem::PemObject;
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(&path)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                for cert in certs {
                    roots
                        .add(cert.map_err(|e| format!("sslrootcert {path}: {e}"))?)
                        .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                }
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(tls))
        }
    };
    Ok(Backend::Postgres {
        config: Box::new(config),
        tls,
    })
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
    }
}

/// A URI without its password.
fn redact(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => uri.to_string(),
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_versions_and_uris() {
        assert_eq!(our_version("/t", "/t/metadata/v12.metadata.json"), Some(12));
        assert_eq!(
            our_version("/t", "/t/metadata/00012-ab.metadata.json"),
            None
        );
        assert_eq!(our_version("/t", "/u/metadata/v1.metadata.json"), None);
        let open = |uri: &str| {
            Catalog::open(CatalogSettings {
                uri: uri.into(),
                name: "sluice".into(),
                namespace: vec!["db".into()],
                table: "t".into(),
                token: None,
                warehouse: None,
            })
        };
        for (uri, path) in [
            ("sqlite:///var/c.db", "/var/c.db"),
            ("sqlite:////var/c.db", "/var/c.db"),
            ("jdbc:sqlite:/var/c.db", "/var/c.db"),
            ("sqlite:c.db", "c.db"),
        ] {
            match open(uri).unwrap().backend {
                Backend::Sqlite(p) => assert_eq!(p, PathBuf::from(path), "{uri}"),
                _ => panic!("{uri}"),
            }
        }
        assert!(open("mysql://x").is_err());
        let pg = open("postgresql://u:secret@h:5432/db?sslmode=disable").unwrap();
        assert!(!pg.describe().contains("secret"), "{}", pg.describe());
        assert!(open("postgresql://u@h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn rest_changes_add_what_the_catalog_lacks_and_remove_what_expired() {
        let snap = |id: i64, seq: i64| json!({"snapshot-id": id, "sequence-number": seq, "timestamp-ms": seq, "manifest-list": "l", "summary": {"operation": "append", SUMMARY_SEQ: seq.to_string()}});
        let theirs = json!({
            "table-uuid": "u", "current-schema-id": 0, "schemas": [{"schema-id": 0}],
            "default-spec-id": 0, "partition-specs": [{"spec-id": 0}],
            "properties": {"a": "1", "engine": "x"}, "current-snapshot-id": 2,
            "snapshots": [snap(1, 1), snap(2, 2)],
        });
        let ours = json!({
            "table-uuid": "u", "current-schema-id": 1, "schemas": [{"schema-id": 0}, {"schema-id": 1}],
            "last-column-id": 9, "default-spec-id": 0, "partition-specs": [{"spec-id": 0}],
            "properties": {"a": "2"}, "current-snapshot-id": 4,
            "snapshots": [snap(2, 2), snap(4, 4), snap(3, 3)],
        });
        let (req, up) = rest_changes(&theirs, &ours);
        assert_eq!(req[1]["snapshot-id"], 2);
        let actions: Vec<String> = up
            .iter()
            .map(|u| {
                let a = u["action"].as_str().unwrap();
                match a {
                    "add-snapshot" => format!("{a}:{}", u["snapshot"]["snapshot-id"]),
                    "add-schema" => format!("{a}:{}", u["schema"]["schema-id"]),
                    "remove-snapshots" => format!("{a}:{}", u["snapshot-ids"]),
                    _ => a.to_string(),
                }
            })
            .collect();
        assert_eq!(
            actions,
            [
                "add-schema:1",
                "set-current-schema",
                "set-properties",
                "add-snapshot:3",
                "add-snapshot:4",
                "set-snapshot-ref",
                "remove-snapshots:[1]"
            ]
        );
        assert_eq!(up[2]["updates"], json!({"a": "2"}));
    }
}
