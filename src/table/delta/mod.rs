//! The Delta Lake log: a projection of the manifest that every engine reads.
//!
//! The manifest stays the truth (offset ranges, dead letters, kinds); `_delta_log/` is its
//! projection, version for version: Delta version `v` is manifest entry `v + 1`, projected by
//! [`action::project`], a pure function of the entry. A version is written with a create-only
//! put after its entry is published, by whichever writer gets there first (a loader right after
//! its commit, any writer on start and before each commit, `sluice delta sync`); finding it
//! already there is success when its `commitInfo` names the entry's `commit_id`. A version
//! another writer put there (an `OPTIMIZE` from Spark) stops the projection with
//! [`DeltaError::Foreign`]; loading goes on through the manifest.
//!
//! Versions are written in order, each only after the one before it exists, so the log has no
//! holes and a reader sees a prefix of the manifest: never a file the manifest does not list at
//! that entry, never one it removed. Every `checkpoint_every` versions a Parquet checkpoint and
//! `_last_checkpoint` follow.

pub mod action;
pub mod snapshot;
pub mod stats;
pub mod types;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{ManifestError, StoreError};
use crate::table::entry::{Entry, SchemaDef};
use crate::table::manifest::Manifest;
use crate::table::store::{Created, TableStore};
use action::{commit_body, parse_commit, project, sluice_info, Table};
use snapshot::{decode_checkpoint, encode_checkpoint, CheckpointError, Snapshot};

pub const DELTA_LOG_DIR: &str = "_delta_log";
pub const DELTA_LAST_CHECKPOINT: &str = "_delta_log/_last_checkpoint";

/// Where Delta version `v`'s commit file lives, relative to the table root.
pub fn commit_rel(v: u64) -> String {
    format!("{DELTA_LOG_DIR}/{v:020}.json")
}

/// Where the checkpoint of version `v` lives.
pub fn checkpoint_rel(v: u64) -> String {
    format!("{DELTA_LOG_DIR}/{v:020}.checkpoint.parquet")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "Delta version {version} ({path}) was written by another writer{operation}, not by sluice from manifest entry {seq}: sluice stopped writing this table's Delta log (loading goes on, exactly once, through the manifest). The log is sluice's to write (no OPTIMIZE, DELETE or MERGE from other engines). To resume, move `{DELTA_LOG_DIR}` aside and run `sluice delta sync --job <job>`, which rebuilds it from the manifest"
    )]
    Foreign {
        version: u64,
        seq: u64,
        path: String,
        operation: String,
    },
    /// An earlier [`DeltaError::Foreign`] stopped the projection for this process.
    #[error("not writing the Delta log: {0}")]
    Stopped(String),
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("{path}: {source}")]
    Checkpoint {
        path: String,
        source: CheckpointError,
    },
}

/// How a table's Delta log is kept.
#[derive(Debug, Clone)]
pub struct DeltaSettings {
    /// The job's name (`metaData.name`, `txn.appId`).
    pub name: String,
    /// The job's schema, for tables whose first entry recorded none.
    pub schema: SchemaDef,
    pub checkpoint_every: u64,
    /// How long removed files stay readable by time travel (`delta.deletedFileRetentionDuration`;
    /// `gc` keeps them as long).
    pub retention: Duration,
}

#[derive(Debug, Default)]
struct Cursor {
    /// The next version to write: every version below it exists.
    next: Option<u64>,
    table_id: Option<String>,
    /// The Delta state at `next - 1`, once a checkpoint needed it.
    snapshot: Option<Snapshot>,
    /// Set when another writer's version stopped the projection.
    stopped: Option<String>,
}

/// Keeps a table's `_delta_log/` in step with its manifest.
#[derive(Debug)]
pub struct DeltaLog {
    store: TableStore,
    settings: DeltaSettings,
    cursor: tokio::sync::Mutex<Cursor>,
}

impl DeltaLog {
    pub fn new(store: TableStore, settings: DeltaSettings) -> Self {
        DeltaLog {
            store,
            settings,
            cursor: Default::default(),
        }
    }

    pub fn settings(&self) -> &DeltaSettings {
        &self.settings
    }

