//! Avro payloads decoded with arrow-avro: raw datums written with the job's schema, or the
//! Confluent wire format (magic byte 0, a 4-byte big-endian schema id, the datum).
//!
//! Every writer schema resolves into the job's schema (the table's reader schema) by Avro's
//! rules (added fields take their defaults, removed fields are skipped, int → long and the
//! other promotions, enum symbols by name), so records of several writer versions interleaved on
//! a partition decode into rows of one shape: one window still makes one file.
//!
//! Records are decoded one datum at a time by one arrow-avro decoder per writer schema, and the
//! rows put back in record order. A record that does not decode (wrong magic byte, an id the
//! registry does not know, a writer schema that does not resolve, a corrupt or truncated datum,
//! bytes past the datum's end) becomes a dead record with the reason; its writer's decoder is
//! rebuilt and re-fed the rows it held, so one bad record never costs its neighbours.
//!
//! A registry that does not answer decides nothing: [`AvroDecoder::decode_rows`] waits and asks
//! again (until the loader is told to stop), so no record is dead-lettered, skipped or committed
//! past because the registry was down.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{cast, interleave_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow_avro::reader::{Decoder, DecoderMode, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use crate::error::{invalid, Invalid};
use crate::record::chunk::RawChunk;
use crate::record::options::{PayloadFormat, WriterSchemas};
use crate::record::registry::{Lookup, SchemaSource, Unavailable};

/// Rows one decoder holds before it is flushed (a chunk is at most 8,192 records).
const BATCH_ROWS: usize = 8192;
/// The id raw Avro payloads are decoded under (their writer schema is the job's own).
const RAW_ID: u32 = 0;
/// A missing id is asked again after this long (a registry replica may lag its leader).
const MISSING_TTL: Duration = Duration::from_secs(60);

/// Decodes Avro payloads of one table into rows of its payload schema.
pub struct AvroDecoder {
    confluent: bool,
    reader: AvroSchema,
    /// The reader's top-level record name and namespace, which writer schemas take.
    reader_name: (serde_json::Value, Option<serde_json::Value>),
    payload: SchemaRef,
    source: Option<SchemaSource>,
    stop: Arc<AtomicBool>,
    writers: RefCell<HashMap<u32, Writer>>,
}

enum Writer {
    /// A writer schema that resolves into the reader schema, and its decoder.
    Ready {
        schema: AvroSchema,
        decoder: Box<Decoder>,
    },
    /// Records naming this id are dead letters, for this reason (asked again after `until`).
    Unusable { reason: String, until: Instant },
}

/// What the decoding of one chunk is building: rows of all writers, put back in record order.
struct Rows<'a> {
    chunk: &'a RawChunk,
    skip: usize,
    /// Per row position: the chunk index of its record.
    records: Vec<u32>,
    /// Per row position: (batch, row) once its writer's decoder was flushed.
    at: Vec<Option<(usize, usize)>>,
    /// Per row position that failed after it was fed: why.
    lost: HashMap<usize, String>,
    batches: Vec<RecordBatch>,
    /// Per writer id: positions fed to its decoder since its last flush.
    pending: HashMap<u32, Vec<usize>>,
}

impl AvroDecoder {
    /// A decoder for `format` (`avro` or `confluent-avro`) with `reader` (the job's `.avsc`
    /// text) as the reader schema, producing rows of `payload`.
    pub fn new(
        format: PayloadFormat,
        reader: &str,
        payload: SchemaRef,
        writers: Option<&WriterSchemas>,
    ) -> Result<Self, Invalid> {
        let parsed: serde_json::Value =
            serde_json::from_str(reader).map_err(|e| invalid!("not JSON: {e}"))?;
        let reader_name = (parsed["name"].clone(), parsed.get("namespace").cloned());
        let reader = AvroSchema::new(reader.to_string());
        let (confluent, source) = match (format, writers) {
            (PayloadFormat::Avro, _) => (false, None),
            (PayloadFormat::ConfluentAvro, Some(w)) => (true, Some(SchemaSource::new(w)?)),
            (PayloadFormat::ConfluentAvro, None) => {
                return Err("confluent-avro needs a schema registry or directory".into())
            }
            (PayloadFormat::Json, _) => return Err("not an Avro format".into()),
        };
        let d = AvroDecoder {
            confluent,
            reader: reader.clone(),
            reader_name,
            payload,
            source,
            stop: Arc::new(AtomicBool::new(false)),
            writers: RefCell::new(HashMap::new()),
        };
        // The reader schema decodes itself: this checks arrow-avro takes it, and raw payloads
        // use it as their writer. (Confluent payloads name theirs by id, 0 included.)
        let own = d
            .build(RAW_ID, &reader)
            .map_err(|e| invalid!("arrow-avro cannot read the schema: {e}"))?;
        if !d.confluent {
            d.writers.borrow_mut().insert(
                RAW_ID,
                Writer::Ready {
                    schema: reader,
                    decoder: Box::new(own),
                },
            );
        }
        Ok(d)
    }

