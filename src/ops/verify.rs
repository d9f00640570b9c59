//! `sluice verify`: audits a table against its manifest, offset by offset, and with `--kafka`
//! asks the broker about every offset the entries do not account for.

use futures::StreamExt;
use serde::Serialize;

use crate::error::ManifestError;
use crate::table::entry::Entry;
use crate::table::manifest::Manifest;
use crate::table::state::{Refusal, TableState};

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
    /// An entry's counts for a range do not add up: its length is not the records polled
    /// plus the recorded non-records, or its records are not its rows plus dead letters.
    Unaccounted {
        seq: u64,
        #[serde(flatten)]
        range: crate::error::Unaccounted,
    },
    /// Offsets of an entry's range that are no row, no dead letter and no recorded
    /// non-record (with `--kafka`: the broker has no answer for them).
    Hole(Span),
    /// `verify --kafka`: offsets of a hole where the broker holds records: they were lost.
    Lost {
        #[serde(flatten)]
        span: Span,
        /// Records the broker holds in the span.
        records: u64,
    },
    /// Offsets held twice in one entry (two rows, a row and a dead letter, or a record and a
    /// recorded non-record), or accounted outside the entry's range.
    Duplicate(Span),
    /// `verify --kafka`: offsets an entry recorded as not records, where the broker holds
    /// records.
    RecordedNonRecordIsRecord {
        #[serde(flatten)]
        span: Span,
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
    /// Offsets checked one by one: every offset of every range whose files could be read.
    pub offsets_checked: u64,
    /// With `--kafka`: holes the broker holds no record in (offsets not recorded as
    /// non-records by entries written before sluice recorded them; not violations).
    pub unrecorded_non_records: Vec<Span>,
    /// Offsets entries recorded as not records (checked against the broker by `--kafka`).
    #[serde(skip)]
    pub recorded_non_records: Vec<Span>,
}

/// Offsets `[from, to)` of one partition, named in an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub seq: u64,
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
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

/// `verify --kafka`: asks the broker about every hole and every recorded non-record. A hole
/// the broker holds records in is a loss ([`Violation::Lost`]); one it holds none in is
/// listed in `unrecorded_non_records` (transaction markers or compacted offsets of an entry
/// written before sluice recorded them) and is no violation; a recorded non-record the broker
/// holds records in is a [`Violation::RecordedNonRecordIsRecord`]. A span the broker cannot
/// answer for (retention took it, or no answer in time) stays a hole.
pub fn check_with_kafka(
    job: &crate::config::Job,
    report: &mut VerifyReport,
) -> crate::error::Result<()> {
    let consumer = crate::record::source::lookup_consumer(job)?;
    let mut violations = Vec::new();
    for v in std::mem::take(&mut report.violations) {
        let Violation::Hole(span) = v else {
            violations.push(v);
            continue;
        };
        match records_in(&consumer, &span)? {
            Some(0) => report.unrecorded_non_records.push(span),
            Some(records) => violations.push(Violation::Lost { span, records }),
            None => violations.push(Violation::Hole(span)),
        }
    }
    for span in &report.recorded_non_records {
        if let Some(records) = records_in(&consumer, span)?.filter(|&n| n > 0) {
            violations.push(Violation::RecordedNonRecordIsRecord {
                span: span.clone(),
                records,
            });
        }
    }
    report.violations = violations;
    Ok(())
}

