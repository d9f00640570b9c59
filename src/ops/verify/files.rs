//! The data files' side of `verify`: every offset of an entry's ranges read back from the
//! files' `_offset` column, and each file's size and footer row count.

use futures::StreamExt;

use super::{Span, Violation};
use crate::error::{invalid, Invalid};
use crate::table::entry::Entry;
use crate::table::manifest::Manifest;

/// At most this many hole or duplicate spans are reported per range.
const SPANS_PER_RANGE: usize = 100;

/// Checks an entry record by record: every offset of each range is exactly one row (read
/// from the data files' `_offset` column), dead letter or recorded non-record, and each file's
/// offsets lie in its recorded `[first_offset, next_offset)`. Ranges with a file that cannot
/// be read (a replaced file deleted by `gc`; a missing live file is reported elsewhere) are
/// left to the count check. Returns the violations and the offsets checked.
pub(super) async fn entry_offsets(m: &Manifest, e: &Entry) -> (Vec<Violation>, u64) {
    let read: Vec<(usize, Result<Vec<i64>, Invalid>)> = futures::stream::iter(
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
async fn file_offsets(m: &Manifest, rel: &str) -> Result<Vec<i64>, Invalid> {
    use arrow::array::{Array, Int64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let bytes = m
        .store()
        .get(rel)
        .await
        .map_err(|e| Invalid(e.to_string()))?
        .ok_or_else(|| invalid!("{rel} is missing"))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Invalid(e.to_string()))?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["_offset"]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Invalid(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Invalid(e.to_string()))?;
        let col = batch
            .column_by_name("_offset")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| invalid!("{rel} has no Int64 `_offset` column"))?;
        if col.null_count() > 0 {
            return Err(invalid!("{rel}: null `_offset` values"));
        }
        out.extend(col.values().iter().copied());
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
