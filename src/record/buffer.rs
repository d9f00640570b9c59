//! A partition's decoded, uncommitted rows, kept as the decoded chunks themselves.
//!
//! A chunk is not split by window when it is decoded: it is kept whole, with the list of its
//! rows in each window. Memory is then the decoded data and nothing more, however many windows
//! are open (1,000 windows used to mean 1,000 tiny batches per chunk, each with its own
//! allocations). A window's rows are gathered into one batch only when its file is encoded, one
//! window at a time per encoder.

use std::collections::BTreeMap;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::error::ArrowError;

use crate::record::decode::{DeadRecord, Decoded};
use crate::record::schema::OFFSET_COL;
use crate::record::window::{group_by_window, WindowSize};

/// One window's rows of one chunk.
#[derive(Debug, Clone)]
struct Group {
    start: i64,
    /// Row indices in the chunk, ascending; empty means every row.
    rows: Vec<u32>,
    count: u64,
    first_offset: i64,
    next_offset: i64,
    min_event_ms: i64,
    max_event_ms: i64,
}

/// A decoded chunk with its rows grouped by window (computed off the polling thread).
#[derive(Debug)]
pub struct DecodedChunk {
    batch: Option<RecordBatch>,
    groups: Vec<Group>,
    pub dead: Vec<DeadRecord>,
}

impl DecodedChunk {
    /// Groups the rows by window. Rows without their `_offset` column (never made by the
    /// decoder) are an error, not offset 0.
    pub fn new(decoded: Decoded, window: WindowSize) -> Result<Self, ArrowError> {
        let Decoded {
            batch,
            event_ms,
            dead,
            ..
        } = decoded;
        let mut groups = Vec::new();
        if let Some(b) = &batch {
            let offsets = b
                .column_by_name(OFFSET_COL)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .map(|a| a.values().clone())
                .ok_or_else(|| {
                    ArrowError::SchemaError(format!("decoded rows have no Int64 `{OFFSET_COL}`"))
                })?;
            if offsets.len() != b.num_rows() || event_ms.len() != b.num_rows() {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "{} rows, {} offsets, {} event times",
                    b.num_rows(),
                    offsets.len(),
                    event_ms.len()
                )));
            }
            let at = |r: u32| offsets[r as usize];
            for (start, rows) in group_by_window(window, &event_ms) {
                let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
                    continue;
                };
                let (mut lo, mut hi) = (i64::MAX, i64::MIN);
                for &r in &rows {
                    let t = event_ms[r as usize];
                    lo = lo.min(t);
                    hi = hi.max(t);
                }
                let whole = rows.len() == b.num_rows();
                groups.push(Group {
                    start,
                    count: rows.len() as u64,
                    rows: if whole { Vec::new() } else { rows },
                    first_offset: at(first),
                    next_offset: at(last) + 1,
                    min_event_ms: lo,
                    max_event_ms: hi,
                });
            }
        }
        Ok(DecodedChunk {
            batch,
            groups,
            dead,
        })
    }

    pub fn rows(&self) -> usize {
        self.batch.as_ref().map_or(0, RecordBatch::num_rows)
    }

    /// Memory held: the decoded columns and the row lists.
    pub fn bytes(&self) -> usize {
        self.batch
            .as_ref()
            .map_or(0, RecordBatch::get_array_memory_size)
            + self.groups.iter().map(|g| g.rows.len() * 4).sum::<usize>()
    }
}

/// What a window's file will hold, known before it is encoded.
#[derive(Debug, Clone)]
pub struct WindowRows {
    pub rows: u64,
    pub first_offset: i64,
    pub next_offset: i64,
    pub min_event_ms: i64,
    pub max_event_ms: i64,
    /// (chunk, group in that chunk), in offset order.
    parts: Vec<(u32, u32)>,
}

/// A partition's decoded rows, by window.
#[derive(Debug, Default)]
pub struct PartitionBuffer {
    chunks: Vec<(RecordBatch, Vec<Group>)>,
    windows: BTreeMap<i64, WindowRows>,
    bytes: usize,
    rows: usize,
}

impl PartitionBuffer {
    /// Adds a chunk's rows (chunks arrive in offset order); returns its dead records.
    pub fn push(&mut self, chunk: DecodedChunk) -> Vec<DeadRecord> {
        self.bytes += chunk.bytes();
        self.rows += chunk.rows() + chunk.dead.len();
        let DecodedChunk {
            batch,
            groups,
            dead,
        } = chunk;
        let Some(batch) = batch else {
            return dead;
        };
        let c = self.chunks.len() as u32;
        for (g, group) in groups.iter().enumerate() {
            let w = self.windows.entry(group.start).or_insert(WindowRows {
                rows: 0,
                first_offset: group.first_offset,
                next_offset: group.next_offset,
                min_event_ms: group.min_event_ms,
                max_event_ms: group.max_event_ms,
                parts: Vec::new(),
            });
            w.rows += group.count;
            w.first_offset = w.first_offset.min(group.first_offset);
            w.next_offset = w.next_offset.max(group.next_offset);
            w.min_event_ms = w.min_event_ms.min(group.min_event_ms);
            w.max_event_ms = w.max_event_ms.max(group.max_event_ms);
            w.parts.push((c, g as u32));
        }
        self.chunks.push((batch, groups));
        dead
    }

    /// Open windows, by start.
    pub fn windows(&self) -> impl Iterator<Item = (i64, &WindowRows)> {
        self.windows.iter().map(|(s, w)| (*s, w))
    }

