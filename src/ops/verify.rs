//! `sluice verify`: audits a table against its manifest, offset by offset, and with `--kafka`
//! asks the broker about every offset the entries do not account for.

use crate::error::ManifestError;
use crate::table::manifest::Manifest;
use crate::table::state::{Refusal, TableState};
use futures::StreamExt;

mod delta;
mod files;
mod iceberg;
mod kafka;
mod report;

use files::{check_file, entry_offsets};
pub use kafka::check_with_kafka;
pub use report::{DeltaReport, IcebergReport, PartitionReport, Span, VerifyReport, Violation};

/// Audits the table: replays every entry from the first, checks ranges, files and checkpoints.
pub async fn verify(m: &Manifest) -> Result<VerifyReport, ManifestError> {
    let mut report = VerifyReport::default();
    let mut state = TableState::default();
    let mut lineage = Vec::new();
    // The non-records of the live ranges, per partition (a replace re-records its ranges').
    let mut live_non_records: std::collections::HashMap<(String, i32), Vec<(i64, i64)>> =
        Default::default();
    let mut unrecorded: std::collections::HashSet<(String, i32)> = Default::default();
    while let Some(e) = m.read_entry(state.seq + 1).await? {
        lineage.push(delta::EntryFiles::of(&e));
        for r in &e.ranges {
            if r.records.is_none() {
                // Written before entries counted their records: no live count to check.
                unrecorded.insert((r.topic.clone(), r.partition));
            }
            let spans = live_non_records
                .entry((r.topic.clone(), r.partition))
                .or_default();
            if e.kind == crate::table::entry::EntryKind::Replace {
                let mut kept = Vec::new();
                for &(a, b) in spans.iter() {
                    kept.extend([(a, b.min(r.from)), (a.max(r.to), b)]);
                }
                kept.retain(|&(a, b)| a < b);
                *spans = kept;
            }
            spans.extend(r.gaps());
        }
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
                Refusal::Late {
                    topic,
                    partition,
                    window_start_ms,
                } => {
                    report.violations.push(Violation::LateUnmarked {
                        seq: e.seq,
                        topic: topic.clone(),
                        partition: *partition,
                        window_start_ms: *window_start_ms,
                    });
                    continue;
                }
                Refusal::Lineage { message } => {
                    report.violations.push(Violation::BadLineage {
                        seq: e.seq,
                        message: message.clone(),
                    });
                    continue;
                }
                Refusal::Stale { message } => {
                    report.violations.push(Violation::BadReplace {
                        seq: e.seq,
                        message: message.clone(),
                    });
                    continue;
                }
                Refusal::Unaccounted(range) => {
                    report.violations.push(Violation::Unaccounted {
                        seq: e.seq,
                        range: range.clone(),
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
        }
        for r in &e.ranges {
            report.lost.extend(r.lost.iter().map(|&(from, to)| Span {
                seq: e.seq,
                topic: r.topic.clone(),
                partition: r.partition,
                from,
                to,
            }));
            report
                .recorded_non_records
                .extend(r.not_records.iter().map(|&(from, to)| Span {
                    seq: e.seq,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    from,
                    to,
                }));
        }
        let (violations, checked) = entry_offsets(m, &e).await;
        report.violations.extend(violations);
        report.offsets_checked += checked;
        let within = |topic: &str, partition: i32, lo: i64, hi: i64| {
            e.ranges
                .iter()
                .any(|r| r.topic == topic && r.partition == partition && r.from <= lo && hi <= r.to)
        };
        // Rows of a partition the entry has a range for lie in it; rows of other partitions
        // only move between files (the lineage check above).
        let ranged = |t: &str, p: i32| e.ranges.iter().any(|r| r.topic == t && r.partition == p);
        for f in &e.files {
            for s in f.lineage().iter() {
                if ranged(&s.topic, s.partition) && !within(&s.topic, s.partition, s.first, s.next)
                {
                    report.violations.push(Violation::OffsetsOutsideRange {
                        seq: e.seq,
                        path: f.path.clone(),
                        topic: s.topic.clone(),
                        partition: s.partition,
                    });
                }
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

    match delta::check(m.store(), &lineage).await {
        Ok(Some((d, violations))) => {
            report.violations.extend(violations);
            report.delta = Some(d);
        }
        Ok(None) => {}
        Err(crate::table::delta::DeltaError::Manifest(e)) => return Err(e),
        Err(e) => report.violations.push(Violation::DeltaUnreadable {
            error: e.to_string(),
        }),
    }
    match iceberg::check(m.store(), &lineage).await {
        Ok(Some((i, violations))) => {
            report.violations.extend(violations);
            report.iceberg = Some(i);
        }
        Ok(None) => {}
        Err(crate::table::iceberg::IcebergError::Manifest(e)) => return Err(e),
        Err(e) => report.violations.push(Violation::IcebergUnreadable {
            error: e.to_string(),
        }),
    }

    report.data_files = state.files.len() as u64;
    report.dead_letter_files = state.dead_letters.len() as u64;
    for p in &state.partitions {
        // The live table, partition by partition: its committed offsets are its rows, dead
        // letters and non-records, once each (a removal that lost rows shows here, whatever
        // the history's entries say one by one).
        let offsets: i64 = p.ranges.iter().map(|(a, b)| b - a).sum();
        let non_records: i64 = live_non_records
            .get(&(p.topic.clone(), p.partition))
            .map(|v| v.iter().map(|(a, b)| b - a).sum())
            .unwrap_or(0);
        let counted = !unrecorded.contains(&(p.topic.clone(), p.partition));
        if counted && offsets != p.rows as i64 + p.dead_letters as i64 + non_records {
            report.violations.push(Violation::LiveMismatch {
                topic: p.topic.clone(),
                partition: p.partition,
                offsets,
                rows: p.rows,
                dead_letters: p.dead_letters,
                non_records,
            });
        }
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

/// The report as `sluice verify` prints it.
/// Adds where the job's Iceberg catalog has the table (when the job names a catalog and the
/// table has Iceberg metadata) to `report`.
pub async fn check_catalog(
    m: &Manifest,
    iceberg: &crate::table::iceberg::IcebergLog,
    report: &mut VerifyReport,
) {
    let (Some(catalog), Some(i)) = (iceberg.catalog(), report.iceberg.as_mut()) else {
        return;
    };
    let location = iceberg.settings().location.trim_end_matches('/');
    let (c, violation) = iceberg::check_catalog(m.store(), catalog, location, report.entries).await;
    i.catalog = Some(c);
    report.violations.extend(violation);
}

pub fn render(report: &VerifyReport) -> Result<String, serde_json::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} entries, {} checkpoints, {} data files ({} rows), {} dead-letter files ({} records)",
        report.entries,
        report.checkpoints,
        report.data_files,
        report.rows,
        report.dead_letter_files,
        report.dead_letters
    );
    for p in &report.partitions {
        let ranges: Vec<String> = p
            .ranges
            .iter()
            .map(|(a, b)| format!("[{a}, {b})"))
            .collect();
        let _ = writeln!(
            out,
            "  {}/{}: offsets {} — {} rows, {} dead-lettered",
            p.topic,
            p.partition,
            ranges.join(" "),
            p.rows,
            p.dead_letters
        );
    }
    let _ = writeln!(
        out,
        "{} offsets checked one by one against rows, dead letters and recorded non-records",
        report.offsets_checked
    );
    match &report.delta {
        Some(d) => {
            let _ = writeln!(
                out,
                "Delta log: {} versions, {} checkpoints, {} live files; checked against the manifest at every version{}",
                d.versions,
                d.checkpoints,
                d.files,
                match d.behind {
                    0 => String::new(),
                    n => format!("; {n} entries not yet projected (`sluice delta sync` writes them)"),
                }
            );
        }
        None => {
            let _ = writeln!(out, "Delta log: none");
        }
    }
    if let Some(i) = &report.iceberg {
        let _ = writeln!(
            out,
            "Iceberg metadata: version {}, {} kept snapshots, {} live files; each snapshot checked against the manifest after its entry{}",
            i.version,
            i.snapshots,
            i.files,
            match i.behind {
                0 => String::new(),
                n => format!("; {n} entries not yet projected (the next commit writes them)"),
            }
        );
        if let Some(c) = &i.catalog {
            let _ = writeln!(
                out,
                "Iceberg catalog: {} at {}",
                c.table,
                match (c.seq, c.behind) {
                    (None, _) =>
                        "no version of sluice's (not registered yet, or see the violations)"
                            .to_string(),
                    (Some(s), 0) => format!("entry {s}, current"),
                    (Some(s), n) =>
                        format!("entry {s}, {n} entries behind (the next commit brings it up)"),
                }
            );
        }
    }
    for s in &report.unrecorded_non_records {
        let _ = writeln!(
            out,
            "  {}/{}: offsets [{}, {}) of entry {} hold no record in Kafka (not recorded as such)",
            s.topic, s.partition, s.from, s.to, s.seq
        );
    }
    for s in &report.lost {
        let _ = writeln!(
            out,
            "  {}/{}: offsets [{}, {}) recorded as lost by entry {} (deleted from Kafka before they were loaded; `sluice skip`)",
            s.topic, s.partition, s.from, s.to, s.seq
        );
    }
    for v in &report.violations {
        let _ = writeln!(out, "VIOLATION {}", serde_json::to_string(v)?);
    }
    if report.violations.is_empty() {
        out.push_str("clean\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::table::entry::Entry;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn entry(ranges: &[(i64, i64)]) -> Entry {
        let ranges: Vec<(&str, i32, i64, i64)> = ranges
            .iter()
            .map(|&(from, to)| ("t", 0, from, to))
            .collect();
        crate::table::entry::test_entry(&ranges)
    }

    #[tokio::test]
    async fn verify_finds_overlaps_gaps_and_bad_checkpoints() {
        let m = Manifest::new(
            Arc::new(InMemory::new()),
            object_store::path::Path::from("t"),
            2,
        );
        let mut s = m.load().await.unwrap();
        // Straight into the log, past the committer's checks: a bad history on purpose.
        for r in [(0, 10), (10, 20), (15, 30), (40, 50)] {
            let mut e = entry(&[r]);
            e.seq = s.seq + 1;
            m.put_entry(&e).await.unwrap();
            s.apply(&e).unwrap();
            m.checkpoint_if_due(&s).await;
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
            .put("_sluice/checkpoints/00000000000000000002.json", body.into())
            .await
            .unwrap();
        let report = verify(&m).await.unwrap();
        assert!(report
            .violations
            .contains(&Violation::CheckpointMismatch { seq: 2 }));
    }

    /// A replace that removes a compacted file holding rows outside its range, without
    /// carrying them: each entry on its own adds up, the live table does not.
    #[tokio::test]
    async fn verify_sees_rows_a_removal_lost() {
        use crate::table::entry::{test_file, EntryKind, Span};
        let m = Manifest::new(
            Arc::new(InMemory::new()),
            object_store::path::Path::from("t"),
            100,
        );
        let mut s = m.load().await.unwrap();
        let put = |mut e: Entry, s: &mut TableState| {
            e.seq = s.seq + 1;
            s.apply(&e).unwrap();
            e
        };
        let mut a = entry(&[(0, 10)]);
        a.ranges[0].records = Some(10);
        a.files = vec![test_file(&a.ranges[0], "w")];
        let a = put(a, &mut s);
        let mut b = entry(&[(10, 20)]);
        b.ranges[0].records = Some(10);
        b.files = vec![test_file(&b.ranges[0], "w")];
        let b = put(b, &mut s);
        let spans: Vec<Span> = a
            .files
            .iter()
            .chain(&b.files)
            .flat_map(|f| f.lineage().into_owned())
            .collect();
        let mut c = entry(&[]);
        c.kind = EntryKind::Compact;
        c.removed = vec![a.files[0].path.clone(), b.files[0].path.clone()];
        c.files = vec![crate::ops::compact::merged_file(&[
            a.files[0].clone(),
            b.files[0].clone(),
        ])];
        assert_eq!(c.files[0].spans, spans);
        let c = put(c, &mut s);
        // Replace [0, 10) only, removing the compacted file and its rows of [10, 20).
        let mut r = entry(&[(0, 10)]);
        r.kind = EntryKind::Replace;
        r.ranges[0].records = Some(10);
        r.files = vec![test_file(&r.ranges[0], "w")];
        r.removed = vec![c.files[0].path.clone()];
        r.seq = s.seq + 1;
        assert!(
            matches!(s.check(&r)[..], [Refusal::Lineage { .. }]),
            "the committer refuses it: {:?}",
            s.check(&r)
        );
        let r = put(r, &mut s);
        for e in [a, b, c, r] {
            m.put_entry(&e).await.unwrap();
        }
        let report = verify(&m).await.unwrap();
        assert!(
            report.violations.iter().any(|v| matches!(
                v,
                Violation::LiveMismatch {
                    offsets: 20,
                    rows: 10,
                    ..
                }
            )),
            "{:?}",
            report.violations
        );
        assert!(report
            .violations
            .iter()
            .any(|v| matches!(v, Violation::BadLineage { seq: 4, .. })));
    }
}
