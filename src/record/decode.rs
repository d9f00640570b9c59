//! Batch decoding of raw Kafka payloads into Arrow rows.
//!
//! Payloads of one partition are copied into a [`RawChunk`] arena (no allocation per event) and
//! decoded together by arrow-json's tape decoder, fed the raw bytes. A record that is not one
//! complete JSON object fitting the schema is isolated (the rest of the chunk is re-decoded
//! without it, halving on type errors) and becomes a [`DeadRecord`] with its offset and reason:
//! every record of a chunk ends up either as a row or as a dead record, never both, never
//! neither.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::json::reader::{Decoder, ReaderBuilder};

use crate::record::event_time::to_millis;
use crate::record::options::{EventTime, PayloadFormat, WriterSchemas};
use crate::record::schema::TableSchema;

pub use crate::record::chunk::{DeadRecord, RawChunk};

impl Decoded {
    /// Takes out the rows with an event time before `before_ms` (rows of windows closed
    /// through there) and returns them as dead records saying so, with their payloads from
    /// `raw`, in offset order.
    pub fn take_late(
        &mut self,
        raw: &RawChunk,
        before_ms: i64,
    ) -> Result<Vec<DeadRecord>, arrow::error::ArrowError> {
        let Some(batch) = &self.batch else {
            return Ok(Vec::new());
        };
        if self.event_ms.iter().all(|&t| t >= before_ms) {
            return Ok(Vec::new());
        }
        let offsets = batch
            .column_by_name(crate::record::schema::OFFSET_COL)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
            .ok_or_else(|| {
                arrow::error::ArrowError::SchemaError("decoded rows have no `_offset`".into())
            })?
            .clone();
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| ms.to_string())
        };
        let mut late = Vec::new();
        for (i, &t) in self.event_ms.iter().enumerate() {
            if t >= before_ms {
                continue;
            }
            if let Ok(at) = raw.offsets.binary_search(&offsets.value(i)) {
                late.push(raw.dead(
                    at,
                    format!(
                        "late record: event time {} is in a window closed through {}",
                        time(t),
                        time(before_ms)
                    ),
                ));
            }
        }
        let keep: arrow::array::BooleanArray = self
            .event_ms
            .iter()
            .map(|&t| Some(t >= before_ms))
            .collect();
        let kept = filter_record_batch(batch, &keep)?;
        self.event_ms.retain(|&t| t >= before_ms);
        self.batch = (kept.num_rows() > 0).then_some(kept);
        Ok(late)
    }
}

/// The rows of a chunk, with their event times, and the records that could not be loaded.
#[derive(Debug)]
pub struct Decoded {
    /// Rows in offset order, in the table schema (payload fields, then source columns).
    pub batch: Option<RecordBatch>,
    /// Event time (ms since epoch, UTC) of each row of `batch`.
    pub event_ms: Vec<i64>,
    pub dead: Vec<DeadRecord>,
    /// Decoding stopped before the chunk was read (the schema registry stayed unavailable
    /// until the loader stopped): nothing of the chunk may be committed.
    pub interrupted: Option<String>,
}

/// Decodes chunks of one table's payloads.
pub struct ChunkDecoder {
    schema: TableSchema,
    event_time: EventTime,
    /// Column index of the event-time field in the payload schema.
    event_col: Option<usize>,
    /// A decoder left clean by a successful flush, reused by the next chunk (building one
    /// per chunk cost page faults and allocations).
    spare: std::cell::RefCell<Option<Decoder>>,
    /// The fast path for chunks of flat records, when the schema allows it.
    pub(crate) flat: Option<crate::record::flat::FlatDecoder>,
    /// Avro payloads (`avro`, `confluent-avro`) instead of JSON.
    avro: Option<crate::record::avro::AvroDecoder>,
}

/// Rows a reusable decoder holds per flush (chunks are at most this long).
const SPARE_ROWS: usize = 8192;

