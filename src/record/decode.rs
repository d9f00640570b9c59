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
    TimestampMillisecondArray,
};
use arrow::compute::kernels::cast::{cast_with_options, CastOptions};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::json::reader::{Decoder, ReaderBuilder};

use crate::config::EventTime;
use crate::record::schema::TableSchema;
use crate::record::schema::TimeFormat;

const NO_TS: i64 = i64::MIN;

/// Raw records of one partition, in offset order, copied into one arena.
#[derive(Debug, Default)]
pub struct RawChunk {
    data: Vec<u8>,
    /// Per record: (payload start, payload end, key start, key end) in `data`; a missing
    /// payload or key has `start == u32::MAX`.
    spans: Vec<[u32; 4]>,
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
}

impl RawChunk {
    pub fn push(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let mut put = |b: Option<&[u8]>| match b {
            Some(b) => {
                let s = self.data.len() as u32;
                self.data.extend_from_slice(b);
                (s, self.data.len() as u32)
            }
            None => (u32::MAX, 0),
        };
        let (ps, pe) = put(payload);
        let (ks, ke) = put(key);
        self.spans.push([ps, pe, ks, ke]);
        self.offsets.push(offset);
        self.timestamps.push(timestamp_ms.unwrap_or(NO_TS));
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        self.offsets.clear();
        self.timestamps.clear();
    }

    fn slice(&self, s: u32, e: u32) -> Option<&[u8]> {
        (s != u32::MAX).then(|| &self.data[s as usize..e as usize])
    }

    fn payload(&self, i: usize) -> Option<&[u8]> {
        let [s, e, _, _] = self.spans[i];
        self.slice(s, e)
    }

    fn key(&self, i: usize) -> Option<&[u8]> {
        let [_, _, s, e] = self.spans[i];
        self.slice(s, e)
    }

    fn timestamp(&self, i: usize) -> Option<i64> {
        let t = self.timestamps[i];
        (t != NO_TS).then_some(t)
    }

    fn dead(&self, i: usize, error: String) -> DeadRecord {
        DeadRecord {
            offset: self.offsets[i],
            kafka_timestamp: self.timestamp(i),
            key: self.key(i).map(<[u8]>::to_vec),
            payload: self.payload(i).map(<[u8]>::to_vec),
            error,
        }
    }
}

/// A record that could not be loaded, kept with everything needed to replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRecord {
    pub offset: i64,
    pub kafka_timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
}

