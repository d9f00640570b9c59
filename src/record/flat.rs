//! A fast path for the common case: every payload of a chunk is a flat JSON object whose
//! fields are strings or decimals of the schema.
//!
//! It reads each object once, straight into the column builders, and refuses a record at the
//! first thing it does not fully understand: an escape sequence, a control character, a nested
//! value, an unknown, duplicate or missing required field, a number where a string belongs, a
//! value that does not parse, anything after the object. Refused records take the general path
//! (arrow-json, with per-record isolation), so this path changes nothing but speed: what it accepts, it decodes exactly as arrow-json does (decimals go
//! through the same `parse_decimal`), which a differential property test checks.

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, RecordBatch, StringBuilder};
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::datatypes::{DataType, Decimal128Type, SchemaRef};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Utf8,
    Decimal128 { precision: u8, scale: i8 },
}

#[derive(Debug)]
struct Column {
    name: Vec<u8>,
    kind: Kind,
    nullable: bool,
}

/// Decodes chunks of flat records; see the module documentation.
#[derive(Debug)]
pub struct FlatDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Per column, the string bytes per 64 rows of the last chunk: builders are sized from it,
    /// so buffers are neither regrown nor left half empty (the buffer budget counts capacity).
    sizes: Vec<std::cell::Cell<usize>>,
}

enum Builder {
    Utf8(StringBuilder),
    Decimal(Decimal128Builder),
}

