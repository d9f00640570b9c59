//! Apache Iceberg metadata: a second projection of the manifest, beside the Delta log.
//!
//! The manifest stays the truth; `metadata/` is its projection as an Iceberg format-version 2
//! table whose snapshots are manifest entries: snapshot ids derive from the table id and the
//! entry's seq, sequence numbers are seqs, times are the entries' (see [`project`]). A version
//! is the metadata file `metadata/v<N>.metadata.json`, written with a create-only put after its
//! manifests and manifest list (files with unique names, so two writers never share one), then
//! `metadata/version-hint.text` says `N`. Any writer that finds the next version missing writes
//! it; one that finds it there reads it back and goes on from it when its current snapshot names
//! a manifest entry by seq and commit id (the snapshot summary's `sluice.seq` and
//! `sluice.commit-id`), so a lost answer or a race never commits an entry twice; a version whose
//! snapshot names none, or another commit, was written by another engine and stops the
//! projection ([`IcebergError::Foreign`]).
//!
//! A table whose manifest already has entries when Iceberg is turned on starts with one snapshot
//! of the whole table as of the newest entry; from then on every entry is a snapshot.

pub mod avro;
pub mod catalog;
pub mod metadata;
pub mod project;
pub mod schema;

use std::time::Duration;

use bytes::Bytes;

use crate::error::{ManifestError, StoreError};
use crate::table::entry::{Entry, EntryKind, SchemaDef};
use crate::table::manifest::Manifest;
use crate::table::state::TableState;
use crate::table::store::{Created, TableStore};
use metadata::TableMetadata;
use project::{metadata_rel, needs_contents, project, Change, Ctx, State};

pub const METADATA_DIR: &str = "metadata";
pub const VERSION_HINT: &str = "metadata/version-hint.text";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IcebergError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "Iceberg version {version} ({path}) was not written by sluice from the manifest{what}: sluice stopped writing this table's Iceberg metadata (loading goes on, exactly once, through the manifest). The metadata is sluice's to write (no rewrite_data_files, expire_snapshots or writes from other engines). To resume, move `{METADATA_DIR}` aside; the next commit starts it again from the manifest"
    )]
    Foreign {
        version: u64,
        path: String,
        what: String,
    },
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    /// An earlier [`IcebergError::Foreign`] stopped the projection for this process.
    #[error("not writing the Iceberg metadata: {0}")]
    Stopped(String),
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
}