    /// Writes every Delta version the manifest has (entries up to `head`) and the log lacks;
    /// `fresh` is an entry the caller already holds (saves reading it back). Returns the
    /// versions written by this call.
    pub async fn sync(
        &self,
        manifest: &Manifest,
        head: u64,
        fresh: Option<&Entry>,
    ) -> Result<u64, DeltaError> {
        let mut c = self.cursor.lock().await;
        if let Some(why) = &c.stopped {
            return Err(DeltaError::Stopped(why.clone()));
        }
        let next = match c.next {
            Some(n) => n,
            None => match latest_version(&self.store).await? {
                None => 0,
                Some(v) => {
                    // The latest version must be sluice's (every one before it was checked by
                    // whoever wrote the one after).
                    if let Err(e) = self.check_latest(manifest, v).await {
                        if let DeltaError::Foreign { .. } = &e {
                            c.stopped = Some(e.to_string());
                        }
                        return Err(e);
                    }
                    v + 1
                }
            },
        };
        c.next = Some(next);
        let every = self.settings.checkpoint_every.max(1);
        // Only the last checkpoint due among the versions this call writes: a writer catching
        // up on many versions writes one, not one per `every` (readers open from the latest).
        let checkpoint_at = (next..head).rev().find(|v| *v > 0 && v % every == 0);
        if checkpoint_at.is_some() && c.snapshot.is_none() {
            c.snapshot = Some(match next {
                0 => Snapshot::default(),
                n => load_snapshot(&self.store, n - 1).await?,
            });
        }
        let mut written = 0;
        for v in next..head {
            let read;
            let entry =
                match fresh {
                    Some(e) if e.seq == v + 1 => e,
                    _ => {
                        read = manifest.read_entry(v + 1).await?.ok_or_else(|| {
                            DeltaError::Corrupt {
                                path: Entry::rel(v + 1),
                                message: "the manifest entry to project is missing".into(),
                            }
                        })?;
                        &read
                    }
                };
            let table = self.table(&mut c, manifest, entry).await?;
            let actions = project(entry, &table);
            let body = commit_body(&actions).map_err(|e| corrupt(&commit_rel(v), e))?;
            let rel = commit_rel(v);
            match self.store.put_new(&rel, Bytes::from(body)).await? {
                Created::New => written += 1,
                Created::AlreadyThere { .. } => {
                    if let Err(e) = self.check_ours(v, entry).await {
                        if let DeltaError::Foreign { .. } = &e {
                            c.stopped = Some(e.to_string());
                        }
                        return Err(e);
                    }
                }
            }
            crate::failpoint::hit("after-delta-commit");
            c.next = Some(v + 1);
            if let Some(s) = c.snapshot.as_mut() {
                s.apply(v, &actions);
                if checkpoint_at == Some(v) {
                    self.write_checkpoint(s, entry.committed_at_ms).await?;
                }
            }
        }
        Ok(written)
    }

    /// The projection context; the table id comes from the first entry.
    async fn table(
        &self,
        c: &mut Cursor,
        manifest: &Manifest,
        entry: &Entry,
    ) -> Result<Table, DeltaError> {
        let id = match &c.table_id {
            Some(id) => id.clone(),
            None => {
                let first = match entry.seq {
                    1 => entry.commit_id.clone(),
                    _ => {
                        manifest
                            .read_entry(1)
                            .await?
                            .ok_or_else(|| DeltaError::Corrupt {
                                path: Entry::rel(1),
                                message: "the first manifest entry is missing".into(),
                            })?
                            .commit_id
                    }
                };
                let id = action::table_id(&first);
                c.table_id = Some(id.clone());
                id
            }
        };
        Ok(Table {
            id,
            name: self.settings.name.clone(),
            fallback: self.settings.schema.clone(),
            configuration: configuration(self.settings.retention),
        })
    }

    /// The log's latest version `v` must be the projection of entry `v + 1`.
    async fn check_latest(&self, manifest: &Manifest, v: u64) -> Result<(), DeltaError> {
        match manifest.read_entry(v + 1).await? {
            Some(entry) => self.check_ours(v, &entry).await,
            None => {
                let actions = read_commit(&self.store, v).await?.unwrap_or_default();
                Err(DeltaError::Foreign {
                    version: v,
                    seq: v + 1,
                    path: commit_rel(v),
                    operation: foreign_operation(&actions),
                })
            }
        }
    }

    /// Version `v` exists: it must be `entry`'s projection (whoever wrote it).
    async fn check_ours(&self, v: u64, entry: &Entry) -> Result<(), DeltaError> {
        let rel = commit_rel(v);
        let body = self
            .store
            .get(&rel)
            .await?
            .ok_or_else(|| DeltaError::Corrupt {
                path: rel.clone(),
                message: "exists and then does not".into(),
            })?;
        let actions = parse_commit(&body).map_err(|e| corrupt(&rel, e))?;
        match sluice_info(&actions) {
            Some(info) if info.commit_id == entry.commit_id => Ok(()),
            _ => Err(DeltaError::Foreign {
                version: v,
                seq: entry.seq,
                path: rel,
                operation: foreign_operation(&actions),
            }),
        }
    }

    async fn write_checkpoint(&self, s: &Snapshot, at_ms: i64) -> Result<(), DeltaError> {
        let Some(v) = s.version else { return Ok(()) };
        let retention = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        let actions = s.checkpoint_actions(at_ms.saturating_sub(retention));
        let rel = checkpoint_rel(v);
        let body = encode_checkpoint(&actions).map_err(|source| DeltaError::Checkpoint {
            path: rel.clone(),
            source,
        })?;
        // A checkpoint is a function of the version: one already there is this one.
        self.store.put_new(&rel, Bytes::from(body)).await?;
        let hint = serde_json::json!({"version": v, "size": actions.len()}).to_string();
        self.store
            .put(DELTA_LAST_CHECKPOINT, Bytes::from(hint))
            .await?;
        tracing::debug!(
            version = v,
            actions = actions.len(),
            "wrote a Delta checkpoint"
        );
        Ok(())
    }
}

