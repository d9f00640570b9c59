//! `sluice verify` (audit a table against its manifest) and `sluice gc` (delete files no entry
//! references, left by crashes before a commit).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::Serialize;

use crate::error::ManifestError;
use crate::manifest::{
    Manifest, Refusal, TableState, CHECKPOINT_DIR, DEAD_LETTER_DIR, LAST_CHECKPOINT, LOG_DIR,
};

/// One thing wrong with a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    MissingFile {
        path: String,
    },
    SizeMismatch {
        path: String,
        manifest: u64,
        actual: u64,
    },
    RowCountMismatch {
        path: String,
        manifest: u64,
        footer: u64,
    },
    UnreadableFooter {
        path: String,
        error: String,
    },
    Overlap {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        seq: u64,
    },
    Gap {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
    },
    BadReplace {
        seq: u64,
        message: String,
    },
    OffsetsOutsideRange {
        seq: u64,
        path: String,
        topic: String,
        partition: i32,
    },
    OverfullRange {
        seq: u64,
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        records: u64,
    },
    CheckpointMismatch {
        seq: u64,
    },
}

#[derive(Debug, Default, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub ranges: Vec<(i64, i64)>,
    pub rows: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub data_files: u64,
    pub dead_letter_files: u64,
    pub rows: u64,
    pub dead_letters: u64,
    pub partitions: Vec<PartitionReport>,
    pub violations: Vec<Violation>,
}

/// Audits the table: replays every entry from the first, checks ranges, files and checkpoints.
pub async fn verify(m: &Manifest) -> Result<VerifyReport, ManifestError> {
    let mut report = VerifyReport::default();
    let mut state = TableState::default();
    while let Some(e) = m.read_entry(state.seq + 1).await? {
        // Each entry must have been publishable on top of the entries before it.
        for refusal in state.check(&e) {
            let (topic, partition, from, to) = match &refusal {
                // An append starting before the committed end overlaps it; one starting after
                // leaves a gap, reported from the merged ranges below.
                Refusal::Fenced(f) => match f.committed_end {
                    Some(end) if f.from < end => (f.topic.clone(), f.partition, f.from, end),
                    _ => continue,
                },
                Refusal::Overlap {
                    topic,
                    partition,
                    from,
                    to,
                } => (topic.clone(), *partition, *from, *to),
                Refusal::Stale { message } => {
                    report.violations.push(Violation::BadReplace {
                        seq: e.seq,
                        message: message.clone(),
                    });
                    continue;
                }
            };
            report.violations.push(Violation::Overlap {
                topic,
                partition,
                from,
                to,
                seq: e.seq,
            });
        }
        for r in &e.ranges {
            if r.to < r.from {
                report.violations.push(Violation::Overlap {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    from: r.from,
                    to: r.to,
                    seq: e.seq,
                });
            }
            let records: u64 = e
                .files
                .iter()
                .filter(|f| f.topic == r.topic && f.partition == r.partition)
                .map(|f| f.rows)
                .sum::<u64>()
                + e.dead_letters
                    .iter()
                    .filter(|d| d.topic == r.topic && d.partition == r.partition)
                    .map(|d| d.offsets.len() as u64)
                    .sum::<u64>();
            if records > (r.to - r.from).max(0) as u64 {
                report.violations.push(Violation::OverfullRange {
                    seq: e.seq,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    from: r.from,
                    to: r.to,
                    records,
                });
            }
        }
        let within = |topic: &str, partition: i32, lo: i64, hi: i64| {
            e.ranges
                .iter()
                .any(|r| r.topic == topic && r.partition == partition && r.from <= lo && hi <= r.to)
        };
        for f in &e.files {
            if !within(&f.topic, f.partition, f.first_offset, f.next_offset) {
                report.violations.push(Violation::OffsetsOutsideRange {
                    seq: e.seq,
                    path: f.path.clone(),
                    topic: f.topic.clone(),
                    partition: f.partition,
                });
            }
        }
        for d in &e.dead_letters {
            let lo = d.offsets.first().copied().unwrap_or(0);
            let hi = d.offsets.last().map(|o| o + 1).unwrap_or(0);
            let sorted = d.offsets.windows(2).all(|w| w[0] < w[1]);
            if !sorted || !d.offsets.is_empty() && !within(&d.topic, d.partition, lo, hi) {
                report.violations.push(Violation::OffsetsOutsideRange {
                    seq: e.seq,
                    path: d.path.clone(),
                    topic: d.topic.clone(),
                    partition: d.partition,
                });
            }
        }
        state.apply(&e)?;
        report.entries += 1;
    }

    // Checkpoints must equal the state replayed up to their entry.
    let checkpoints = m.list_checkpoints().await?;
    report.checkpoints = checkpoints.len() as u64;
    if !checkpoints.is_empty() {
        let mut replay = TableState::default();
        for seq in checkpoints {
            while replay.seq < seq {
                match m.read_entry(replay.seq + 1).await? {
                    Some(e) => replay.apply(&e)?,
                    None => break,
                }
            }
            let cp = m.read_checkpoint(seq).await?;
            if replay.seq != seq || cp.as_ref() != Some(&replay) {
                report
                    .violations
                    .push(Violation::CheckpointMismatch { seq });
            }
        }
    }

    // Every referenced file exists, with the recorded size and row count.
    let mut checks = Vec::new();
    for f in &state.files {
        checks.push((f.path.clone(), f.bytes, f.rows));
    }
    for d in &state.dead_letters {
        checks.push((d.path.clone(), d.bytes, d.offsets.len() as u64));
    }
    let results: Vec<Vec<Violation>> = futures::stream::iter(
        checks
            .into_iter()
            .map(|(path, bytes, rows)| async move { check_file(m, &path, bytes, rows).await }),
    )
    .buffer_unordered(16)
    .collect()
    .await;
    report.violations.extend(results.into_iter().flatten());

    report.data_files = state.files.len() as u64;
    report.dead_letter_files = state.dead_letters.len() as u64;
    for p in &state.partitions {
        for w in p.ranges.windows(2) {
            report.violations.push(Violation::Gap {
                topic: p.topic.clone(),
                partition: p.partition,
                from: w[0].1,
                to: w[1].0,
            });
        }
        report.rows += p.rows;
        report.dead_letters += p.dead_letters;
        report.partitions.push(PartitionReport {
            topic: p.topic.clone(),
            partition: p.partition,
            ranges: p.ranges.clone(),
            rows: p.rows,
            dead_letters: p.dead_letters,
        });
    }
    Ok(report)
}

