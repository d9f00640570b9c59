//! The data files' side of `verify`: every offset of an entry's ranges read back from the
//! files' `_offset` column, and each file's size and footer row count.

use futures::StreamExt;

use crate::error::{invalid, Invalid};
use crate::ops::verify::report::{Span, Violation};
use crate::table::entry::{DataFile, Entry};
use crate::table::manifest::Manifest;

/// At most this many hole or duplicate spans are reported per range.
const SPANS_PER_RANGE: usize = 100;

/// Checks an entry record by record: every offset of each range is exactly one row (read
/// from the data files' `_offset` column), dead letter or recorded non-record, and each file's
/// offsets lie in its recorded `[first_offset, next_offset)`. Ranges with a file that cannot
/// be read (a replaced file deleted by `gc`; a missing live file is reported elsewhere) are
/// left to the count check. Returns the violations and the offsets checked.
pub(super) async fn entry_offsets(m: &Manifest, e: &Entry) -> (Vec<Violation>, u64) {
    let read: Vec<(usize, Result<FileRows, Invalid>)> = futures::stream::iter(
        e.files
            .iter()
            .enumerate()
            .map(|(i, f)| async move { (i, file_rows(m, f).await) }),
    )
    .buffer_unordered(16)
    .collect()
    .await;
    let mut offsets: Vec<Option<FileRows>> = (0..e.files.len()).map(|_| None).collect();
    let mut out = Vec::new();
    for (i, got) in read {
        let f = &e.files[i];
        match got {
            Ok(rows) => {
                out.extend(check_spans(e.seq, f, &rows));
                offsets[i] = Some(rows);
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
            if !f.holds(&r.topic, r.partition) {
                continue;
            }
            match o {
                Some(o) => spans.extend(
                    o.iter()
                        .filter(|((t, p), _)| mine(t, *p))
                        .flat_map(|(_, v)| v.iter().map(|&x| (x, x + 1))),
                ),
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
        spans.extend(r.gaps());
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

/// A data file's offsets, per topic-partition.
type FileRows = Vec<((String, i32), Vec<i64>)>;

/// Checks a file's rows against its lineage: each partition's offsets are distinct, each lies
/// in one of the file's spans of that partition, and each span holds exactly its `rows`.
fn check_spans(seq: u64, f: &DataFile, rows: &FileRows) -> Vec<Violation> {
    let lineage = f.lineage();
    let mut problems = Vec::new();
    for ((t, p), offsets) in rows {
        let mut spans: Vec<&crate::table::entry::Span> = lineage
            .iter()
            .filter(|s| &s.topic == t && s.partition == *p)
            .collect();
        spans.sort_by_key(|s| s.first);
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            problems.push(format!("{t}/{p}: an offset is held twice"));
        }
        let mut counts = vec![0u64; spans.len()];
        let mut outside = 0u64;
        for o in sorted {
            let i = spans.partition_point(|s| s.first <= o);
            match i.checked_sub(1).filter(|&i| o < spans[i].next) {
                Some(i) => counts[i] += 1,
                None => outside += 1,
            }
        }
        if outside > 0 {
            problems.push(format!("{t}/{p}: {outside} rows outside the file's spans"));
        }
        for (s, n) in spans.iter().zip(counts) {
            if n != s.rows {
                problems.push(format!(
                    "{t}/{p}: span [{}, {}) records {} rows, the file holds {n}",
                    s.first, s.next, s.rows
                ));
            }
        }
    }
    for s in lineage.iter() {
        if !rows
            .iter()
            .any(|((t, p), _)| *t == s.topic && *p == s.partition)
            && s.rows > 0
        {
            problems.push(format!(
                "{}/{}: span [{}, {}) records {} rows, the file holds none",
                s.topic, s.partition, s.first, s.next, s.rows
            ));
        }
    }
    if problems.is_empty() {
        return Vec::new();
    }
    if f.spans.is_empty() {
        // A loader's file: its rows lie outside its recorded offsets.
        return vec![Violation::OffsetsOutsideRange {
            seq,
            path: f.path.clone(),
            topic: f.topic.clone(),
            partition: f.partition,
        }];
    }
    vec![Violation::BadLineage {
        seq,
        message: format!("{}: {}", f.path, problems.join("; ")),
    }]
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

/// The offsets of a data file's rows, per partition: its `_offset` column, and for a file of
/// several partitions (compacted) its `_topic` and `_partition` columns too.
async fn file_rows(m: &Manifest, f: &DataFile) -> Result<FileRows, Invalid> {
    use crate::record::schema::{OFFSET_COL, PARTITION_COL, TOPIC_COL};
    use arrow::array::{Array, Int32Array, Int64Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let rel = f.path.as_str();
    let bytes = m
        .store()
        .get(rel)
        .await
        .map_err(|e| Invalid(e.to_string()))?
        .ok_or_else(|| invalid!("{rel} is missing"))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Invalid(e.to_string()))?;
    let mixed = !f.spans.is_empty();
    let cols: &[&str] = if mixed {
        &[TOPIC_COL, PARTITION_COL, OFFSET_COL]
    } else {
        &[OFFSET_COL]
    };
    let mask = ProjectionMask::columns(builder.parquet_schema(), cols.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Invalid(e.to_string()))?;
    let mut out: FileRows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Invalid(e.to_string()))?;
        let offsets = batch
            .column_by_name(OFFSET_COL)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| invalid!("{rel} has no Int64 `_offset` column"))?;
        if offsets.null_count() > 0 {
            return Err(invalid!("{rel}: null `_offset` values"));
        }
        if !mixed {
            match out.first_mut() {
                Some((_, v)) => v.extend(offsets.values().iter().copied()),
                None => out.push(((f.topic.clone(), f.partition), offsets.values().to_vec())),
            }
            continue;
        }
        let topics = batch
            .column_by_name(TOPIC_COL)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| invalid!("{rel} has no string `_topic` column"))?;
        let parts = batch
            .column_by_name(PARTITION_COL)
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .ok_or_else(|| invalid!("{rel} has no Int32 `_partition` column"))?;
        for i in 0..batch.num_rows() {
            let (t, p, o) = (topics.value(i), parts.value(i), offsets.value(i));
            match out.iter_mut().find(|((ot, op), _)| ot == t && *op == p) {
                Some((_, v)) => v.push(o),
                None => out.push(((t.to_string(), p), vec![o])),
            }
        }
    }
    Ok(out)
}

pub(super) async fn check_file(m: &Manifest, rel: &str, bytes: u64, rows: u64) -> Vec<Violation> {
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
            error: error.0,
        }),
    }
    out
}

/// The row count in a Parquet file's footer, read with two range requests.
async fn footer_rows(m: &Manifest, rel: &str, size: u64) -> Result<u64, Invalid> {
    if size < 12 {
        return Err(invalid!("{size} bytes is too small for a Parquet file"));
    }
    let tail = m
        .store()
        .get_range(rel, size - 8..size)
        .await
        .map_err(|e| Invalid(e.to_string()))?;
    if &tail[4..8] != b"PAR1" {
        return Err("no Parquet magic at the end".into());
    }
    let len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if len + 12 > size {
        return Err(invalid!("footer length {len} exceeds the file"));
    }
    let footer = m
        .store()
        .get_range(rel, size - 8 - len..size - 8)
        .await
        .map_err(|e| Invalid(e.to_string()))?;
    let md = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| Invalid(e.to_string()))?;
    Ok(md.file_metadata().num_rows().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