/// How many records the broker holds in `[from, to)` of a partition (as the loader's consumer
/// configuration reads them), or `None` if it cannot tell.
fn records_in(
    consumer: &rdkafka::consumer::BaseConsumer,
    span: &Span,
) -> crate::error::Result<Option<u64>> {
    use rdkafka::consumer::Consumer;
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(
        &span.topic,
        span.partition,
        rdkafka::Offset::Offset(span.from),
    )
    .and_then(|_| consumer.assign(&list))
    .map_err(|source| crate::error::LoadError::Kafka {
        context: format!(
            "assigning {}/{} at {}",
            span.topic, span.partition, span.from
        ),
        source,
    })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut records = 0u64;
    // The next offset the broker may hold a record at.
    let mut next = span.from;
    let answer = loop {
        if std::time::Instant::now() > deadline {
            break None;
        }
        match consumer.poll(std::time::Duration::from_millis(200)) {
            // Some brokers send no end-of-partition event to a consumer that starts at the
            // end: the high watermark of the fetch answers too.
            None => {
                let cached =
                    crate::record::source::cached_watermarks(consumer, &span.topic, span.partition);
                if cached.is_some_and(|(_, high)| high <= next) {
                    break Some(records);
                }
            }
            Some(Ok(msg)) if msg.topic() == span.topic && msg.partition() == span.partition => {
                let o = msg.offset();
                if o >= span.to {
                    break Some(records);
                }
                if o >= span.from {
                    records += 1;
                }
                next = next.max(o + 1);
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == span.partition => break Some(records),
            Some(Err(e)) => {
                tracing::warn!(topic = %span.topic, partition = span.partition, from = span.from, error = %e, "the broker cannot answer for these offsets");
                break None;
            }
        }
    };
    let _ = consumer.unassign();
    Ok(answer)
}

/// At most this many hole or duplicate spans are reported per range.
const SPANS_PER_RANGE: usize = 100;

/// Checks an entry record by record: every offset of each range is exactly one row (read
/// from the data files' `_offset` column), dead letter or recorded non-record, and each file's
/// offsets lie in its recorded `[first_offset, next_offset)`. Ranges with a file that cannot
/// be read (a replaced file deleted by `gc`; a missing live file is reported elsewhere) are
/// left to the count check. Returns the violations and the offsets checked.
async fn entry_offsets(m: &Manifest, e: &Entry) -> (Vec<Violation>, u64) {
    let read: Vec<(usize, Result<Vec<i64>, String>)> = futures::stream::iter(
        e.files
            .iter()
            .enumerate()
            .map(|(i, f)| async move { (i, file_offsets(m, &f.path).await) }),
    )
    .buffer_unordered(16)
    .collect()
    .await;
    let mut offsets: Vec<Option<Vec<i64>>> = vec![None; e.files.len()];
    let mut out = Vec::new();
    for (i, got) in read {
        let f = &e.files[i];
        match got {
            Ok(o) => {
                if o.iter().any(|&x| x < f.first_offset || x >= f.next_offset) {
                    out.push(Violation::OffsetsOutsideRange {
                        seq: e.seq,
                        path: f.path.clone(),
                        topic: f.topic.clone(),
                        partition: f.partition,
                    });
                }
                offsets[i] = Some(o);
            }
            Err(error) => tracing::debug!(path = %f.path, %error, "offsets not read"),
        }
    }
    let mut checked = 0u64;
    for r in &e.ranges {
        let mine = |t: &str, p: i32| t == r.topic && p == r.partition;
        // Every offset the entry accounts for in this range, as spans.
        let mut spans: Vec<(i64, i64)> = Vec::new();
        let mut readable = true;
        for (f, o) in e.files.iter().zip(&offsets) {
            if !mine(&f.topic, f.partition) {
                continue;
            }
            match o {
                Some(o) => spans.extend(o.iter().map(|&x| (x, x + 1))),
                None => readable = false,
            }
        }
        if !readable {
            continue;
        }
        for d in e
            .dead_letters
            .iter()
            .filter(|d| mine(&d.topic, d.partition))
        {
            spans.extend(d.offsets.iter().map(|&x| (x, x + 1)));
        }
        spans.extend(r.not_records.iter().copied());
        spans.sort_unstable();
        let (holes, dups) = sweep(r.from, r.to, &spans);
        let span = |(from, to): (i64, i64)| Span {
            seq: e.seq,
            topic: r.topic.clone(),
            partition: r.partition,
            from,
            to,
        };
        let holes = holes.into_iter().take(SPANS_PER_RANGE);
        out.extend(holes.map(span).map(Violation::Hole));
        let dups = dups.into_iter().take(SPANS_PER_RANGE);
        out.extend(dups.map(span).map(Violation::Duplicate));
        checked += (r.to - r.from).max(0) as u64;
    }
    (out, checked)
}

/// Walks sorted spans over `[from, to)`: returns the offsets no span covers (holes) and the
/// offsets covered more than once, or outside `[from, to)` (duplicates), each merged into
/// spans.
/// Half-open offset spans, ascending.
type Spans = Vec<(i64, i64)>;

fn sweep(from: i64, to: i64, spans: &[(i64, i64)]) -> (Spans, Spans) {
    fn merged(mut v: Spans) -> Spans {
        v.retain(|&(a, b)| a < b);
        v.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if last.1 >= a => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }
    let (mut holes, mut dups) = (Vec::new(), Vec::new());
    let mut cur = from;
    for &(a, b) in spans {
        // Outside the range: accounted where it does not belong.
        dups.push((a, b.min(from)));
        dups.push((a.max(to), b));
        let (a, b) = (a.max(from), b.min(to));
        if a >= b {
            continue;
        }
        if a < cur {
            dups.push((a, b.min(cur)));
        } else {
            holes.push((cur, a));
        }
        cur = cur.max(b);
    }
    holes.push((cur, to));
    (merged(holes), merged(dups))
}

/// The `_offset` column of a data file.
async fn file_offsets(m: &Manifest, rel: &str) -> Result<Vec<i64>, String> {
    use arrow::array::{Array, Int64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let bytes = m
        .store()
        .get(rel)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{rel} is missing"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["_offset"]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let col = batch
            .column_by_name("_offset")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| format!("{rel} has no Int64 `_offset` column"))?;
        if col.null_count() > 0 {
            return Err(format!("{rel}: null `_offset` values"));
        }
        out.extend(col.values().iter().copied());
    }
    Ok(out)
}