fn corrupt(path: &str, e: impl std::fmt::Display) -> IcebergError {
    IcebergError::Corrupt {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// How a table's Iceberg metadata is kept.
#[derive(Debug, Clone)]
pub struct IcebergSettings {
    /// The job's name (a table property).
    pub name: String,
    /// The table's root URL or path, absolute: every path in the metadata starts with it.
    pub location: String,
    /// The job's schema, for tables whose first entry recorded none.
    pub schema: SchemaDef,
    /// The event-time column (when it is a stored column) and the window: the partition spec.
    pub event_time: Option<String>,
    pub window_ms: Option<i64>,
    pub retention: Duration,
    pub max_snapshots: usize,
}

#[derive(Debug, Default)]
struct Cursor {
    /// Read from storage once; `Some(None)`: there is no Iceberg table yet.
    state: Option<Option<State>>,
    table_uuid: Option<String>,
    stopped: Option<String>,
    /// The version the catalog was last brought to by this log.
    published: Option<u64>,
    /// The catalog's table was found at a version sluice did not write.
    catalog_stopped: bool,
}

/// Keeps a table's Iceberg metadata in step with its manifest.
#[derive(Debug)]
pub struct IcebergLog {
    store: TableStore,
    settings: IcebergSettings,
    cursor: tokio::sync::Mutex<Cursor>,
    catalog: Option<catalog::Catalog>,
    /// The field ids of the newest version read or written (see [`IcebergLog::field_ids`]).
    ids: std::sync::Mutex<Option<FieldIds>>,
}

/// Field ids by name path (see [`schema::with_field_ids`]).
pub type FieldIds = std::sync::Arc<std::collections::BTreeMap<String, i32>>;

impl IcebergLog {
    pub fn new(store: TableStore, settings: IcebergSettings) -> Self {
        IcebergLog {
            store,
            settings,
            cursor: Default::default(),
            catalog: None,
            ids: Default::default(),
        }
    }

    /// Registers the table in `catalog` and keeps it current there, after each sync.
    pub fn with_catalog(mut self, catalog: Option<catalog::Catalog>) -> Self {
        self.catalog = catalog;
        self
    }

    pub fn catalog(&self) -> Option<&catalog::Catalog> {
        self.catalog.as_ref()
    }

    pub fn settings(&self) -> &IcebergSettings {
        &self.settings
    }

    /// The field ids data files are written with: those of the newest version this log read
    /// or wrote (a path keeps its id forever, so they hold for every later version too);
    /// `None` before the first sync and once the projection stopped.
    pub fn field_ids(&self) -> Option<FieldIds> {
        self.ids.lock().ok().and_then(|g| g.clone())
    }

    /// Writes a version for every entry up to `table.seq` the metadata lacks (`fresh`: an entry
    /// the caller holds). Returns the versions written by this call.
    pub async fn sync(
        &self,
        manifest: &Manifest,
        table: &TableState,
        fresh: Option<&Entry>,
    ) -> Result<u64, IcebergError> {
        let mut c = self.cursor.lock().await;
        if let Some(why) = &c.stopped {
            return Err(IcebergError::Stopped(why.clone()));
        }
        let r = self.sync_locked(&mut c, manifest, table, fresh).await;
        let ids = match (&r, &c.state) {
            (Err(IcebergError::Foreign { .. }), _) => Some(None),
            (_, Some(Some(s))) => Some(Some(std::sync::Arc::new(project::known_ids(&s.meta)))),
            _ => None,
        };
        if let (Some(ids), Ok(mut g)) = (ids, self.ids.lock()) {
            *g = ids;
        }
        if let Err(e @ IcebergError::Foreign { .. }) = &r {
            c.stopped = Some(e.to_string());
        }
        if r.is_err() {
            // Read the metadata again next time: a failed put may have landed.
            c.state = None;
        }
        let n = r?;
        self.publish(&mut c).await?;
        Ok(n)
    }

    /// Brings the catalog (if any) to the newest version.
    async fn publish(&self, c: &mut Cursor) -> Result<(), IcebergError> {
        let (Some(cat), Some(Some(s))) = (&self.catalog, &c.state) else {
            return Ok(());
        };
        if c.catalog_stopped || c.published == Some(s.version) {
            return Ok(());
        }
        let location = self.settings.location.trim_end_matches('/');
        match cat.publish(location, s.version, &s.meta).await {
            Ok(done) => {
                tracing::debug!(catalog = %cat.describe(), version = s.version, ?done, "Iceberg catalog");
                c.published = Some(s.version);
                Ok(())
            }
            Err(e) => {
                if matches!(e, catalog::CatalogError::Foreign { .. }) {
                    c.catalog_stopped = true;
                }
                Err(e.into())
            }
        }
    }

    async fn sync_locked(
        &self,
        c: &mut Cursor,
        manifest: &Manifest,
        table: &TableState,
        fresh: Option<&Entry>,
    ) -> Result<u64, IcebergError> {
        if c.state.is_none() {
            let loaded = load_latest(&self.store).await?;
            if let Some(s) = &loaded {
                self.check_sluice(manifest, s).await?;
            }
            c.state = Some(loaded);
        }
        let head = table.seq;
        let mut written = 0;
        let mut hint = None;
        loop {
            let cur = c.state.as_ref().and_then(|s| s.as_ref());
            let done = cur
                .and_then(|s| s.meta.sluice_entry())
                .map_or(0, |(seq, _)| seq);
            if head == 0 || done >= head {
                break;
            }
            let ctx = self.ctx(&mut c.table_uuid, manifest, cur).await?;
            let entry;
            let change = match cur {
                // A new table: the whole table as of the newest entry, one snapshot.
                None => {
                    entry = Some(self.entry(manifest, head, fresh).await?);
                    let e = entry.as_ref().ok_or_else(|| corrupt("", "no entry"))?;
                    Change {
                        seq: head,
                        commit_id: &e.commit_id,
                        kind: EntryKind::Append,
                        at_ms: e.committed_at_ms,
                        added: &table.files,
                        removed: &[],
                        ranges: &[],
                        schema: table.schema.as_ref(),
                    }
                }
                Some(_) => {
                    entry = Some(self.entry(manifest, done + 1, fresh).await?);
                    let e = entry.as_ref().ok_or_else(|| corrupt("", "no entry"))?;
                    Change {
                        seq: e.seq,
                        commit_id: &e.commit_id,
                        kind: e.kind,
                        at_ms: e.committed_at_ms,
                        added: &e.files,
                        removed: &e.removed,
                        ranges: &e.ranges,
                        schema: e.schema.as_ref(),
                    }
                }
            };
            // The entries of the manifests the projection rewrites.
            let mut prev = cur.cloned();
            if let Some(p) = prev.as_mut() {
                let need: Vec<String> = needs_contents(Some(p), &change)
                    .into_iter()
                    .map(|m| m.path.clone())
                    .collect();
                for path in need {
                    let entries = self.read_manifest(&ctx, &path).await?;
                    p.contents.insert(path, entries);
                }
            }
            let unique = uuid::Uuid::new_v4().simple().to_string();
            let projected = project(prev.as_ref(), &change, &ctx, &unique).map_err(|e| {
                corrupt(&metadata_rel(prev.as_ref().map_or(1, |p| p.version + 1)), e)
            })?;
            for (rel, body) in projected.files {
                self.store.put_new(&rel, Bytes::from(body)).await?;
            }
            let version = projected.state.version;
            let rel = metadata_rel(version);
            match self
                .store
                .put_new(&rel, Bytes::from(projected.metadata))
                .await?
            {
                Created::New => {
                    written += 1;
                    c.state = Some(Some(projected.state));
                }
                Created::AlreadyThere { .. } => {
                    // Another writer's (or our own, its answer lost): go on from what is there.
                    let there = load_version(&self.store, version).await?;
                    self.check_sluice(manifest, &there).await?;
                    c.state = Some(Some(there));
                }
            }
            hint = Some(version);
            crate::failpoint::hit("after-iceberg-commit");
        }
        if let Some(v) = hint {
            self.store
                .put(VERSION_HINT, Bytes::from(v.to_string()))
                .await?;
        }
        Ok(written)
    }

    /// Entry `seq`: `fresh` when it is that one, else read.
    async fn entry(
        &self,
        manifest: &Manifest,
        seq: u64,
        fresh: Option<&Entry>,
    ) -> Result<Entry, IcebergError> {
        if let Some(e) = fresh.filter(|e| e.seq == seq) {
            return Ok(e.clone());
        }
        manifest
            .read_entry(seq)
            .await?
            .ok_or_else(|| corrupt(&Entry::rel(seq), "the manifest entry to project is missing"))
    }

    /// The projection context; the table uuid comes from the metadata or the first entry.
    async fn ctx(
        &self,
        table_uuid: &mut Option<String>,
        manifest: &Manifest,
        cur: Option<&State>,
    ) -> Result<Ctx, IcebergError> {
        let uuid = match (cur, &*table_uuid) {
            (Some(s), _) => s.meta.table_uuid.clone(),
            (None, Some(u)) => u.clone(),
            (None, None) => {
                let first = self.entry(manifest, 1, None).await?;
                let u = project::table_uuid(&first.commit_id);
                *table_uuid = Some(u.clone());
                u
            }
        };
        let s = &self.settings;
        Ok(Ctx {
            location: s.location.trim_end_matches('/').to_string(),
            table_uuid: uuid,
            name: s.name.clone(),
            fallback: s.schema.clone(),
            event_time: s.event_time.clone(),
            window_ms: s.window_ms,
            retention_ms: i64::try_from(s.retention.as_millis()).unwrap_or(i64::MAX),
            max_snapshots: s.max_snapshots,
        })
    }

    async fn read_manifest(
        &self,
        ctx: &Ctx,
        abs: &str,
    ) -> Result<Vec<avro::ManifestEntry>, IcebergError> {
        let rel = ctx
            .rel(abs)
            .ok_or_else(|| corrupt(abs, "a manifest outside the table's location"))?;
        let body = self
            .store
            .get(rel)
            .await?
            .ok_or_else(|| corrupt(rel, "a manifest of the current snapshot is missing"))?;
        avro::read_manifest(&body).map_err(|e| corrupt(rel, e))
    }

    /// A version's current snapshot must name a manifest entry by its seq and commit id.
    async fn check_sluice(&self, manifest: &Manifest, s: &State) -> Result<(), IcebergError> {
        let foreign = |what: String| IcebergError::Foreign {
            version: s.version,
            path: metadata_rel(s.version),
            what,
        };
        let Some((seq, commit_id)) = s.meta.sluice_entry() else {
            let op = s
                .meta
                .current_snapshot()
                .and_then(|c| c.summary.get("operation"))
                .map(|o| format!(" (an `{o}` snapshot)"))
                .unwrap_or_default();
            return Err(foreign(op));
        };
        match manifest.read_entry(seq).await? {
            Some(e) if e.commit_id == commit_id => Ok(()),
            _ => Err(foreign(format!(
                " (its snapshot names entry {seq} with another commit id)"
            ))),
        }
    }
}

/// The newest version: the hint, then any written after it (a writer may have died between
/// a version and its hint); without a hint, the newest listed.
pub async fn latest_version(store: &TableStore) -> Result<Option<u64>, StoreError> {
    let mut v = match store.get(VERSION_HINT).await? {
        Some(b) => String::from_utf8_lossy(&b).trim().parse::<u64>().ok(),
        None => None,
    };
    if v.is_none() {
        v = store
            .list(METADATA_DIR)
            .await?
            .iter()
            .filter_map(|m| store.rel(&m.location))
            .filter_map(|rel| {
                rel.strip_prefix("metadata/v")?
                    .strip_suffix(".metadata.json")?
                    .parse::<u64>()
                    .ok()
            })
            .max();
    }
    let Some(mut v) = v else { return Ok(None) };
    while store.head(&metadata_rel(v + 1)).await?.is_some() {
        v += 1;
    }
    Ok(Some(v))
}

/// Reads version `v`: its metadata and its current snapshot's manifest list.
pub async fn load_version(store: &TableStore, v: u64) -> Result<State, IcebergError> {
    let rel = metadata_rel(v);
    let body = store
        .get(&rel)
        .await?
        .ok_or_else(|| corrupt(&rel, "the metadata file is missing"))?;
    let meta: TableMetadata = serde_json::from_slice(&body).map_err(|e| corrupt(&rel, e))?;
    let manifests = match meta.current_snapshot() {
        None => Vec::new(),
        Some(s) => {
            let loc = meta.location.trim_end_matches('/');
            let list_rel = s
                .manifest_list
                .strip_prefix(loc)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| corrupt(&s.manifest_list, "a manifest list outside the table"))?;
            let list = store
                .get(list_rel)
                .await?
                .ok_or_else(|| corrupt(list_rel, "the manifest list is missing"))?;
            avro::read_manifest_list(&list).map_err(|e| corrupt(list_rel, e))?
        }
    };
    Ok(State {
        version: v,
        meta,
        manifests,
        contents: Default::default(),
    })
}

/// The newest version's state, if the table has Iceberg metadata.
pub async fn load_latest(store: &TableStore) -> Result<Option<State>, IcebergError> {
    match latest_version(store).await? {
        None => Ok(None),
        Some(v) => Ok(Some(load_version(store, v).await?)),
    }
}

#[cfg(test)]
mod tests;
