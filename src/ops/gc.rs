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
use crate::table::iceberg::catalog::Pointer;
use crate::table::iceberg::project::metadata_rel;
use crate::table::iceberg::{avro, load_latest, load_version, IcebergError, IcebergLog};
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
    /// Iceberg metadata files no kept snapshot or metadata log names, old enough to delete
    /// (deleted unless dry run): older metadata versions, expired snapshots' manifest lists,
    /// merged-away manifests, a losing writer's files.
    pub iceberg_deleted: Vec<String>,
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
    iceberg: Option<&IcebergLog>,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    // List first, read the manifest second: a file committed in between is then referenced.
    let listed = m.store().list("").await?;
    let state = m.load().await?;
    let mut time_travel = match delta_retention {
        Some(r) => delta_references(m.store(), r).await?,
        None => HashSet::new(),
    };
    let keep = match iceberg {
        Some(i) => Some(iceberg_references(m.store(), i).await?),
        None => None,
    };
    if let Some(k) = &keep {
        time_travel.extend(k.data.iter().cloned());
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
        if keep.as_ref().is_some_and(|k| iceberg_garbage(rel, k)) {
            if meta.last_modified <= cutoff {
                if !dry_run {
                    m.store().delete(rel).await?;
                }
                report.iceberg_deleted.push(rel.to_string());
            }
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

/// What the Iceberg metadata keeps: the data files, manifests and manifest lists of every
/// snapshot the latest metadata (and the catalog's table, when it is elsewhere) keeps, and the
/// metadata files its metadata log names.
#[derive(Debug, Default)]
struct IcebergKeep {
    data: HashSet<String>,
    metadata: HashSet<String>,
    /// The newest version (`metadata/v<N>.metadata.json`): newer ones are never deleted.
    latest: u64,
}

async fn iceberg_references(
    store: &TableStore,
    iceberg: &IcebergLog,
) -> Result<IcebergKeep, IcebergError> {
    let Some(latest) = load_latest(store).await? else {
        return Ok(IcebergKeep::default());
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
    let mut keep = IcebergKeep {
        latest: latest.version,
        ..Default::default()
    };
    let mut metas = vec![latest.meta.clone()];
    keep.metadata.insert(metadata_rel(latest.version));
    // The catalog's table, if it is at another version (behind) or is the catalog's own file.
    if let Some(catalog) = iceberg.catalog() {
        match catalog.pointer(&loc).await? {
            Pointer::Version(v) if v != latest.version => {
                metas.push(load_version(store, v).await?.meta);
                keep.metadata.insert(metadata_rel(v));
            }
            Pointer::Entry(_) => {
                if let Some(m) = catalog.table_metadata().await? {
                    metas.push(m);
                }
            }
            _ => {}
        }
    }
    let mut manifests = HashSet::new();
    for meta in &metas {
        for l in &meta.metadata_log {
            if let Ok(r) = rel(&l.metadata_file) {
                keep.metadata.insert(r);
            }
        }
        for snap in &meta.snapshots {
            let list_rel = rel(&snap.manifest_list)?;
            if !keep.metadata.insert(list_rel.clone()) {
                continue;
            }
            let list = read(list_rel).await?;
            let list = avro::read_manifest_list(&list).map_err(|e| IcebergError::Corrupt {
                path: snap.manifest_list.clone(),
                message: e.to_string(),
            })?;
            for mf in list {
                if !manifests.insert(mf.path.clone()) {
                    continue;
                }
                let mf_rel = rel(&mf.path)?;
                keep.metadata.insert(mf_rel.clone());
                let body = read(mf_rel).await?;
                let entries = avro::read_manifest(&body).map_err(|e| IcebergError::Corrupt {
                    path: mf.path.clone(),
                    message: e.to_string(),
                })?;
                for e in entries.iter().filter(|e| e.status != avro::DELETED) {
                    keep.data.insert(rel(&e.file.path)?);
                }
            }
        }
    }
    Ok(keep)
}

/// Whether `rel` is an Iceberg metadata file sluice writes that `keep` no longer needs: a
/// metadata file older than the newest and out of the metadata log, or a manifest or
/// manifest list no kept snapshot lists (expired, merged away, or a losing writer's). Files
/// others write in `metadata/` (a REST catalog's own metadata files) are never touched.
fn iceberg_garbage(rel: &str, keep: &IcebergKeep) -> bool {
    let Some(name) = rel.strip_prefix("metadata/") else {
        return false;
    };
    if name.contains('/') || keep.metadata.contains(rel) {
        return false;
    }
    if let Some(v) = name
        .strip_prefix('v')
        .and_then(|n| n.strip_suffix(".metadata.json"))
        .and_then(|n| n.parse::<u64>().ok())
    {
        return v < keep.latest;
    }
    let Some(stem) = name.strip_suffix(".avro") else {
        return false;
    };
    // `snap-<id>-<seq>-<uuid>.avro` and `<seq:020>-<uuid>-m<k>.avro`.
    stem.starts_with("snap-")
        || stem.split_once('-').is_some_and(|(seq, rest)| {
            seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()) && rest.contains("-m")
        })
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

    #[test]
    fn iceberg_garbage_is_only_sluices_own_unneeded_metadata() {
        let keep = IcebergKeep {
            data: HashSet::new(),
            metadata: [
                "metadata/v7.metadata.json",
                "metadata/v6.metadata.json",
                "metadata/snap-1-7-aa.avro",
                "metadata/00000000000000000007-aa-m0.avro",
            ]
            .into_iter()
            .map(str::to_string)
            .collect(),
            latest: 7,
        };
        for (rel, garbage) in [
            ("metadata/v7.metadata.json", false),
            ("metadata/v6.metadata.json", false),
            ("metadata/v5.metadata.json", true),
            ("metadata/v8.metadata.json", false),
            ("metadata/snap-1-7-aa.avro", false),
            ("metadata/snap-2-5-bb.avro", true),
            ("metadata/00000000000000000007-aa-m0.avro", false),
            ("metadata/00000000000000000005-bb-m1.avro", true),
            // A REST catalog's own metadata files, the hint, anything else: never.
            ("metadata/00003-4a1f.metadata.json", false),
            ("metadata/version-hint.text", false),
            ("metadata/other.avro", false),
            ("date=2026-11-24/v1.metadata.json", false),
        ] {
            assert_eq!(iceberg_garbage(rel, &keep), garbage, "{rel}");
        }
    }
}