    /// A window's rows as batches to encode, in offset order: whole chunks are shared as they
    /// are; runs of chunks that contribute only some rows are gathered into one batch each.
    pub fn window_batches(&self, w: &WindowRows) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut out = Vec::new();
        let mut sources: Vec<&RecordBatch> = Vec::new();
        let mut picked: Vec<(usize, usize)> = Vec::new();
        for &(c, g) in &w.parts {
            // A part the window lists must be there: leaving it out would write a file
            // short of rows (the commit's row check would refuse it, later and less clearly).
            let missing = || {
                ArrowError::InvalidArgumentError(format!(
                    "window part ({c}, {g}) is missing from the partition's buffer"
                ))
            };
            let (batch, groups) = self.chunks.get(c as usize).ok_or_else(missing)?;
            let group = groups.get(g as usize).ok_or_else(missing)?;
            if group.rows.is_empty() {
                if !picked.is_empty() {
                    out.push(interleave_record_batch(&sources, &picked)?);
                    sources.clear();
                    picked.clear();
                }
                out.push(batch.clone());
            } else {
                let s = sources.len();
                sources.push(batch);
                picked.extend(group.rows.iter().map(|&r| (s, r as usize)));
            }
        }
        if !picked.is_empty() {
            out.push(interleave_record_batch(&sources, &picked)?);
        }
        Ok(out)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.windows.clear();
        self.bytes = 0;
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::*;

    const HOUR: i64 = 3_600_000;

    fn chunk(offsets: &[i64], event_ms: &[i64]) -> Decoded {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8, false),
            Field::new(OFFSET_COL, DataType::Int64, false),
        ]));
        let v: StringArray = offsets.iter().map(|o| Some(format!("row {o}"))).collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(v), Arc::new(Int64Array::from(offsets.to_vec()))],
        )
        .unwrap();
        Decoded {
            batch: Some(batch),
            event_ms: event_ms.to_vec(),
            dead: Vec::new(),
            interrupted: None,
        }
    }

    fn gathered_offsets(buf: &PartitionBuffer, w: &WindowRows) -> Vec<i64> {
        buf.window_batches(w)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let o = b
                    .column_by_name(OFFSET_COL)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let v = b
                    .column_by_name("v")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                // Each row's columns travel together.
                for i in 0..b.num_rows() {
                    assert_eq!(v.value(i), format!("row {}", o.value(i)));
                }
                o.values().to_vec()
            })
            .collect()
    }

    proptest! {
        /// Every row lands in exactly its window, in offset order, with the window's metadata
        /// (rows, offset bounds, event-time bounds) matching the rows.
        #[test]
        fn windows_hold_exactly_their_rows(
            chunks in proptest::collection::vec(proptest::collection::vec(0i64..6, 1..40), 1..8)
        ) {
            let size = WindowSize::from_millis(HOUR).unwrap();
            let mut buf = PartitionBuffer::default();
            let mut expected: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
            let mut next = 100i64;
            for hours in &chunks {
                let offsets: Vec<i64> = (next..next + hours.len() as i64).collect();
                next += hours.len() as i64;
                let times: Vec<i64> = hours.iter().zip(&offsets).map(|(h, o)| h * HOUR + o).collect();
                for (o, t) in offsets.iter().zip(&times) {
                    expected.entry(size.start_of(*t)).or_default().push((*o, *t));
                }
                let dead = buf.push(DecodedChunk::new(chunk(&offsets, &times), size).unwrap());
                prop_assert!(dead.is_empty());
            }
            let total: usize = chunks.iter().map(Vec::len).sum();
            prop_assert_eq!(buf.rows(), total);
            let starts: Vec<i64> = buf.windows().map(|(s, _)| s).collect();
            prop_assert_eq!(starts, expected.keys().copied().collect::<Vec<_>>());
            for (start, w) in buf.windows() {
                let want = &expected[&start];
                let offsets: Vec<i64> = want.iter().map(|r| r.0).collect();
                prop_assert_eq!(gathered_offsets(&buf, w), offsets.clone());
                prop_assert_eq!(w.rows, want.len() as u64);
                prop_assert_eq!(w.first_offset, offsets[0]);
                prop_assert_eq!(w.next_offset, offsets[offsets.len() - 1] + 1);
                prop_assert_eq!(w.min_event_ms, want.iter().map(|r| r.1).min().unwrap());
                prop_assert_eq!(w.max_event_ms, want.iter().map(|r| r.1).max().unwrap());
            }
            buf.clear();
            prop_assert_eq!(buf.windows().count(), 0);
            prop_assert_eq!(buf.bytes(), 0);
        }
    }

    #[test]
    fn whole_chunks_stay_whole_and_partial_ones_are_gathered() {
        let size = WindowSize::from_millis(HOUR).unwrap();
        let mut buf = PartitionBuffer::default();
        buf.push(DecodedChunk::new(chunk(&[0, 1, 2], &[10, 20, 30]), size).unwrap());
        buf.push(DecodedChunk::new(chunk(&[3, 4], &[40, HOUR + 1]), size).unwrap());
        buf.push(DecodedChunk::new(chunk(&[5, 6], &[50, 60]), size).unwrap());
        let (_, first) = buf.windows().next().unwrap();
        // Whole, partial (gathered), whole: three batches in offset order.
        let batches = buf.window_batches(first).unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(gathered_offsets(&buf, first), vec![0, 1, 2, 3, 5, 6]);
        assert!(buf.bytes() > 0);
    }
}