/// The rows of a chunk, with their event times, and the records that could not be loaded.
#[derive(Debug)]
pub struct Decoded {
    /// Rows in offset order, in the table schema (payload fields, then source columns).
    pub batch: Option<RecordBatch>,
    /// Event time (ms since epoch, UTC) of each row of `batch`.
    pub event_ms: Vec<i64>,
    pub dead: Vec<DeadRecord>,
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
        }
    }

    /// The same decoder without the flat-record fast path (to compare the two).
    pub fn without_fast_path(mut self) -> Self {
        self.flat = None;
        self
    }

    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// Decodes every record of `chunk`.
    pub fn decode(&self, chunk: &RawChunk, topic: &str, partition: i32) -> Decoded {
        let mut parts: Vec<(RecordBatch, Vec<u32>)> = Vec::new();
        let mut bad: Vec<(u32, String)> = Vec::new();
        match &self.flat {
            Some(flat) => self.decode_mixed(flat, chunk, &mut parts, &mut bad),
            None => {
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
    fn new_decoder(&self, rows: usize) -> Result<(Decoder, bool), String> {
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
            .map_err(|e| e.to_string())
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
                    bad.extend(idx[start..].iter().map(|&i| (i, e.clone())));
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
        let mut columns: Vec<ArrayRef> = payload.columns().to_vec();
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(topic, n),
        )));
        columns.push(Arc::new(Int32Array::from_value(partition, n)));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&i| chunk.offsets[i as usize]),
        )));
        columns.push(Arc::new(
            TimestampMillisecondArray::from_iter(rows.iter().map(|&i| chunk.timestamp(i as usize)))
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

/// Converts an event-time column to milliseconds since the epoch; invalid values become null.
/// Event times of a column of strict RFC 3339 times (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`),
/// or `None` if any value has another shape: the column then goes through arrow's cast, which
/// also reads the looser forms. (Same result for the strict shape, without arrow's general
/// parser: decode +3% in the micro-benchmark.)
fn rfc3339_column(col: &StringArray) -> Option<Int64Array> {
    let mut out = Vec::with_capacity(col.len());
    for v in col.iter() {
        out.push(match v {
            Some(v) => Some(rfc3339_millis(v.as_bytes())?),
            None => None,
        });
    }
    Some(out.into_iter().collect())
}

/// Milliseconds since the epoch of a strict RFC 3339 time (fraction truncated), or `None`.
fn rfc3339_millis(s: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &b in s.get(r)? {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(b - b'0');
        }
        Some(n)
    };
    let at = |i: usize, c: u8| s.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if at(i, b'.') {
        let start = i + 1;
        i = start;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        millis = num(start..start + digits.min(3))? * [100, 10, 1][digits.min(3) - 1];
    }
    let offset_min = match s.get(i)? {
        b'Z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == s.len() && at(i + 3, b':') => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 (proleptic Gregorian; H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1_000 + millis)
}

fn to_millis(col: &ArrayRef, format: TimeFormat) -> Result<Int64Array, String> {
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let ts_ms = DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()));
    let as_i64 = |a: &ArrayRef| -> Result<Int64Array, String> {
        let c = cast_with_options(a, &DataType::Int64, &safe).map_err(|e| e.to_string())?;
        c.as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| "cast to Int64 failed".to_string())
    };
    match format {
        TimeFormat::Rfc3339 => {
            if let Some(fast) = col
                .as_any()
                .downcast_ref::<StringArray>()
                .and_then(rfc3339_column)
            {
                return Ok(fast);
            }
            let ts = cast_with_options(col, &ts_ms, &safe).map_err(|e| e.to_string())?;
            as_i64(&ts)
        }
        TimeFormat::Logical => {
            let ts = cast_with_options(col, &ts_ms, &safe).map_err(|e| e.to_string())?;
            as_i64(&ts)
        }
        TimeFormat::EpochMillis => as_i64(col),
        TimeFormat::EpochSeconds => {
            let secs = as_i64(col)?;
            Ok(secs
                .iter()
                .map(|s| s.and_then(|s| s.checked_mul(1000)))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::schema::OFFSET_COL;
    use proptest::prelude::*;

    /// arrow's reading of a time string (the general path), in ms.
    fn arrow_millis(s: &str) -> Option<i64> {
        let col: ArrayRef = Arc::new(StringArray::from(vec![s]));
        let ts = cast_with_options(
            &col,
            &DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            &CastOptions {
                safe: true,
                ..Default::default()
            },
        )
        .ok()?;
        let ms = cast_with_options(&ts, &DataType::Int64, &CastOptions::default()).ok()?;
        let ms = ms.as_any().downcast_ref::<Int64Array>()?;
        ms.is_valid(0).then(|| ms.value(0))
    }

    proptest! {
        /// Whatever the strict RFC 3339 reader accepts, arrow reads as the same instant;
        /// the cases it refuses (invalid dates, leap seconds, other shapes) go to arrow.
        #[test]
        fn rfc3339_fast_path_agrees_with_arrow(
            y in 0i64..=9999, mo in 0i64..=13, d in 0i64..=32, h in 0i64..=24, mi in 0i64..=60,
            sec in 0i64..=60, frac in proptest::option::of("[0-9]{0,10}"),
            off in prop_oneof![Just("Z".to_string()), Just("z".to_string()),
                (prop_oneof![Just('+'), Just('-')], 0i64..=24, 0i64..=60)
                    .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}"))],
            sep in prop_oneof![Just('T'), Just('T'), Just(' '), Just('t')],
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{sec:02}{frac}{off}");
            if let Some(ms) = rfc3339_millis(text.as_bytes()) {
                prop_assert_eq!(Some(ms), arrow_millis(&text), "{}", text);
            }
        }
    }

    #[test]
    fn rfc3339_fast_path_reads_the_usual_forms() {
        for text in [
            "2026-11-24T13:05:00Z",
            "2026-11-24T13:05:00.123456Z",
            "2024-02-29T23:59:59.9+01:00",
            "1969-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00-23:59",
        ] {
            let fast = rfc3339_millis(text.as_bytes());
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, arrow_millis(text), "{text}");
        }
        for text in [
            "2026-02-29T00:00:00Z",
            "2026-11-24 13:05:00Z",
            "2026-11-24T23:59:60Z",
        ] {
            assert_eq!(rfc3339_millis(text.as_bytes()), None, "{text}");
        }
    }

    const SCHEMA: &str = r#"{"type":"record","name":"p","fields":[
        {"name":"id","type":"string"},
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
        {"name":"status","type":{"type":"enum","name":"st","symbols":["OK","FAILED"]}},
        {"name":"note","type":["null","string"]},
        {"name":"ts","type":"string"}]}"#;

    fn decoder() -> ChunkDecoder {
        ChunkDecoder::new(
            TableSchema::parse(SCHEMA).unwrap(),
            EventTime::Field {
                name: "ts".into(),
                format: TimeFormat::Rfc3339,
            },
        )
    }

    fn good(i: i64) -> String {
        format!(
            r#"{{"id":"e{i}","amount":"12.50","status":"OK","ts":"2026-11-24T13:{:02}:00Z"}}"#,
            i % 60
        )
    }

    fn offsets(d: &Decoded) -> Vec<i64> {
        d.batch
            .as_ref()
            .map(|b| {
                b.column_by_name(OFFSET_COL)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .unwrap_or_default()
    }

    #[test]
    fn decodes_a_clean_chunk() {
        let mut c = RawChunk::default();
        for i in 0..100 {
            c.push(1000 + i, Some(5), None, Some(good(i).as_bytes()));
        }
        let d = decoder().decode(&c, "t", 3);
        assert!(
            d.dead.is_empty(),
            "{:?}",
            d.dead.iter().map(|r| &r.error).collect::<Vec<_>>()
        );
        assert_eq!(offsets(&d), (1000..1100).collect::<Vec<_>>());
        assert_eq!(d.event_ms[0], 1_795_525_200_000);
        assert_eq!(d.batch.unwrap().num_columns(), 9);
    }

    #[test]
    fn isolates_every_kind_of_bad_record() {
        let bad: Vec<(&str, Option<&[u8]>)> = vec![
            ("truncated", Some(br#"{"id":"x","amount":"1.00","#)),
            ("garbage", Some(b"\xff\xfe not json")),
            ("two values", Some(br#"{"id":"a","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}{"id":"b"}"#)),
            ("wrong type", Some(br#"{"id":"a","amount":"abc","status":"OK","ts":"2026-11-24T00:00:00Z"}"#)),
            ("missing field", Some(br#"{"amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}"#)),
            ("bad enum", Some(br#"{"id":"a","amount":"1","status":"MAYBE","ts":"2026-11-24T00:00:00Z"}"#)),
            ("bad time", Some(br#"{"id":"a","amount":"1","status":"OK","ts":"yesterday"}"#)),
            ("empty", Some(b"")),
            ("tombstone", None),
            ("array", Some(b"[1,2,3]")),
            ("scalar", Some(b"42")),
            ("nested open", Some(br#"{"id":"#)),
        ];
        let mut c = RawChunk::default();
        let mut expected_bad = Vec::new();
        let mut offset = 0;
        for (_, payload) in &bad {
            c.push(offset, None, Some(b"k"), Some(good(offset).as_bytes()));
            offset += 1;
            c.push(offset, None, None, *payload);
            expected_bad.push(offset);
            offset += 1;
        }
        c.push(offset, None, None, Some(good(offset).as_bytes()));
        let d = decoder().decode(&c, "t", 0);
        let dead: Vec<i64> = d.dead.iter().map(|r| r.offset).collect();
        assert_eq!(
            dead,
            expected_bad,
            "{:?}",
            d.dead
                .iter()
                .map(|r| (r.offset, &r.error))
                .collect::<Vec<_>>()
        );
        let good_offsets: Vec<i64> = (0..=offset).step_by(2).collect();
        assert_eq!(offsets(&d), good_offsets);
        assert_eq!(d.event_ms.len(), good_offsets.len());
    }

    #[test]
    fn kafka_timestamp_and_epoch_event_times() {
        let schema = TableSchema::parse(
            r#"{"type":"record","name":"r","fields":[{"name":"id","type":"string"},{"name":"s","type":["null","long"]},{"name":"ms","type":"long"}]}"#,
        )
        .unwrap();
        let mut c = RawChunk::default();
        c.push(
            0,
            Some(1_000),
            None,
            Some(br#"{"id":"a","s":1700000000,"ms":1700000000123}"#),
        );
        c.push(1, None, None, Some(br#"{"id":"b","s":null,"ms":5}"#));
        let by_kafka =
            ChunkDecoder::new(schema.clone(), EventTime::KafkaTimestamp).decode(&c, "t", 0);
        assert_eq!(by_kafka.event_ms, vec![1_000]);
        assert_eq!(by_kafka.dead.len(), 1);
        assert!(by_kafka.dead[0].error.contains("Kafka timestamp"));
        let secs = EventTime::Field {
            name: "s".into(),
            format: TimeFormat::EpochSeconds,
        };
        let d = ChunkDecoder::new(schema.clone(), secs).decode(&c, "t", 0);
        assert_eq!(d.event_ms, vec![1_700_000_000_000]);
        assert_eq!(d.dead.len(), 1);
        assert!(d.dead[0].error.contains("null"), "{}", d.dead[0].error);
        let ms = EventTime::Field {
            name: "ms".into(),
            format: TimeFormat::EpochMillis,
        };
        let d = ChunkDecoder::new(schema, ms).decode(&c, "t", 0);
        assert_eq!(d.event_ms, vec![1_700_000_000_123, 5]);
    }

    #[test]
    fn decodes_nested_and_logical_types() {
        let schema = TableSchema::parse(
            r#"{"type":"record","name":"r","fields":[
              {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
              {"name":"day","type":{"type":"int","logicalType":"date"}},
              {"name":"amt","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":3}},
              {"name":"tags","type":{"type":"array","items":"string"}},
              {"name":"attrs","type":{"type":"map","values":"long"}},
              {"name":"card","type":["null",{"type":"record","name":"card","fields":[{"name":"bin","type":"string"},{"name":"exp","type":"int"}]}]},
              {"name":"raw","type":"bytes"},
              {"name":"fx","type":{"type":"fixed","name":"f2","size":2}}]}"#,
        )
        .unwrap();
        let et = EventTime::Field {
            name: "ts".into(),
            format: TimeFormat::Logical,
        };
        let dec = ChunkDecoder::new(schema, et);
        let mut c = RawChunk::default();
        c.push(7, None, None, Some(br#"{"ts":"2026-11-24T13:45:00.5Z","day":20000,"amt":"12.345","tags":["a","b"],"attrs":{"x":1},"card":{"bin":"4242","exp":2712},"raw":"00ff","fx":"abcd"}"#));
        c.push(8, None, None, Some(br#"{"ts":1795527900000000,"day":1,"amt":1.5,"tags":[],"attrs":{},"card":null,"raw":"","fx":"0000"}"#));
        let d = dec.decode(&c, "t", 0);
        assert!(
            d.dead.is_empty(),
            "{:?}",
            d.dead.iter().map(|r| &r.error).collect::<Vec<_>>()
        );
        assert_eq!(d.event_ms, vec![1_795_527_900_500, 1_795_527_900_000]);
        let b = d.batch.unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column_by_name("card").unwrap().null_count(), 1);
    }

    #[test]
    fn depth_check_skips_strings() {
        assert!(!too_deep(
            format!(r#"{{"s":"{}"}}"#, "[".repeat(500)).as_bytes()
        ));
        assert!(!too_deep(
            format!(r#"{{"s":"\"{}"}}"#, "{".repeat(500)).as_bytes()
        ));
        assert!(too_deep("[".repeat(129).as_bytes()));
        assert!(!too_deep(
            format!("{}{}", "[".repeat(128), "]".repeat(128)).as_bytes()
        ));
    }

    #[test]
    fn hostile_payloads_never_panic() {
        let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_object = format!(
            r#"{{"id":"x","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z","extra":{}{}}}"#,
            "{\"a\":".repeat(50_000),
            "}".repeat(50_000)
        );
        let huge_string = format!(
            r#"{{"id":"{}","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}}"#,
            "x".repeat(8 << 20)
        );
        let payloads: Vec<Vec<u8>> = vec![
            deep_array.into_bytes(),
            deep_object.into_bytes(),
            huge_string.into_bytes(),
            vec![0xC3, 0x28, b'{', b'}'],
            br#"{"id":"\ud800","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}"#.to_vec(),
            br#"{"id":1,"amount":true,"status":null,"ts":5}"#.to_vec(),
            b"{}".to_vec(),
            b"null".to_vec(),
        ];
        for (k, p) in payloads.iter().enumerate() {
            eprintln!("hostile payload {k}");
            let mut c = RawChunk::default();
            c.push(k as i64, None, None, Some(p));
            let d = decoder().decode(&c, "t", 0);
            let mut all = offsets(&d);
            all.extend(d.dead.iter().map(|r| r.offset));
            assert_eq!(all, vec![k as i64]);
        }
    }

    proptest! {
        #[test]
        fn every_record_is_a_row_or_dead(
            payloads in proptest::collection::vec(
                prop_oneof![
                    Just(None),
                    (0i64..1000).prop_map(|i| Some(good(i).into_bytes())),
                    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
                    "[{}\\[\\]\":,a-z0-9 ]{0,30}".prop_map(|s| Some(s.into_bytes())),
                ],
                0..60,
            )
        ) {
            let mut c = RawChunk::default();
            for (i, p) in payloads.iter().enumerate() {
                c.push(i as i64, None, None, p.as_deref());
            }
            let d = decoder().decode(&c, "t", 0);
            let mut all: Vec<i64> = offsets(&d);
            all.extend(d.dead.iter().map(|r| r.offset));
            all.sort();
            prop_assert_eq!(all, (0..payloads.len() as i64).collect::<Vec<_>>());
            prop_assert_eq!(d.event_ms.len(), offsets(&d).len());
        }
    }
}