async fn check_file(m: &Manifest, rel: &str, bytes: u64, rows: u64) -> Vec<Violation> {
    let path = m.path(rel);
    let meta = match m.store().head(&path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => {
            return vec![Violation::MissingFile {
                path: rel.to_string(),
            }]
        }
        Err(e) => {
            return vec![Violation::UnreadableFooter {
                path: rel.to_string(),
                error: e.to_string(),
            }]
        }
    };
    let mut out = Vec::new();
    if meta.size != bytes {
        out.push(Violation::SizeMismatch {
            path: rel.to_string(),
            manifest: bytes,
            actual: meta.size,
        });
    }
    match footer_rows(m, &path, meta.size).await {
        Ok(n) if n == rows => {}
        Ok(n) => out.push(Violation::RowCountMismatch {
            path: rel.to_string(),
            manifest: rows,
            footer: n,
        }),
        Err(error) => out.push(Violation::UnreadableFooter {
            path: rel.to_string(),
            error,
        }),
    }
    out
}

/// The row count in a Parquet file's footer, read with two range requests.
async fn footer_rows(
    m: &Manifest,
    path: &object_store::path::Path,
    size: u64,
) -> Result<u64, String> {
    if size < 12 {
        return Err(format!("{size} bytes is too small for a Parquet file"));
    }
    let tail = m
        .store()
        .get_range(path, size - 8..size)
        .await
        .map_err(|e| e.to_string())?;
    if &tail[4..8] != b"PAR1" {
        return Err("no Parquet magic at the end".into());
    }
    let len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if len + 12 > size {
        return Err(format!("footer length {len} exceeds the file"));
    }
    let footer = m
        .store()
        .get_range(path, size - 8 - len..size - 8)
        .await
        .map_err(|e| e.to_string())?;
    let md = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| e.to_string())?;
    Ok(md.file_metadata().num_rows().max(0) as u64)
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub scanned: u64,
    pub referenced: u64,
    /// Unreferenced files old enough to delete (deleted unless dry run).
    pub deleted: Vec<String>,
    /// Unreferenced files younger than the grace period (perhaps an in-flight commit).
    pub kept_young: Vec<String>,
    pub dry_run: bool,
}

