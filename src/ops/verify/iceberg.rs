//! The Iceberg metadata against the manifest: every snapshot the latest metadata keeps names a
//! manifest entry by seq and commit id, and its live files are the manifest's after that entry.

use std::collections::{BTreeSet, HashMap};

use crate::ops::verify::delta::EntryFiles;
use crate::ops::verify::report::{CatalogReport, IcebergReport, Violation};
use crate::table::iceberg::catalog::{Catalog, Pointer};
use crate::table::iceberg::metadata::{SUMMARY_COMMIT_ID, SUMMARY_SEQ};
use crate::table::iceberg::{avro, load_latest, load_version, IcebergError};
use crate::table::store::TableStore;

/// At most this many paths per mismatch are named.
const NAMED: usize = 5;

/// Checks the table's Iceberg metadata against `entries` (entry `i + 1` at index `i`). `None`
/// when the table has none.
pub async fn check(
    store: &TableStore,
    entries: &[EntryFiles],
) -> Result<Option<(IcebergReport, Vec<Violation>)>, IcebergError> {
    let Some(latest) = load_latest(store).await? else {
        return Ok(None);
    };
    let loc = latest.meta.location.trim_end_matches('/').to_string();
    let rel = |abs: &str| {
        abs.strip_prefix(&loc)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string)
    };
    let mut violations = Vec::new();
    let mut report = IcebergReport {
        version: latest.version,
        ..Default::default()
    };
    // The kept snapshots in the order of the entries they name.
    let mut snaps: Vec<_> = latest.meta.snapshots.iter().collect();
    snaps.sort_by_key(|s| s.sequence_number);
    let mut manifest: BTreeSet<String> = BTreeSet::new();
    let mut replayed = 0usize;
    let mut manifests: HashMap<String, Vec<avro::ManifestEntry>> = HashMap::new();
    let mut projected = 0u64;
    for snap in snaps {
        let seq = snap
            .summary
            .get(SUMMARY_SEQ)
            .and_then(|s| s.parse::<u64>().ok());
        let entry = seq.and_then(|s| entries.get((s as usize).wrapping_sub(1)));
        let ours = match (entry, snap.summary.get(SUMMARY_COMMIT_ID)) {
            (Some(e), Some(id)) => &e.commit_id == id,
            _ => false,
        };
        if !ours {
            violations.push(Violation::IcebergForeignSnapshot {
                snapshot_id: snap.snapshot_id,
                operation: snap.summary.get("operation").cloned(),
            });
            continue;
        }
        let seq = seq.unwrap_or(0);
        projected = projected.max(seq);
        while replayed < seq as usize {
            let e = &entries[replayed];
            for p in &e.removed {
                manifest.remove(p);
            }
            manifest.extend(e.added.iter().cloned());
            replayed += 1;
        }
        let list_rel = rel(&snap.manifest_list).unwrap_or_default();
        let body = store
            .get(&list_rel)
            .await?
            .ok_or_else(|| IcebergError::Corrupt {
                path: snap.manifest_list.clone(),
                message: "the manifest list of a kept snapshot is missing".into(),
            })?;
        let list = avro::read_manifest_list(&body).map_err(|e| IcebergError::Corrupt {
            path: snap.manifest_list.clone(),
            message: e.to_string(),
        })?;
        let mut live = BTreeSet::new();
        for m in list {
            if !manifests.contains_key(&m.path) {
                let r = rel(&m.path).unwrap_or_default();
                let body = store.get(&r).await?.ok_or_else(|| IcebergError::Corrupt {
                    path: m.path.clone(),
                    message: "a manifest of a kept snapshot is missing".into(),
                })?;
                let read = avro::read_manifest(&body).map_err(|e| IcebergError::Corrupt {
                    path: m.path.clone(),
                    message: e.to_string(),
                })?;
                manifests.insert(m.path.clone(), read);
            }
            for e in manifests[&m.path]
                .iter()
                .filter(|e| e.status != avro::DELETED)
            {
                live.insert(rel(&e.file.path).unwrap_or_else(|| e.file.path.clone()));
            }
        }
        if live != manifest {
            violations.push(Violation::IcebergFilesMismatch {
                seq,
                snapshot_id: snap.snapshot_id,
                only_in_iceberg: live.difference(&manifest).take(NAMED).cloned().collect(),
                only_in_manifest: manifest.difference(&live).take(NAMED).cloned().collect(),
            });
        }
        report.snapshots += 1;
        if Some(snap.snapshot_id) == latest.meta.current_snapshot_id {
            report.files = live.len() as u64;
        }
    }
    report.behind = (entries.len() as u64).saturating_sub(projected);
    Ok(Some((report, violations)))
}

/// Where the job's catalog has the table, against the manifest's `entries` entries: a table at
/// metadata sluice did not write is a violation; one behind is not (the next commit brings it).
pub async fn check_catalog(
    store: &TableStore,
    catalog: &Catalog,
    location: &str,
    entries: u64,
) -> (CatalogReport, Option<Violation>) {
    let mut report = CatalogReport {
        table: catalog.describe(),
        seq: None,
        behind: entries,
    };
    let seq = match catalog.pointer(location).await {
        Ok(Pointer::Missing) => None,
        Ok(Pointer::Entry(seq)) => Some(seq),
        Ok(Pointer::Version(v)) => match load_version(store, v).await {
            Ok(s) => s.meta.sluice_entry().map(|(seq, _)| seq),
            Err(e) => {
                let error = format!("its version {v}: {e}");
                return (
                    report,
                    Some(Violation::IcebergCatalogUnreadable {
                        catalog: catalog.describe(),
                        error,
                    }),
                );
            }
        },
        Ok(Pointer::Foreign(current)) => {
            return (
                report,
                Some(Violation::IcebergCatalogForeign {
                    catalog: catalog.describe(),
                    current,
                }),
            )
        }
        Err(e) => {
            return (
                report,
                Some(Violation::IcebergCatalogUnreadable {
                    catalog: catalog.describe(),
                    error: e.to_string(),
                }),
            )
        }
    };
    report.seq = seq;
    report.behind = entries.saturating_sub(seq.unwrap_or(0));
    (report, None)
}