async fn check_file(m: &Manifest, rel: &str, bytes: u64, rows: u64) -> Vec<Violation> {
    let meta = match m.store().head(rel).await {
        Ok(Some(meta)) => meta,
        Ok(None) => {
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
    match footer_rows(m, rel, meta.size).await {
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
async fn footer_rows(m: &Manifest, rel: &str, size: u64) -> Result<u64, String> {
    if size < 12 {
        return Err(format!("{size} bytes is too small for a Parquet file"));
    }
    let tail = m
        .store()
        .get_range(rel, size - 8..size)
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
        .get_range(rel, size - 8 - len..size - 8)
        .await
        .map_err(|e| e.to_string())?;
    let md = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| e.to_string())?;
    Ok(md.file_metadata().num_rows().max(0) as u64)
}

/// The report as `sluice verify` prints it.
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
    for s in &report.unrecorded_non_records {
        let _ = writeln!(
            out,
            "  {}/{}: offsets [{}, {}) of entry {} hold no record in Kafka (not recorded as such)",
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

    use crate::table::entry::{EntryKind, OffsetRange};
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
                .map(|&(from, to)| OffsetRange::new("t", 0, from, to))
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

    proptest::proptest! {
        /// The sweep agrees with counting each offset: holes are the offsets of the range
        /// covered by no span, duplicates those covered twice or lying outside it.
        #[test]
        fn sweep_finds_exactly_the_holes_and_duplicates(
            spans in proptest::collection::vec((0i64..60, 1i64..4), 0..40),
        ) {
            let mut spans: Vec<(i64, i64)> = spans.into_iter().map(|(a, n)| (a, a + n)).collect();
            spans.sort_unstable();
            let (from, to) = (10, 50);
            let (holes, dups) = sweep(from, to, &spans);
            let cover = |o: i64| spans.iter().filter(|&&(a, b)| a <= o && o < b).count();
            let inside = |v: &[(i64, i64)], o: i64| v.iter().any(|&(a, b)| a <= o && o < b);
            for o in -1..70 {
                let n = cover(o);
                let in_range = (from..to).contains(&o);
                proptest::prop_assert_eq!(inside(&holes, o), in_range && n == 0, "hole at {}", o);
                proptest::prop_assert_eq!(inside(&dups, o), if in_range { n > 1 } else { n > 0 }, "dup at {}", o);
            }
        }
    }
}