/// `metaData.configuration`: the retention engines' VACUUM and time travel should respect.
fn configuration(retention: Duration) -> BTreeMap<String, String> {
    let interval = format!("interval {} seconds", retention.as_secs());
    BTreeMap::from([
        ("delta.deletedFileRetentionDuration".to_string(), interval),
        ("delta.appendOnly".to_string(), "false".to_string()),
    ])
}

fn corrupt(path: &str, e: impl std::fmt::Display) -> DeltaError {
    DeltaError::Corrupt {
        path: path.to_string(),
        message: e.to_string(),
    }
}

fn foreign_operation(actions: &[action::Action]) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            action::Action::CommitInfo(c) => Some(format!(" ({})", c.operation)),
            _ => None,
        })
        .unwrap_or_default()
}

/// The versions of the log: every commit file's version, ascending, and the checkpoints'.
pub async fn list_versions(store: &TableStore) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
    list_versions_from(store, 0).await
}

/// The versions of the log from `from` on (commit files, checkpoints), listing only the tail
/// of the log where the store can.
async fn list_versions_from(
    store: &TableStore,
    from: u64,
) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
    let mut commits = Vec::new();
    let mut checkpoints = Vec::new();
    // Every file of version `from` or later sorts after its bare 20-digit number.
    let listed = match from {
        0 => store.list(DELTA_LOG_DIR).await?,
        v => {
            store
                .list_after(DELTA_LOG_DIR, &format!("{DELTA_LOG_DIR}/{v:020}"))
                .await?
        }
    };
    for meta in listed {
        let Some(rel) = store.rel(&meta.location) else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap_or_default();
        if let Some(v) = name.strip_suffix(".json").and_then(|n| n.parse().ok()) {
            commits.push(v);
        } else if let Some(v) = name
            .strip_suffix(".checkpoint.parquet")
            .and_then(|n| n.parse().ok())
        {
            checkpoints.push(v);
        }
    }
    commits.retain(|&v| v >= from);
    checkpoints.retain(|&v| v >= from);
    commits.sort_unstable();
    checkpoints.sort_unstable();
    Ok((commits, checkpoints))
}

/// The version `_last_checkpoint` names: a hint (a reader's too), so one that cannot be read
/// is no hint rather than an error.
async fn checkpoint_hint(store: &TableStore) -> Result<Option<u64>, StoreError> {
    let Some(body) = store.get(DELTA_LAST_CHECKPOINT).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64)))
}

/// The latest version in the log, if any: the versions from the last checkpoint on (on S3, GCS
/// and Azure one listing of the log's tail, whatever its length).
pub async fn latest_version(store: &TableStore) -> Result<Option<u64>, StoreError> {
    if let Some(hint) = checkpoint_hint(store).await? {
        if let Some(&v) = list_versions_from(store, hint).await?.0.last() {
            return Ok(Some(v));
        }
    }
    Ok(list_versions(store).await?.0.last().copied())
}

/// Reads commit file `v`.
pub async fn read_commit(
    store: &TableStore,
    v: u64,
) -> Result<Option<Vec<action::Action>>, DeltaError> {
    let rel = commit_rel(v);
    match store.get(&rel).await? {
        None => Ok(None),
        Some(body) => Ok(Some(parse_commit(&body).map_err(|e| corrupt(&rel, e))?)),
    }
}

/// Reads the checkpoint of version `v`.
pub async fn read_checkpoint(store: &TableStore, v: u64) -> Result<Option<Snapshot>, DeltaError> {
    let rel = checkpoint_rel(v);
    let Some(body) = store.get(&rel).await? else {
        return Ok(None);
    };
    let actions = decode_checkpoint(body).map_err(|source| DeltaError::Checkpoint {
        path: rel.clone(),
        source,
    })?;
    let mut s = Snapshot::default();
    s.apply(v, &actions);
    Ok(Some(s))
}

/// The table's Delta state at version `v`, as a reader builds it: the latest checkpoint at or
/// below `v`, then the commits after it.
pub async fn load_snapshot(store: &TableStore, v: u64) -> Result<Snapshot, DeltaError> {
    // The checkpoint `_last_checkpoint` names when it is at or below `v` (no listing), else
    // the latest listed at or below `v`.
    let mut start = None;
    if let Some(hint) = checkpoint_hint(store).await?.filter(|&h| h <= v) {
        start = read_checkpoint(store, hint).await?;
    }
    if start.is_none() {
        let (_, checkpoints) = list_versions(store).await?;
        if let Some(&cp) = checkpoints.iter().rev().find(|&&c| c <= v) {
            start = read_checkpoint(store, cp).await?;
        }
    }
    let from = start
        .as_ref()
        .and_then(|s| s.version)
        .map_or(0, |cp| cp + 1);
    let mut s = start.unwrap_or_default();
    for w in from..=v {
        let actions = read_commit(store, w)
            .await?
            .ok_or_else(|| DeltaError::Corrupt {
                path: commit_rel(w),
                message: "a version of the log is missing".into(),
            })?;
        s.apply(w, &actions);
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