impl ChunkDecoder {
    pub fn new(schema: TableSchema, event_time: EventTime) -> Self {
        let event_col = match &event_time {
            EventTime::Field { name, .. } => schema.payload.index_of(name).ok(),
            EventTime::KafkaTimestamp => None,
        };
        Self {
            flat: crate::record::flat::FlatDecoder::new(&schema.payload),
            schema,
            event_time,
            event_col,
            spare: std::cell::RefCell::new(None),
            avro: None,
        }
    }

    /// The decoder of payloads in `format`: JSON, raw Avro or the Confluent wire format
    /// (its writer schemas from `writers`). `stop` ends waiting for an unavailable schema
    /// registry.
    pub fn for_format(
        schema: TableSchema,
        event_time: EventTime,
        format: PayloadFormat,
        writers: Option<&WriterSchemas>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, crate::error::Invalid> {
        let d = Self::new(schema, event_time);
        match format {
            PayloadFormat::Json => Ok(d),
            format => d.with_avro(format, writers, stop),
        }
    }

    /// Decodes Avro payloads (`format` is `avro` or `confluent-avro`) instead of JSON.
    pub fn with_avro(
        mut self,
        format: PayloadFormat,
        writers: Option<&WriterSchemas>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, crate::error::Invalid> {
        let avro = crate::record::avro::AvroDecoder::new(
            format,
            &self.schema.avsc,
            self.schema.payload.clone(),
            writers,
        )?;
        self.avro = Some(avro.with_stop(stop));
        self.flat = None;
        // Avro enums are symbol indexes resolved against the reader's symbols: always valid,
        // so the strings need no check after decoding.
        self.schema.enums.clear();
        Ok(self)
    }

    /// The same decoder without the flat-record fast path (to compare the two).
    pub fn without_fast_path(mut self) -> Self {
        self.flat = None;
        self
    }

    /// Decodes every record of `chunk`.
    pub fn decode(&self, chunk: &RawChunk, topic: &str, partition: i32) -> Decoded {
        let mut parts: Vec<(RecordBatch, Vec<u32>)> = Vec::new();
        let mut bad: Vec<(u32, String)> = Vec::new();
        match (&self.avro, &self.flat) {
            (Some(avro), _) => {
                if let Err(e) = avro.decode_rows(chunk, &mut parts, &mut bad) {
                    return Decoded {
                        batch: None,
                        event_ms: Vec::new(),
                        dead: Vec::new(),
                        interrupted: Some(e.to_string()),
                    };
                }
            }
            (None, Some(flat)) => self.decode_mixed(flat, chunk, &mut parts, &mut bad),
            (None, None) => {
                let all: Vec<u32> = (0..chunk.len() as u32).collect();
                self.decode_rows(chunk, &all, &mut parts, &mut bad);
            }
        }

        // Post-decode checks: enum symbols and a usable event time.
        let mut kept_batches = Vec::with_capacity(parts.len());
        let mut rows: Vec<u32> = Vec::with_capacity(chunk.len());
        let mut event_ms: Vec<i64> = Vec::with_capacity(chunk.len());
        for (batch, idx) in parts {
            let times = self.event_times(&batch, chunk, &idx);
            let mut keep = vec![true; batch.num_rows()];
            for (col, symbols) in &self.schema.enums {
                if let Some(values) = batch.column(*col).as_any().downcast_ref::<StringArray>() {
                    for (r, v) in values.iter().enumerate() {
                        if let Some(v) = v {
                            if keep[r] && !symbols.iter().any(|s| s == v) {
                                keep[r] = false;
                                bad.push((
                                    idx[r],
                                    format!(
                                        "field `{}`: `{v}` is not one of the enum symbols",
                                        self.schema.payload.field(*col).name()
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            for (r, t) in times.iter().enumerate() {
                if !keep[r] {
                    continue;
                }
                match t {
                    Ok(ms) => {
                        rows.push(idx[r]);
                        event_ms.push(*ms);
                    }
                    Err(e) => {
                        keep[r] = false;
                        bad.push((idx[r], e.clone()));
                    }
                }
            }
            if keep.iter().all(|k| *k) {
                kept_batches.push(batch);
            } else {
                let mask = BooleanArray::from(keep);
                match filter_record_batch(&batch, &mask) {
                    Ok(b) => kept_batches.push(b),
                    Err(e) => {
                        // Cannot happen for a mask of the batch's length; account the rows.
                        let kept: Vec<u32> = idx
                            .iter()
                            .zip(mask.iter())
                            .filter(|(_, k)| k.unwrap_or(false))
                            .map(|(i, _)| *i)
                            .collect();
                        for i in kept {
                            bad.push((i, format!("internal: {e}")));
                        }
                    }
                }
            }
        }

        // Rows stay in offset order: parts come in index order and filtering keeps order.
        let batch = self.finish_batch(kept_batches, &rows, chunk, topic, partition);
        let (batch, event_ms) = match batch {
            Ok(b) => (b, event_ms),
            Err(e) => {
                for &i in &rows {
                    bad.push((i, format!("internal: {e}")));
                }
                (None, Vec::new())
            }
        };
        bad.sort_by_key(|(i, _)| *i);
        let dead = bad
            .into_iter()
            .map(|(i, e)| chunk.dead(i as usize, e))
            .collect();
        Decoded {
            batch,
            event_ms,
            dead,
            interrupted: None,
        }
    }

    /// Runs of records the flat path reads, and between them runs of records it refuses, for
    /// the general path; parts stay in record order. Past a sixteenth of the chunk refused (and
    /// at least 8 records), the rest goes to the general path in one run.
    fn decode_mixed(
        &self,
        flat: &crate::record::flat::FlatDecoder,
        chunk: &RawChunk,
        parts: &mut Vec<(RecordBatch, Vec<u32>)>,
        bad: &mut Vec<(u32, String)>,
    ) {
        let n = chunk.len();
        let most_refused = (n / 16).max(8);
        let (mut i, mut refused) = (0usize, 0usize);
        let mut slow_from: Option<usize> = None;
        while i < n {
            let (batch, k) =
                flat.decode_prefix((i..n).map(|r| chunk.payload(r)), chunk.bytes(), i == 0);
            if let Some(batch) = batch {
                if let Some(s) = slow_from.take() {
                    let run: Vec<u32> = (s as u32..i as u32).collect();
                    self.decode_rows(chunk, &run, parts, bad);
                }
                parts.push((batch, (i as u32..(i + k) as u32).collect()));
                i += k;
                continue;
            }
            // Record `i` is refused: it joins the general path's run.
            slow_from.get_or_insert(i);
            refused += 1;
            i = if refused > most_refused { n } else { i + 1 };
        }
        if let Some(s) = slow_from {
            let run: Vec<u32> = (s as u32..n as u32).collect();
            self.decode_rows(chunk, &run, parts, bad);
        }
    }

    /// A decoder for `rows` records: the spare one when there is one, else a new one, sized
    /// for a whole chunk (reusable) when `rows` is near a chunk, or just for `rows` (the
    /// halving of a chunk with a bad record). The flag says whether it is chunk-sized.
    fn new_decoder(&self, rows: usize) -> Result<(Decoder, bool), arrow::error::ArrowError> {
        if rows <= SPARE_ROWS {
            if let Some(d) = self.spare.borrow_mut().take() {
                return Ok((d, true));
            }
        }
        let large = rows > SPARE_ROWS / 2;
        let capacity = if large {
            rows.max(SPARE_ROWS)
        } else {
            rows.max(1)
        };
        ReaderBuilder::new(self.schema.payload.clone())
            .with_batch_size(capacity + 1)
            .build_decoder()
            .map(|d| (d, large && capacity == SPARE_ROWS))
    }

    /// Why `payload` is not one JSON record, as a fresh decoder with room for two values finds
    /// (a function of the payload alone); `None` if it finds nothing wrong.
    fn diagnose(&self, payload: &[u8]) -> Option<String> {
        let mut dec = ReaderBuilder::new(self.schema.payload.clone())
            .with_batch_size(2)
            .build_decoder()
            .ok()?;
        match dec.decode(payload) {
            Err(e) => Some(format!("invalid JSON: {e}")),
            Ok(n) if n != payload.len() => Some("payload holds more than one JSON value".into()),
            Ok(_) if dec.has_partial_record() => Some("truncated JSON: incomplete value".into()),
            Ok(_) if dec.len() > 1 => Some("payload holds more than one JSON value".into()),
            Ok(_) => None,
        }
    }

    /// Decodes the records `idx` (ascending), pushing good batches in order and bad records.
    fn decode_rows(
        &self,
        chunk: &RawChunk,
        idx: &[u32],
        parts: &mut Vec<(RecordBatch, Vec<u32>)>,
        bad: &mut Vec<(u32, String)>,
    ) {
        let mut start = 0;
        'outer: while start < idx.len() {
            let (mut dec, reusable) = match self.new_decoder(idx.len() - start) {
                Ok(d) => d,
                Err(e) => {
                    let reason = format!("no JSON decoder for the schema: {e}");
                    bad.extend(idx[start..].iter().map(|&i| (i, reason.clone())));
                    return;
                }
            };
            let mut fed: Vec<u32> = Vec::with_capacity(idx.len() - start);
            for (pos, &i) in idx.iter().enumerate().skip(start) {
                let Some(payload) = chunk.payload(i as usize) else {
                    bad.push((i, "null payload (tombstone)".into()));
                    continue;
                };
                if too_deep(payload) {
                    bad.push((i, format!("JSON nested deeper than {MAX_DEPTH} levels")));
                    continue;
                }
                let before = dec.len();
                let problem = match dec.decode(payload) {
                    Err(e) => Some(format!("invalid JSON: {e}")),
                    Ok(n) if n != payload.len() => {
                        Some("payload holds more than one JSON value".into())
                    }
                    Ok(_) if dec.has_partial_record() => {
                        Some("truncated JSON: incomplete value".into())
                    }
                    Ok(_) if dec.len() == before => {
                        // Nothing was added (an empty or blank payload): the decoder is intact.
                        bad.push((i, "empty payload".into()));
                        continue;
                    }
                    Ok(_) if dec.len() != before + 1 => {
                        Some("payload holds more than one JSON value".into())
                    }
                    Ok(_) => None,
                };
                match problem {
                    None => fed.push(i),
                    Some(reason) => {
                        // The reason, found again on a fresh decoder: what this one said depends
                        // on how full it was (fuzzing found two paths naming one payload's fault
                        // differently).
                        let reason = self.diagnose(payload).unwrap_or(reason);
                        // The decoder state is spoiled: decode what came before on its own,
                        // drop this record, and go on after it with a fresh decoder.
                        bad.push((i, reason));
                        self.flush_or_split(chunk, fed, (dec, reusable), parts, bad, true);
                        start = pos + 1;
                        continue 'outer;
                    }
                }
            }
            self.flush_or_split(chunk, fed, (dec, reusable), parts, bad, false);
            return;
        }
    }

    /// Flushes the decoder holding exactly `fed` (unless `spoiled`, then re-decodes `fed`). When
    /// flushing fails (a value does not fit the schema), splits `fed` in halves to find the
    /// records at fault.
    fn flush_or_split(
        &self,
        chunk: &RawChunk,
        fed: Vec<u32>,
        (mut dec, reusable): (Decoder, bool),
        parts: &mut Vec<(RecordBatch, Vec<u32>)>,
        bad: &mut Vec<(u32, String)>,
        spoiled: bool,
    ) {
        if fed.is_empty() {
            return;
        }
        if spoiled {
            self.decode_rows(chunk, &fed, parts, bad);
            return;
        }
        match dec.flush() {
            Ok(Some(batch)) if batch.num_rows() == fed.len() => {
                parts.push((batch, fed));
                // A successful flush leaves the decoder empty: keep it for the next chunk.
                if reusable && dec.is_empty() && !dec.has_partial_record() {
                    *self.spare.borrow_mut() = Some(dec);
                }
            }
            Ok(_) if fed.len() == 1 => bad.push((fed[0], "decoded row count mismatch".into())),
            Err(e) if fed.len() == 1 => bad.push((fed[0], format!("does not fit the schema: {e}"))),
            _ => {
                let mid = fed.len() / 2;
                self.decode_rows(chunk, &fed[..mid], parts, bad);
                self.decode_rows(chunk, &fed[mid..], parts, bad);
            }
        }
    }

    /// The event time of each row, or why it has none.
    fn event_times(
        &self,
        batch: &RecordBatch,
        chunk: &RawChunk,
        idx: &[u32],
    ) -> Vec<Result<i64, String>> {
        let (col, format) = match (&self.event_time, self.event_col) {
            (EventTime::KafkaTimestamp, _) => {
                return idx
                    .iter()
                    .map(|&i| {
                        chunk
                            .timestamp(i as usize)
                            .ok_or_else(|| "the message has no Kafka timestamp".to_string())
                    })
                    .collect()
            }
            (EventTime::Field { format, .. }, Some(c)) => (batch.column(c), *format),
            (EventTime::Field { name, .. }, None) => {
                return vec![
                    Err(format!(
                        "event-time field `{name}` is missing from the schema"
                    ));
                    idx.len()
                ]
            }
        };
        let name = match &self.event_time {
            EventTime::Field { name, .. } => name.as_str(),
            EventTime::KafkaTimestamp => "",
        };
        let millis = match to_millis(col, format) {
            Ok(m) => m,
            Err(e) => return vec![Err(format!("event-time field `{name}`: {e}")); idx.len()],
        };
        (0..millis.len())
            .map(|r| {
                if millis.is_valid(r) {
                    Ok(millis.value(r))
                } else if col.is_null(r) {
                    Err(format!("event-time field `{name}` is null"))
                } else {
                    Err(format!(
                        "event-time field `{name}` is not a valid {format:?} time"
                    ))
                }
            })
            .collect()
    }

    fn finish_batch(
        &self,
        batches: Vec<RecordBatch>,
        rows: &[u32],
        chunk: &RawChunk,
        topic: &str,
        partition: i32,
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let payload = if batches.len() == 1 {
            batches
                .into_iter()
                .next()
                .unwrap_or_else(|| RecordBatch::new_empty(self.schema.payload.clone()))
        } else {
            concat_batches(&self.schema.payload, &batches)?
        };
        let n = rows.len();
        // Decoded with the Avro types, stored with the Delta ones (microsecond timestamps...).
        let mut columns: Vec<ArrayRef> = payload
            .columns()
            .iter()
            .zip(self.schema.table.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(c.clone()),
                false => cast(c, f.data_type()),
            })
            .collect::<Result<_, _>>()?;
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(topic, n),
        )));
        columns.push(Arc::new(Int32Array::from_value(partition, n)));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&i| chunk.offsets[i as usize]),
        )));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|&i| {
                chunk
                    .timestamp(i as usize)
                    .and_then(|ms| ms.checked_mul(1000))
            }))
            .with_timezone("+00:00"),
        ));
        Ok(Some(RecordBatch::try_new(
            self.schema.table.clone(),
            columns,
        )?))
    }
}

/// Deeper JSON is refused before decoding: the decoder's error path recurses per level.
const MAX_DEPTH: usize = 128;

/// Whether `payload` nests objects/arrays deeper than [`MAX_DEPTH`]. A vectorised count of
/// `{`/`[` bytes settles nearly every payload; only those with many brackets are scanned
/// exactly (strings skipped).
fn too_deep(payload: &[u8]) -> bool {
    if payload.len() <= MAX_DEPTH {
        return false;
    }
    // `b | 0x20` maps `[` (0x5b) onto `{` (0x7b) and nothing else onto it; counting in u8
    // lanes per 128 bytes lets the compiler vectorise (this scan touches every payload byte).
    let brackets: usize = payload
        .chunks(128)
        .map(|c| c.iter().map(|&b| u8::from((b | 0x20) == b'{')).sum::<u8>() as usize)
        .sum();
    if brackets <= MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in payload {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests;