impl FlatDecoder {
    /// `None` when the schema has a field this path does not handle (it then never runs).
    pub fn new(schema: &SchemaRef) -> Option<Self> {
        if schema.fields().is_empty() || schema.fields().len() > 64 {
            return None;
        }
        let mut columns = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let kind = match f.data_type() {
                DataType::Utf8 => Kind::Utf8,
                DataType::Decimal128(precision, scale) => Kind::Decimal128 {
                    precision: *precision,
                    scale: *scale,
                },
                _ => return None,
            };
            columns.push(Column {
                name: f.name().as_bytes().to_vec(),
                kind,
                nullable: f.is_nullable(),
            });
        }
        Some(FlatDecoder {
            schema: schema.clone(),
            sizes: columns.iter().map(|_| std::cell::Cell::new(0)).collect(),
            columns,
        })
    }

    /// Decodes records from the first of `payloads` up to the first one this path refuses:
    /// their batch (`None` if none) and how many it holds. `whole` says the payloads are a
    /// whole chunk (builders are then sized for all of them and the size hints learnt).
    pub fn decode_prefix<'a>(
        &self,
        payloads: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
        bytes: usize,
        whole: bool,
    ) -> (Option<RecordBatch>, usize) {
        let rows = if whole {
            payloads.len()
        } else {
            payloads.len().min(256)
        };
        let unknown = bytes / payloads.len().max(1) / self.columns.len() * 64;
        let mut builders: Vec<Builder> = self
            .columns
            .iter()
            .zip(&self.sizes)
            .map(|(c, size)| match c.kind {
                Kind::Utf8 => {
                    let per_64 = match size.get() {
                        0 => unknown,
                        n => n + n / 8,
                    };
                    Builder::Utf8(StringBuilder::with_capacity(rows, rows * per_64 / 64 + 64))
                }
                Kind::Decimal128 { .. } => Builder::Decimal(Decimal128Builder::with_capacity(rows)),
            })
            .collect();
        let total = payloads.len();
        let mut decoded = 0;
        for payload in payloads {
            // Valid UTF-8 once for the whole payload: every string between two quotes (ASCII)
            // is then valid too.
            let Some(text) = payload.and_then(|p| std::str::from_utf8(p).ok()) else {
                break;
            };
            // A refused record may have appended to some columns: they are cut back to the
            // records decoded when the arrays are made.
            if self.record(text, &mut builders).is_none() {
                break;
            }
            decoded += 1;
        }
        if decoded == 0 {
            return (None, 0);
        }
        if whole && decoded == total {
            for (b, size) in builders.iter().zip(&self.sizes) {
                if let Builder::Utf8(b) = b {
                    size.set((b.values_slice().len() * 64).div_ceil(decoded));
                }
            }
        }
        match self.finish(builders, decoded) {
            Some(batch) => (Some(batch), decoded),
            None => (None, 0),
        }
    }

    /// The batch of the first `rows` records appended.
    fn finish(&self, builders: Vec<Builder>, rows: usize) -> Option<RecordBatch> {
        let arrays: Vec<ArrayRef> = builders
            .into_iter()
            .zip(&self.columns)
            .map(|(b, c)| -> Option<ArrayRef> {
                let a: ArrayRef = match (b, c.kind) {
                    (Builder::Utf8(mut b), _) => Arc::new(b.finish()),
                    (Builder::Decimal(mut b), Kind::Decimal128 { precision, scale }) => {
                        Arc::new(b.finish().with_precision_and_scale(precision, scale).ok()?)
                    }
                    (Builder::Decimal(_), Kind::Utf8) => return None,
                };
                Some(if a.len() == rows { a } else { a.slice(0, rows) })
            })
            .collect::<Option<_>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays).ok()
    }

    /// Appends one record to every column, or `None` if this path refuses it.
    fn record(&self, text: &str, builders: &mut [Builder]) -> Option<()> {
        let p = text.as_bytes();
        let mut seen = 0u64;
        let mut i = ws(p, 0);
        if p.get(i) != Some(&b'{') {
            return None;
        }
        i = ws(p, i + 1);
        let mut guess = 0usize;
        if p.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (key, after) = string(p, i)?;
                let f = self.field(&p[key], guess)?;
                if seen & (1 << f) != 0 {
                    return None;
                }
                seen |= 1 << f;
                guess = f + 1;
                i = ws(p, after);
                if p.get(i) != Some(&b':') {
                    return None;
                }
                i = ws(p, i + 1);
                i = self.value(text, i, f, &mut builders[f])?;
                i = ws(p, i);
                match p.get(i) {
                    Some(b',') => i = ws(p, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if ws(p, i) != p.len() {
            return None;
        }
        // Absent fields are nulls, where nulls are allowed.
        for (f, c) in self.columns.iter().enumerate() {
            if seen & (1 << f) == 0 {
                if !c.nullable {
                    return None;
                }
                append_null(&mut builders[f]);
            }
        }
        Some(())
    }

    /// The field named `key`: fields usually come in schema order, so `guess` is tried first.
    fn field(&self, key: &[u8], guess: usize) -> Option<usize> {
        if self.columns.get(guess).is_some_and(|c| c.name == key) {
            return Some(guess);
        }
        self.columns.iter().position(|c| c.name == key)
    }

    /// Reads the value at `i` into column `f`; returns the position after it.
    fn value(&self, text: &str, i: usize, f: usize, b: &mut Builder) -> Option<usize> {
        let p = text.as_bytes();
        let c = &self.columns[f];
        match (p.get(i)?, b) {
            (b'n', b) => {
                if !c.nullable || p.get(i..i + 4) != Some(b"null") {
                    return None;
                }
                append_null(b);
                Some(i + 4)
            }
            (b'"', Builder::Utf8(b)) => {
                let (s, after) = string(p, i)?;
                b.append_value(text.get(s)?);
                Some(after)
            }
            (b'"', Builder::Decimal(b)) => {
                let (s, after) = string(p, i)?;
                b.append_value(decimal(text.get(s)?, c.kind)?);
                Some(after)
            }
            (b'-' | b'0'..=b'9', Builder::Decimal(b)) => {
                let end = number(p, i)?;
                b.append_value(decimal(text.get(i..end)?, c.kind)?);
                Some(end)
            }
            _ => None,
        }
    }
}

fn append_null(b: &mut Builder) {
    match b {
        Builder::Utf8(b) => b.append_null(),
        Builder::Decimal(b) => b.append_null(),
    }
}

fn decimal(text: &str, kind: Kind) -> Option<i128> {
    match kind {
        Kind::Decimal128 { precision, scale } => {
            parse_decimal::<Decimal128Type>(text, precision, scale).ok()
        }
        Kind::Utf8 => None,
    }
}

/// Skips JSON whitespace.
fn ws(p: &[u8], mut i: usize) -> usize {
    while matches!(p.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string at `i` (its opening quote) without escapes or control characters: the range of
/// its bytes and the position after its closing quote. (Strings here are short: one scalar
/// pass beats setting up a vector search.)
fn string(p: &[u8], i: usize) -> Option<(std::ops::Range<usize>, usize)> {
    if p.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let len = p
        .get(start..)?
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    let end = start + len;
    // A backslash (an escape: the general path unescapes) or a control character: give up.
    (p[end] == b'"').then_some((start..end, end + 1))
}

/// A JSON number at `i` (strict grammar): the position after it.
fn number(p: &[u8], mut i: usize) -> Option<usize> {
    let digits = |p: &[u8], mut i: usize| {
        let start = i;
        while matches!(p.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if p.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match p.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(p, i)?,
        _ => return None,
    };
    if p.get(i) == Some(&b'.') {
        i = digits(p, i + 1)?;
    }
    if matches!(p.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(p.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(p, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::config::EventTime;
    use crate::record::decode::{ChunkDecoder, RawChunk};
    use crate::record::schema::TableSchema;
    use crate::record::schema::TimeFormat;

    fn decoders() -> (ChunkDecoder, ChunkDecoder) {
        let schema = TableSchema::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/payment.avsc"
        )))
        .unwrap();
        let time = EventTime::Field {
            name: "created_at".into(),
            format: TimeFormat::Rfc3339,
        };
        let fast = ChunkDecoder::new(schema.clone(), time.clone());
        let slow = ChunkDecoder::new(schema, time).without_fast_path();
        (fast, slow)
    }

    /// Values of every kind the fast path must either decode as arrow-json does, or refuse.
    const ODD: &[&str] = &[
        "null",
        "\"\"",
        "\"a\\\"b\"",
        "\"\\u00e9\\n\"",
        "\"é日本\"",
        "\"tab\there\"",
        "\"\u{7f}\"",
        "12.5",
        "-0.25",
        "0",
        "1e2",
        "-1.5E-1",
        "01",
        "1.",
        "-",
        "99999999999999999999.99",
        "\"3.14\"",
        "\"1.2.3\"",
        "\" 7\"",
        "true",
        "{}",
        "[1]",
        "\"x",
    ];

    /// A payment-like record: mostly well-formed values, some odd ones, missing, extra,
    /// duplicated or reordered fields, and whitespace, chosen by `seed`.
    fn record(seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut next = move |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let good = |f: &str, n: u64| -> String {
            match f {
                "amount" => ["\"12.34\"", "7", "\"0.5\"", "1234.5"][n as usize % 4].into(),
                "status" => ["\"CAPTURED\"", "\"DECLINED\"", "\"captured\""][n as usize % 3].into(),
                "method" => ["\"card\"", "\"wallet\""][n as usize % 2].into(),
                "created_at" => [
                    "\"2026-11-24T13:05:00Z\"",
                    "\"2026-11-24T13:05:00.123+01:00\"",
                    "\"yesterday\"",
                ][n as usize % 3]
                    .into(),
                _ => format!("\"{f}-{n}\""),
            }
        };
        let mut fields: Vec<String> = [
            "event_id",
            "payment_id",
            "merchant_id",
            "customer_id",
            "amount",
            "currency",
            "status",
            "method",
            "country",
            "created_at",
        ]
        .iter()
        .filter_map(|f| {
            let value = match next(20) {
                0 => return None,
                1 => ODD[next(ODD.len() as u64) as usize].to_string(),
                _ => good(f, next(1000)),
            };
            Some(format!("\"{f}\":{value}"))
        })
        .collect();
        match next(12) {
            0 => fields.push("\"extra\":1".into()),
            1 if !fields.is_empty() => fields.push(fields[0].clone()),
            2 if fields.len() > 1 => fields.swap(0, 1),
            _ => {}
        }
        let sep = if next(5) == 0 { " ,\n " } else { "," };
        let text = format!("{{{}}}", fields.join(sep));
        match next(30) {
            0 => format!(" {text}\t").into_bytes(),
            1 => format!("{text}{text}").into_bytes(),
            2 => text.as_bytes()[..text.len() / 2].to_vec(),
            3 => b"[]".to_vec(),
            _ => text.into_bytes(),
        }
    }

    proptest! {
        /// The fast path changes nothing but speed: rows, event times and dead letters are the
        /// general path's, for clean chunks and for chunks with every kind of oddity.
        #[test]
        fn fast_path_decodes_as_arrow_json_does(seeds in proptest::collection::vec(any::<u64>(), 1..60), clean in any::<bool>()) {
            let (fast, slow) = decoders();
            let mut chunk = RawChunk::default();
            for (o, seed) in seeds.iter().enumerate() {
                // A clean chunk keeps only the records the general path accepts.
                let payload = record(*seed);
                let mut one = RawChunk::default();
                one.push(0, None, None, Some(&payload));
                if clean && !slow.decode(&one, "t", 0).dead.is_empty() {
                    continue;
                }
                chunk.push(o as i64, Some(1_000), None, Some(&payload));
            }
            let a = fast.decode(&chunk, "t", 0);
            let b = slow.decode(&chunk, "t", 0);
            prop_assert_eq!(&a.batch, &b.batch);
            prop_assert_eq!(&a.event_ms, &b.event_ms);
            prop_assert_eq!(&a.dead, &b.dead);
        }
    }

    /// Record by record: whatever the fast path accepts, arrow-json accepts too and decodes to
    /// the same row (and it accepts most well-formed records, odd ones included).
    #[test]
    fn every_record_the_fast_path_accepts_decodes_the_same() {
        let (fast, slow) = decoders();
        let mut accepted = 0;
        for seed in 0..3000u64 {
            let payload = record(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut one = RawChunk::default();
            one.push(0, Some(1_000), None, Some(&payload));
            let Some(flat) = fast.flat.as_ref() else {
                panic!("the payment schema is flat");
            };
            let (_, taken) = flat.decode_prefix(
                std::iter::once(Some(payload.as_slice())),
                payload.len(),
                true,
            );
            if taken == 0 {
                continue;
            }
            accepted += 1;
            let (a, b) = (fast.decode(&one, "t", 0), slow.decode(&one, "t", 0));
            let text = String::from_utf8_lossy(&payload);
            assert_eq!(a.batch, b.batch, "{text}");
            assert_eq!(a.dead, b.dead, "{text}");
            assert_eq!(a.event_ms, b.event_ms, "{text}");
        }
        assert!(
            accepted > 1000,
            "the fast path took only {accepted} of 3000"
        );
    }

    #[test]
    fn clean_payment_events_take_the_fast_path() {
        let schema = TableSchema::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/payment.avsc"
        )))
        .unwrap();
        let flat = super::FlatDecoder::new(&schema.payload).expect("a flat schema");
        let mut payloads = Vec::new();
        crate::ops::generate::generate(
            &crate::ops::generate::GenSpec {
                count: 500,
                ..Default::default()
            },
            |r| payloads.push(r.payload),
        );
        let bytes = payloads.iter().map(Vec::len).sum();
        let (batch, taken) =
            flat.decode_prefix(payloads.iter().map(|p| Some(p.as_slice())), bytes, true);
        assert_eq!(taken, 500, "generated events are plain flat objects");
        assert_eq!(batch.map(|b| b.num_rows()), Some(500));
        // The fast path stops at a record with an escape: the general path takes that one.
        payloads[250] = br#"{"event_id":"a\"b"}"#.to_vec();
        let (batch, taken) =
            flat.decode_prefix(payloads.iter().map(|p| Some(p.as_slice())), bytes, true);
        assert_eq!(taken, 250);
        assert_eq!(batch.map(|b| b.num_rows()), Some(250));
    }
}
