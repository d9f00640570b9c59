//! `sluice gc`: deletes data and dead-letter files no manifest entry references (left by
//! crashes before a commit, or swapped out by a replace) once they are older than a grace
//! period. A file the Delta log still shows, or removed from it less than the Delta retention
//! ago (readers may time-travel to a version that holds it), is kept; so is a file any Iceberg
//! snapshot the metadata keeps lists.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::ManifestError;
use crate::table::delta::action::decode_path;
use crate::table::delta::{latest_version, load_snapshot, DeltaError};
use crate::table::entry::{DEAD_LETTER_DIR, LOG_DIR};
use crate::table::iceberg::{avro, load_latest, IcebergError};
use crate::table::manifest::{Manifest, CHECKPOINT_DIR, LAST_CHECKPOINT};
use crate::table::store::TableStore;

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub scanned: u64,
    pub referenced: u64,
    /// Unreferenced files old enough to delete (deleted unless dry run).
    pub deleted: Vec<String>,
    /// Unreferenced files younger than the grace period (perhaps an in-flight commit).
    pub kept_young: Vec<String>,
    /// Files the manifest no longer references that a Delta version inside the retention
    /// period still does (live in the log's latest version, or removed from it recently).
    pub kept_for_time_travel: Vec<String>,
    pub dry_run: bool,
}

/// Whether `rel` is a file sluice writes (never touch anything else under the table).
fn is_sluice_data_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.ends_with(".parquet")
        && (name.starts_with("part-") || rel.starts_with(&format!("{DEAD_LETTER_DIR}/")))
}

/// Deletes the table's data and dead-letter files that no manifest entry references and that
/// were last modified more than `older_than` ago.
pub async fn gc(
    m: &Manifest,
    older_than: std::time::Duration,
    delta_retention: Option<std::time::Duration>,
    iceberg: bool,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    // List first, read the manifest second: a file committed in between is then referenced.
    let listed = m.store().list("").await?;
    let state = m.load().await?;
    let mut time_travel = match delta_retention {
        Some(r) => delta_references(m.store(), r).await?,
        None => HashSet::new(),
    };
    if iceberg {
        time_travel.extend(iceberg_references(m.store()).await?);
    }
    let referenced: HashSet<&str> = state
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(state.dead_letters.iter().map(|d| d.path.as_str()))
        .collect();
    let older_than = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let cutoff = chrono::Utc::now()
        .checked_sub_signed(older_than)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut report = GcReport {
        dry_run,
        ..Default::default()
    };
    for meta in listed {
        let Some(rel) = m.store().rel(&meta.location) else {
            continue;
        };
        let rel = rel.as_str();
        if rel.starts_with(LOG_DIR) || rel.starts_with(CHECKPOINT_DIR) || rel == LAST_CHECKPOINT {
            continue;
        }
        if !is_sluice_data_file(rel) {
            continue;
        }
        report.scanned += 1;
        if referenced.contains(rel) {
            report.referenced += 1;
        } else if time_travel.contains(rel) {
            report.kept_for_time_travel.push(rel.to_string());
        } else if meta.last_modified <= cutoff {
            if !dry_run {
                m.store().delete(rel).await?;
            }
            report.deleted.push(rel.to_string());
        } else {
            report.kept_young.push(rel.to_string());
        }
    }
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
    #[error("reading the Delta log (gc deletes nothing it cannot check): {0}")]
    Delta(#[from] DeltaError),
    #[error("reading the Iceberg metadata (gc deletes nothing it cannot check): {0}")]
    Iceberg(#[from] IcebergError),
}

/// Files an Iceberg reader may still open: those every snapshot the latest metadata keeps
/// lists (its manifests read once each).
async fn iceberg_references(store: &TableStore) -> Result<HashSet<String>, IcebergError> {
    let Some(latest) = load_latest(store).await? else {
        return Ok(HashSet::new());
    };
    let loc = latest.meta.location.trim_end_matches('/').to_string();
    let rel = |abs: &str| -> Result<String, IcebergError> {
        abs.strip_prefix(&loc)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string)
            .ok_or_else(|| IcebergError::Corrupt {
                path: abs.to_string(),
                message: "outside the table's location".into(),
            })
    };
    let read = |r: String| async move {
        store.get(&r).await?.ok_or(IcebergError::Corrupt {
            path: r,
            message: "listed by a kept snapshot, and missing".into(),
        })
    };
    let mut manifests = HashSet::new();
    let mut out = HashSet::new();
    for snap in &latest.meta.snapshots {
        let list = read(rel(&snap.manifest_list)?).await?;
        let list = avro::read_manifest_list(&list).map_err(|e| IcebergError::Corrupt {
            path: snap.manifest_list.clone(),
            message: e.to_string(),
        })?;
        for mf in list {
            if !manifests.insert(mf.path.clone()) {
                continue;
            }
            let body = read(rel(&mf.path)?).await?;
            let entries = avro::read_manifest(&body).map_err(|e| IcebergError::Corrupt {
                path: mf.path.clone(),
                message: e.to_string(),
            })?;
            for e in entries.iter().filter(|e| e.status != avro::DELETED) {
                out.insert(rel(&e.file.path)?);
            }
        }
    }
    Ok(out)
}

/// Files a Delta reader may still open: live at the log's latest version, or removed from it
/// less than `retention` ago.
async fn delta_references(
    store: &TableStore,
    retention: std::time::Duration,
) -> Result<HashSet<String>, DeltaError> {
    let Some(latest) = latest_version(store).await? else {
        return Ok(HashSet::new());
    };
    let s = load_snapshot(store, latest).await?;
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let since = chrono::Utc::now()
        .checked_sub_signed(retention)
        .map_or(i64::MIN, |t| t.timestamp_millis());
    let recent = s
        .removed
        .values()
        .filter(|r| r.deletion_timestamp.unwrap_or(i64::MAX) >= since)
        .map(|r| &r.path);
    Ok(s.files
        .keys()
        .chain(recent)
        .map(|p| decode_path(p))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sluice_files_are_candidates() {
        assert!(is_sluice_data_file(
            "date=2026-11-24/hour=01/part-t-0-000-abc.parquet"
        ));
        assert!(is_sluice_data_file(
            "_sluice/dead_letters/t-0/0001-abc.parquet"
        ));
        assert!(!is_sluice_data_file("date=2026-11-24/notes.txt"));
        assert!(!is_sluice_data_file("other/data.parquet"));
    }
}
