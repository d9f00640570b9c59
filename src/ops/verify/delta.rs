//! The Delta log against the manifest: version `v` must be entry `v + 1`'s projection, so the
//! log's live files equal the manifest's at every version, and each checkpoint equals the log
//! replayed up to it.

use std::collections::BTreeSet;

use crate::ops::verify::report::{DeltaReport, Violation};
use crate::table::delta::action::{decode_path, sluice_info, Action};
use crate::table::delta::snapshot::Snapshot;
use crate::table::delta::{list_versions, read_checkpoint, read_commit, DeltaError};
use crate::table::entry::{Entry, DEAD_LETTER_DIR};
use crate::table::store::TableStore;

/// What an entry adds to and removes from the table's data files.
#[derive(Debug, Clone)]
pub struct EntryFiles {
    pub commit_id: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl EntryFiles {
    pub fn of(e: &Entry) -> Self {
        EntryFiles {
            commit_id: e.commit_id.clone(),
            added: e.files.iter().map(|f| f.path.clone()).collect(),
            removed: e
                .removed
                .iter()
                .filter(|p| !p.starts_with(&format!("{DEAD_LETTER_DIR}/")))
                .cloned()
                .collect(),
        }
    }
}

/// At most this many paths per mismatch are named.
const NAMED: usize = 5;

/// Checks the table's Delta log against `entries` (entry `i + 1` at index `i`). `None` when
/// the table has no Delta log.
pub async fn check(
    store: &TableStore,
    entries: &[EntryFiles],
) -> Result<Option<(DeltaReport, Vec<Violation>)>, DeltaError> {
    let (commits, checkpoints) = list_versions(store).await?;
    if commits.is_empty() && checkpoints.is_empty() {
        return Ok(None);
    }
    let mut violations = Vec::new();
    let mut report = DeltaReport {
        checkpoints: checkpoints.len() as u64,
        ..Default::default()
    };
    let mut delta = Snapshot::default();
    let mut manifest: BTreeSet<String> = BTreeSet::new();
    let latest = commits.last().copied();
    for v in 0..=latest.unwrap_or(0) {
        if latest.is_none() {
            break;
        }
        let Some(actions) = read_commit(store, v).await? else {
            violations.push(Violation::DeltaMissingVersion { version: v });
            break;
        };
        // Another engine's version (an OPTIMIZE) is named as such, with or without an entry
        // at its number; a version of sluice's with no entry is ahead of the manifest.
        let entry = entries.get(v as usize);
        let ours = sluice_info(&actions).map(|i| i.commit_id.as_str());
        let foreign = match (ours, entry) {
            (None, _) => true,
            (Some(id), Some(e)) => id != e.commit_id,
            (Some(_), None) => false,
        };
        if foreign {
            violations.push(Violation::DeltaForeignVersion {
                version: v,
                operation: actions.iter().find_map(|a| match a {
                    Action::CommitInfo(c) => Some(c.operation.clone()),
                    _ => None,
                }),
            });
        }
        let Some(e) = entry else {
            if ours.is_some() {
                violations.push(Violation::DeltaAhead { version: v });
            }
            break;
        };
        delta.apply(v, &actions);
        for p in &e.removed {
            manifest.remove(p);
        }
        manifest.extend(e.added.iter().cloned());
        if let Some(m) = mismatch(v, &delta, &manifest) {
            violations.push(m);
        }
        if checkpoints.contains(&v) {
            match read_checkpoint(store, v).await? {
                Some(cp) if same_state(&cp, &delta) => {}
                _ => violations.push(Violation::DeltaCheckpointMismatch { version: v }),
            }
        }
        report.versions = v + 1;
    }
    report.files = delta.files.len() as u64;
    report.behind = (entries.len() as u64).saturating_sub(report.versions);
    Ok(Some((report, violations)))
}

fn same_state(a: &Snapshot, b: &Snapshot) -> bool {
    a.protocol == b.protocol
        && a.metadata == b.metadata
        && a.txns == b.txns
        && a.files.len() == b.files.len()
        && a.files.iter().zip(&b.files).all(|((pa, x), (pb, y))| {
            pa == pb
                && x.size == y.size
                && x.stats == y.stats
                && x.partition_values == y.partition_values
        })
}

/// The log's live files at `v` against the manifest's, by path.
fn mismatch(v: u64, delta: &Snapshot, manifest: &BTreeSet<String>) -> Option<Violation> {
    let live: BTreeSet<String> = delta.files.keys().map(|p| decode_path(p)).collect();
    if &live == manifest {
        return None;
    }
    Some(Violation::DeltaFilesMismatch {
        version: v,
        only_in_delta: live.difference(manifest).take(NAMED).cloned().collect(),
        only_in_manifest: manifest.difference(&live).take(NAMED).cloned().collect(),
    })
}