/// Whether `rel` is a file sluice writes (never touch anything else under the table).
fn is_sluice_data_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.ends_with(".parquet")
        && (name.starts_with("part-") || rel.starts_with(&format!("{DEAD_LETTER_DIR}/")))
}

/// Deletes the table's data and dead-letter files that no manifest entry references and that
/// were last modified more than `older_than_ms` ago.
pub async fn gc(
    m: &Manifest,
    older_than_ms: i64,
    dry_run: bool,
) -> Result<GcReport, ManifestError> {
    let store_err = |e: object_store::Error| ManifestError::Store {
        path: m.path("").to_string(),
        source: e,
    };
    // List first, read the manifest second: a file committed in between is then referenced.
    let root = m.path("");
    let listed: Vec<ObjectMeta> = m
        .store()
        .list(Some(&root))
        .try_collect()
        .await
        .map_err(store_err)?;
    let state = m.load().await?;
    let referenced: HashSet<&str> = state
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(state.dead_letters.iter().map(|d| d.path.as_str()))
        .collect();
    let prefix = root.as_ref().len();
    let cutoff = chrono::Utc::now() - chrono::Duration::milliseconds(older_than_ms);
    let mut report = GcReport {
        dry_run,
        ..Default::default()
    };
    for meta in listed {
        let full = meta.location.as_ref();
        let rel = full.get(prefix..).unwrap_or(full).trim_start_matches('/');
        if rel.starts_with(LOG_DIR) || rel.starts_with(CHECKPOINT_DIR) || rel == LAST_CHECKPOINT {
            continue;
        }
        if !is_sluice_data_file(rel) {
            continue;
        }
        report.scanned += 1;
        if referenced.contains(rel) {
            report.referenced += 1;
        } else if meta.last_modified <= cutoff {
            if !dry_run {
                match m.store().delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
            report.deleted.push(rel.to_string());
        } else {
            report.kept_young.push(rel.to_string());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::manifest::{Entry, EntryKind, OffsetRange};
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn entry(ranges: &[(i64, i64)]) -> Entry {
        Entry {
            format: 1,
            seq: 0,
            kind: EntryKind::Append,
            commit_id: uuid::Uuid::new_v4().to_string(),
            writer: "t".into(),
            committed_at_ms: 0,
            ranges: ranges
                .iter()
                .map(|&(from, to)| OffsetRange {
                    topic: "t".into(),
                    partition: 0,
                    from,
                    to,
                })
                .collect(),
            files: vec![],
            dead_letters: vec![],
            removed: vec![],
        }
    }

    #[tokio::test]
    async fn verify_finds_overlaps_gaps_and_bad_checkpoints() {
        let m = Manifest::new(
            Arc::new(InMemory::new()),
            object_store::path::Path::from("t"),
            2,
        );
        let mut s = m.load().await.unwrap();
        // try_commit does not fence (the loader does): publish a bad history on purpose.
        for r in [(0, 10), (10, 20), (15, 30), (40, 50)] {
            m.try_commit(&mut s, &mut entry(&[r])).await.unwrap();
        }
        let report = verify(&m).await.unwrap();
        assert_eq!(report.entries, 4);
        assert!(report.violations.iter().any(|v| matches!(
            v,
            Violation::Overlap {
                from: 15,
                to: 20,
                ..
            }
        )));
        assert!(report.violations.iter().any(|v| matches!(
            v,
            Violation::Gap {
                from: 30,
                to: 40,
                ..
            }
        )));
        assert!(!report
            .violations
            .iter()
            .any(|v| matches!(v, Violation::CheckpointMismatch { .. })));
        // A checkpoint that disagrees with the entries.
        let mut wrong = m.read_checkpoint(2).await.unwrap().unwrap();
        wrong.partitions[0].rows = 99;
        let body = serde_json::to_vec(&wrong).unwrap();
        m.store()
            .put(
                &m.path("_sluice/checkpoints/00000000000000000002.json"),
                body.into(),
            )
            .await
            .unwrap();
        let report = verify(&m).await.unwrap();
        assert!(report
            .violations
            .contains(&Violation::CheckpointMismatch { seq: 2 }));
    }

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