    /// Stops waiting for an unavailable registry once `stop` is set.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    fn build(&self, id: u32, writer: &AvroSchema) -> Result<Decoder, ArrowError> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store.set(Fingerprint::Id(id), writer.clone())?;
        ReaderBuilder::new()
            .with_batch_size(BATCH_ROWS)
            .with_reader_schema(self.reader.clone())
            .with_writer_schema_store(store)
            .with_active_fingerprint(Fingerprint::Id(id))
            .with_decoder_mode(DecoderMode::UnframedDatum)
            .build_decoder()
    }

    /// Decodes the records of `chunk`: rows (in record order) into `parts`, records that
    /// cannot be loaded into `bad`. Fails only when the registry stays unavailable until the
    /// loader stops (then nothing of the chunk may be committed).
    pub(crate) fn decode_rows(
        &self,
        chunk: &RawChunk,
        parts: &mut Vec<(RecordBatch, Vec<u32>)>,
        bad: &mut Vec<(u32, String)>,
    ) -> Result<(), Unavailable> {
        // Frame: each record's writer id (the body follows the 5-byte prefix).
        let mut framed: Vec<(u32, u32)> = Vec::with_capacity(chunk.len());
        for i in 0..chunk.len() as u32 {
            let Some(p) = chunk.payload(i as usize) else {
                bad.push((i, "null payload (tombstone)".into()));
                continue;
            };
            if !self.confluent {
                framed.push((i, RAW_ID));
                continue;
            }
            match p {
                [0, a, b, c, d, ..] => framed.push((i, u32::from_be_bytes([*a, *b, *c, *d]))),
                [m, ..] if *m != 0 => bad.push((
                    i,
                    format!("not in the Confluent wire format: magic byte {m:#04x}, expected 0x00"),
                )),
                _ => bad.push((
                    i,
                    format!(
                        "not in the Confluent wire format: {} bytes, shorter than the 5-byte prefix",
                        p.len()
                    ),
                )),
            }
        }
        let mut ids: Vec<u32> = framed.iter().map(|&(_, id)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.resolve(id)?;
        }

        let mut rows = Rows {
            chunk,
            skip: if self.confluent { 5 } else { 0 },
            records: Vec::with_capacity(framed.len()),
            at: Vec::with_capacity(framed.len()),
            lost: HashMap::new(),
            batches: Vec::new(),
            pending: HashMap::new(),
        };
        let mut writers = self.writers.borrow_mut();
        for (i, id) in framed {
            let Some(writer) = writers.get_mut(&id) else {
                bad.push((i, format!("schema id {id} was not looked up")));
                continue;
            };
            let Writer::Ready { schema, decoder } = writer else {
                if let Writer::Unusable { reason, .. } = writer {
                    bad.push((i, reason.clone()));
                }
                continue;
            };
            if decoder.batch_is_full() {
                rows.flush(id, decoder, &self.payload);
            }
            let body = rows.body(i);
            let reason = match decoder.decode(body) {
                Ok(n) if n == body.len() => {
                    let pos = rows.records.len();
                    rows.records.push(i);
                    rows.at.push(None);
                    rows.pending.entry(id).or_default().push(pos);
                    continue;
                }
                Ok(n) => format!(
                    "{} bytes past the end of the Avro datum (writer schema {id})",
                    body.len() - n
                ),
                Err(e) => format!("Avro datum does not decode (writer schema {id}): {e}"),
            };
            bad.push((i, reason));
            // The decoder may hold part of the bad datum: rebuild it and feed it again the
            // rows it held.
            match self.build(id, schema) {
                Ok(fresh) => {
                    **decoder = fresh;
                    rows.refeed(id, decoder);
                }
                Err(e) => {
                    let reason = format!("writer schema {id}: {e}");
                    rows.lose(id, &reason);
                    *writer = Writer::Unusable {
                        reason,
                        until: Instant::now() + MISSING_TTL,
                    };
                }
            }
        }
        for (id, w) in writers.iter_mut() {
            if let Writer::Ready { decoder, .. } = w {
                rows.flush(*id, decoder, &self.payload);
            }
        }
        drop(writers);
        rows.finish(parts, bad);
        Ok(())
    }

    /// Makes sure id `id` has a decoder or a reason its records are dead letters, waiting for an
    /// unavailable registry (until told to stop).
    fn resolve(&self, id: u32) -> Result<(), Unavailable> {
        match self.writers.borrow().get(&id) {
            Some(Writer::Ready { .. }) => return Ok(()),
            Some(Writer::Unusable { until, .. }) if Instant::now() < *until => return Ok(()),
            _ => {}
        }
        let Some(source) = &self.source else {
            return Ok(());
        };
        let mut wait = Duration::from_millis(200);
        let mut attempts = 0u32;
        let found = loop {
            match source.lookup(id) {
                Ok(found) => break found,
                Err(e) => {
                    attempts += 1;
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    tracing::warn!(
                        schema_id = id,
                        attempts,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %e,
                        "schema registry unavailable: decoding waits (nothing is skipped or committed past this record)"
                    );
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        if self.stop.load(Ordering::Relaxed) {
                            return Err(e);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        if attempts > 0 {
            tracing::info!(schema_id = id, attempts, "schema registry answered again");
        }
        let writer = match found {
            Lookup::Found(text) => {
                // Named as the reader first; as written if that does not resolve (a nested
                // type referred to by its full name, say).
                let renamed = AvroSchema::new(self.named_as_reader(text.clone()));
                let (schema, built) = match self.build(id, &renamed) {
                    Ok(d) => (renamed, Ok(d)),
                    Err(e) => {
                        let own = AvroSchema::new(text);
                        let built = self.build(id, &own).map_err(|_| e);
                        (own, built)
                    }
                };
                match built {
                    Ok(d) => Writer::Ready {
                        schema,
                        decoder: Box::new(d),
                    },
                    Err(e) => Writer::Unusable {
                        reason: format!(
                            "writer schema {id} does not resolve into the table's schema: {e}"
                        ),
                        until: Instant::now() + MISSING_TTL,
                    },
                }
            }
            Lookup::Missing(reason) => Writer::Unusable {
                reason: format!("unknown schema id {id}: {reason}"),
                until: Instant::now() + MISSING_TTL,
            },
        };
        if let Writer::Unusable { reason, .. } = &writer {
            tracing::warn!(schema_id = id, source = %source.describe(), "{reason}");
        }
        self.writers.borrow_mut().insert(id, writer);
        Ok(())
    }
}

impl AvroDecoder {
    /// The writer schema `text` with its top-level record named as the reader's: the job's
    /// record name names the table, and producers name theirs as they like (Avro resolution
    /// requires the names to match; nested named types still must).
    fn named_as_reader(&self, text: String) -> String {
        let Ok(mut w) = serde_json::from_str::<serde_json::Value>(&text) else {
            return text; // arrow-avro says what is wrong with it
        };
        let Some(o) = w
            .as_object_mut()
            .filter(|o| o.get("type") == Some(&"record".into()))
        else {
            return text;
        };
        let (name, namespace) = &self.reader_name;
        if o.get("name") == Some(name) && o.get("namespace") == namespace.as_ref() {
            return text;
        }
        // Nested named types without a namespace of their own now inherit the reader's, as
        // the reader's do: unqualified names that agree still match.
        o.insert("name".into(), name.clone());
        match namespace {
            Some(ns) => o.insert("namespace".into(), ns.clone()),
            None => o.remove("namespace"),
        };
        w.to_string()
    }
}

impl<'a> Rows<'a> {
    fn body(&self, i: u32) -> &'a [u8] {
        self.chunk
            .payload(i as usize)
            .map_or(&[][..], |p| &p[self.skip.min(p.len())..])
    }

    /// Flushes writer `id`'s decoder: its pending rows get their places.
    fn flush(&mut self, id: u32, dec: &mut Decoder, payload: &SchemaRef) {
        let pending = self.pending.remove(&id).unwrap_or_default();
        let flushed = dec
            .flush()
            .map_err(ArrowError::from)
            .and_then(|b| b.map(|b| conform(&b, payload)).transpose());
        match flushed {
            Ok(Some(batch)) if batch.num_rows() == pending.len() => {
                let b = self.batches.len();
                self.batches.push(batch);
                for (row, pos) in pending.into_iter().enumerate() {
                    self.at[pos] = Some((b, row));
                }
            }
            Ok(None) if pending.is_empty() => {}
            Ok(_) => {
                for pos in pending {
                    self.lost.insert(
                        pos,
                        format!("writer schema {id}: decoded row count mismatch"),
                    );
                }
            }
            Err(e) => {
                for pos in pending {
                    self.lost.insert(pos, format!("writer schema {id}: {e}"));
                }
            }
        }
    }

    /// Feeds a fresh decoder of writer `id` the rows its spoiled one held.
    fn refeed(&mut self, id: u32, dec: &mut Decoder) {
        let pending = self.pending.remove(&id).unwrap_or_default();
        let mut kept = Vec::with_capacity(pending.len());
        for pos in pending {
            let body = self.body(self.records[pos]);
            match dec.decode(body) {
                Ok(n) if n == body.len() => kept.push(pos),
                _ => {
                    self.lost
                        .insert(pos, format!("writer schema {id}: does not decode again"));
                }
            }
        }
        self.pending.insert(id, kept);
    }

    fn lose(&mut self, id: u32, reason: &str) {
        for pos in self.pending.remove(&id).unwrap_or_default() {
            self.lost.insert(pos, reason.to_string());
        }
    }

    /// The rows in record order as one part; records whose rows were lost become bad.
    fn finish(self, parts: &mut Vec<(RecordBatch, Vec<u32>)>, bad: &mut Vec<(u32, String)>) {
        let mut order = Vec::with_capacity(self.records.len());
        let mut kept = Vec::with_capacity(self.records.len());
        for (pos, at) in self.at.iter().enumerate() {
            match at {
                Some(at) => {
                    order.push(*at);
                    kept.push(self.records[pos]);
                }
                None => bad.push((
                    self.records[pos],
                    self.lost
                        .get(&pos)
                        .cloned()
                        .unwrap_or_else(|| "internal: row not flushed".into()),
                )),
            }
        }
        if kept.is_empty() {
            return;
        }
        let in_order =
            self.batches.len() == 1 && order.iter().enumerate().all(|(r, a)| *a == (0, r));
        let batch = if in_order {
            self.batches.into_iter().next().map(Ok)
        } else {
            let refs: Vec<&RecordBatch> = self.batches.iter().collect();
            Some(interleave_record_batch(&refs, &order))
        };
        match batch {
            Some(Ok(b)) => parts.push((b, kept)),
            Some(Err(e)) => bad.extend(kept.into_iter().map(|i| (i, format!("internal: {e}")))),
            None => {}
        }
    }
}

/// `batch` with arrow-avro's types turned into the table's payload types (enums are
/// dictionaries there, strings here; field metadata differs).
fn conform(batch: &RecordBatch, payload: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.num_columns() != payload.fields().len() {
        return Err(ArrowError::SchemaError(format!(
            "decoded {} columns, the schema has {}",
            batch.num_columns(),
            payload.fields().len()
        )));
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(payload.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => cast(c, f.data_type()),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(payload.clone(), columns)
}

#[cfg(test)]
mod tests;
