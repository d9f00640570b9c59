//! A fast path for the common case: every payload of a chunk is a JSON object whose values are
//! plain strings, numbers, booleans, nulls, nested objects and arrays of the schema, and
//! timestamps and dates (strings parsed as arrow-json parses them, or integer literals).
//!
//! It reads each object once, straight into the column builders, and refuses a record at the
//! first thing it does not fully understand: an escape sequence, a control character, an
//! unknown, duplicate or missing required field, a string where a number belongs (or the
//! reverse), an integer written with a fraction or an exponent, a number out of its type's
//! range, anything after the object. Refused records take the general path (arrow-json, with
//! per-record isolation), so this path changes nothing but speed: what it accepts, it decodes
//! exactly as arrow-json does (decimals through the same `parse_decimal`, floats correctly
//! rounded as arrow-json's parser rounds them), which differential property tests check on two
//! shapes (flat strings and decimals; numbers, booleans, a nullable nested record, an array),
//! and on timestamps and dates.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::timezone::Tz;
use arrow::array::ArrayBuilder;
use arrow::array::{make_array, Array, Date32Builder};
use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, Int8Builder, ListArray, RecordBatch, StringBuilder, StructArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::compute::kernels::cast_utils::{parse_decimal, string_to_datetime, Parser};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, FieldRef, Fields, SchemaRef, TimeUnit,
};

/// Fields per object this path handles (a bit each in a mask).
const MAX_FIELDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Utf8,
    Decimal128 {
        precision: u8,
        scale: i8,
    },
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    /// Days since the epoch (Avro `date`): `YYYY-MM-DD` strings as arrow-json parses them.
    Date32,
}

#[derive(Debug)]
enum Kind {
    Scalar(Scalar),
    Struct {
        columns: Vec<Column>,
        fields: Fields,
    },
    List {
        item: Box<Column>,
        field: FieldRef,
    },
    /// A timestamp: strings parsed as arrow-json parses them (`string_to_datetime` in the
    /// column's time zone), integer literals taken as they are, in `unit`.
    Timestamp {
        unit: TimeUnit,
        tz: Tz,
        data_type: DataType,
    },
}

#[derive(Debug)]
struct Column {
    name: Vec<u8>,
    kind: Kind,
    nullable: bool,
}

impl Column {
    /// `None` for a type this path does not handle.
    fn new(name: &str, dt: &DataType, nullable: bool) -> Option<Self> {
        let kind = match dt {
            DataType::Utf8 => Kind::Scalar(Scalar::Utf8),
            DataType::Decimal128(precision, scale) => Kind::Scalar(Scalar::Decimal128 {
                precision: *precision,
                scale: *scale,
            }),
            DataType::Int8 => Kind::Scalar(Scalar::Int8),
            DataType::Int16 => Kind::Scalar(Scalar::Int16),
            DataType::Int32 => Kind::Scalar(Scalar::Int32),
            DataType::Int64 => Kind::Scalar(Scalar::Int64),
            DataType::Float32 => Kind::Scalar(Scalar::Float32),
            DataType::Float64 => Kind::Scalar(Scalar::Float64),
            DataType::Boolean => Kind::Scalar(Scalar::Boolean),
            DataType::Date32 => Kind::Scalar(Scalar::Date32),
            DataType::Timestamp(unit, tz) => Kind::Timestamp {
                unit: *unit,
                // arrow-json reads a timestamp without a zone as UTC.
                tz: tz.as_deref().unwrap_or("+00:00").parse().ok()?,
                data_type: dt.clone(),
            },
            DataType::Struct(fields) => Kind::Struct {
                columns: object_columns(fields)?,
                fields: fields.clone(),
            },
            DataType::List(item) => Kind::List {
                item: Box::new(Column::new(
                    item.name(),
                    item.data_type(),
                    item.is_nullable(),
                )?),
                field: item.clone(),
            },
            _ => return None,
        };
        Some(Column {
            name: name.as_bytes().to_vec(),
            kind,
            nullable,
        })
    }

    fn builder(&self, rows: usize, string_bytes: usize) -> Builder {
        match &self.kind {
            Kind::Scalar(s) => match s {
                Scalar::Utf8 => Builder::Utf8(StringBuilder::with_capacity(rows, string_bytes)),
                Scalar::Decimal128 { .. } => {
                    Builder::Decimal(Decimal128Builder::with_capacity(rows))
                }
                Scalar::Int8 => Builder::I8(Int8Builder::with_capacity(rows)),
                Scalar::Int16 => Builder::I16(Int16Builder::with_capacity(rows)),
                Scalar::Int32 => Builder::I32(Int32Builder::with_capacity(rows)),
                Scalar::Int64 => Builder::I64(Int64Builder::with_capacity(rows)),
                Scalar::Float32 => Builder::F32(Float32Builder::with_capacity(rows)),
                Scalar::Float64 => Builder::F64(Float64Builder::with_capacity(rows)),
                Scalar::Boolean => Builder::Bool(BooleanBuilder::with_capacity(rows)),
                Scalar::Date32 => Builder::Date(Date32Builder::with_capacity(rows)),
            },
            Kind::Timestamp { .. } => Builder::Ts(Int64Builder::with_capacity(rows)),
            Kind::Struct { columns, .. } => Builder::Struct {
                children: columns.iter().map(|c| c.builder(rows, 16 * rows)).collect(),
                nulls: NullBufferBuilder::new(rows),
            },
            Kind::List { item, .. } => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Builder::List {
                    offsets,
                    nulls: NullBufferBuilder::new(rows),
                    item: Box::new(item.builder(2 * rows, 32 * rows)),
                }
            }
        }
    }
}

/// The columns of an object's fields; `None` if any is of a type this path does not handle.
fn object_columns(fields: &Fields) -> Option<Vec<Column>> {
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        return None;
    }
    fields
        .iter()
        .map(|f| Column::new(f.name(), f.data_type(), f.is_nullable()))
        .collect()
}

/// Decodes chunks of plain records; see the module documentation.
#[derive(Debug)]
pub struct FlatDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Per top-level column, the string bytes per 64 rows of the last chunk: builders are sized
    /// from it, so buffers are neither regrown nor left half empty (the buffer budget counts
    /// capacity).
    sizes: Vec<std::cell::Cell<usize>>,
}

enum Builder {
    Utf8(StringBuilder),
    Decimal(Decimal128Builder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    /// A timestamp's values, typed at `finish`.
    Ts(Int64Builder),
    Struct {
        children: Vec<Builder>,
        nulls: NullBufferBuilder,
    },
    List {
        /// One more than the lists appended: the item builder's length after each.
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        item: Box<Builder>,
    },
}

impl Builder {
    /// Appends a null (to every child of an object, as arrow-json does).
    fn append_null(&mut self) {
        match self {
            Builder::Utf8(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Struct { children, nulls } => {
                children.iter_mut().for_each(Builder::append_null);
                nulls.append_null();
            }
            Builder::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Utf8(b) => b.len(),
            Builder::Decimal(b) => b.len(),
            Builder::I8(b) => b.len(),
            Builder::I16(b) => b.len(),
            Builder::I32(b) => b.len(),
            Builder::I64(b) => b.len(),
            Builder::F32(b) => b.len(),
            Builder::F64(b) => b.len(),
            Builder::Bool(b) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Ts(b) => b.len(),
            Builder::Struct { nulls, .. } | Builder::List { nulls, .. } => nulls.len(),
        }
    }

    /// The array of the first `len` values appended (a refused record may have appended more
    /// to some builders: they are cut back here). `None` if the builder holds fewer.
    fn finish(self, column: &Column, len: usize) -> Option<ArrayRef> {
        let cut = |a: ArrayRef| match a.len() {
            n if n == len => Some(a),
            n if n > len => Some(a.slice(0, len)),
            _ => None,
        };
        let nulls_of = |mut nulls: NullBufferBuilder| {
            if nulls.len() < len {
                return None;
            }
            Some(nulls.finish().map(|n| n.slice(0, len)))
        };
        match (self, &column.kind) {
            (Builder::Utf8(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::Decimal(mut b), Kind::Scalar(Scalar::Decimal128 { precision, scale })) => {
                cut(Arc::new(
                    b.finish()
                        .with_precision_and_scale(*precision, *scale)
                        .ok()?,
                ))
            }
            (Builder::Decimal(_), _) => None,
            (Builder::I8(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::I16(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::I32(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::I64(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::F32(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::F64(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::Bool(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::Date(mut b), _) => cut(Arc::new(b.finish())),
            (Builder::Ts(mut b), Kind::Timestamp { data_type, .. }) => {
                let data = b
                    .finish()
                    .into_data()
                    .into_builder()
                    .data_type(data_type.clone())
                    .build()
                    .ok()?;
                cut(make_array(data))
            }
            (Builder::Ts(_), _) => None,
            (Builder::Struct { children, nulls }, Kind::Struct { columns, fields }) => {
                let arrays = children
                    .into_iter()
                    .zip(columns)
                    .map(|(b, c)| b.finish(c, len))
                    .collect::<Option<Vec<_>>>()?;
                let nulls = nulls_of(nulls)?;
                Some(Arc::new(
                    StructArray::try_new(fields.clone(), arrays, nulls).ok()?,
                ))
            }
            (
                Builder::List {
                    offsets,
                    nulls,
                    item,
                },
                Kind::List { item: c, field },
            ) => {
                let offsets = offsets.get(..=len)?;
                let items = usize::try_from(*offsets.last()?).ok()?;
                let values = item.finish(c, items)?;
                let nulls = nulls_of(nulls)?;
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets.to_vec()));
                Some(Arc::new(
                    ListArray::try_new(field.clone(), offsets, values, nulls).ok()?,
                ))
            }
            _ => None,
        }
    }
}

impl FlatDecoder {
    /// `None` when the schema has a field this path does not handle (it then never runs).
    pub fn new(schema: &SchemaRef) -> Option<Self> {
        let columns = object_columns(schema.fields())?;
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
            .map(|(c, size)| {
                let per_64 = match size.get() {
                    0 => unknown,
                    n => n + n / 8,
                };
                let string_bytes = match c.kind {
                    Kind::Scalar(Scalar::Utf8) => rows * per_64 / 64 + 64,
                    _ => 0,
                };
                c.builder(rows, string_bytes)
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
            .map(|(b, c)| b.finish(c, rows))
            .collect::<Option<_>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays).ok()
    }

    /// Appends one record to every column, or `None` if this path refuses it.
    fn record(&self, text: &str, builders: &mut [Builder]) -> Option<()> {
        let p = text.as_bytes();
        let i = object(text, ws(p, 0), &self.columns, builders)?;
        (ws(p, i) == p.len()).then_some(())
    }
}

/// Reads the object at `i` into `builders` (one per column of `columns`): every field of it,
/// nulls for the absent nullable ones. Returns the position after it.
fn object(text: &str, mut i: usize, columns: &[Column], builders: &mut [Builder]) -> Option<usize> {
    let p = text.as_bytes();
    if p.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(p, i + 1);
    let mut seen = 0u64;
    let mut guess = 0usize;
    if p.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, after) = string(p, i)?;
            let f = field(columns, &p[key], guess)?;
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
            i = value(text, i, &columns[f], &mut builders[f])?;
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
    // Absent fields are nulls, where nulls are allowed.
    for (f, c) in columns.iter().enumerate() {
        if seen & (1 << f) == 0 {
            if !c.nullable {
                return None;
            }
            builders[f].append_null();
        }
    }
    Some(i)
}

/// The field named `key`: fields usually come in schema order, so `guess` is tried first.
fn field(columns: &[Column], key: &[u8], guess: usize) -> Option<usize> {
    if columns.get(guess).is_some_and(|c| same(&c.name, key)) {
        return Some(guess);
    }
    columns.iter().position(|c| same(&c.name, key))
}

/// `a == b` for short names, eight bytes at a time (a `memcmp` call per field cost more than
/// the comparison).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in a8.by_ref().zip(b8.by_ref()) {
        let word = |c: &[u8]| c.iter().fold(0u64, |w, &v| (w << 8) | u64::from(v));
        if word(x) != word(y) {
            return false;
        }
    }
    a8.remainder()
        .iter()
        .zip(b8.remainder())
        .all(|(x, y)| x == y)
}

/// Reads the value at `i` into `b` (the builder of column `c`); returns the position after it.
fn value(text: &str, i: usize, c: &Column, b: &mut Builder) -> Option<usize> {
    let p = text.as_bytes();
    let first = *p.get(i)?;
    if first == b'n' {
        if !c.nullable || p.get(i..i + 4) != Some(b"null") {
            return None;
        }
        b.append_null();
        return Some(i + 4);
    }
    match (first, b) {
        (b'"', Builder::Utf8(b)) => {
            let (s, after) = string(p, i)?;
            b.append_value(text.get(s)?);
            Some(after)
        }
        (b'"', Builder::Decimal(b)) => {
            let (s, after) = string(p, i)?;
            b.append_value(decimal(text.get(s)?, &c.kind)?);
            Some(after)
        }
        (b'-' | b'0'..=b'9', Builder::Decimal(b)) => {
            let end = number(p, i)?;
            b.append_value(decimal(text.get(i..end)?, &c.kind)?);
            Some(end)
        }
        (b'"', Builder::Ts(b)) => {
            let Kind::Timestamp { unit, tz, .. } = &c.kind else {
                return None;
            };
            let (s, after) = string(p, i)?;
            let t = string_to_datetime(tz, text.get(s)?).ok()?;
            b.append_value(match unit {
                TimeUnit::Second => t.timestamp(),
                TimeUnit::Millisecond => t.timestamp_millis(),
                TimeUnit::Microsecond => t.timestamp_micros(),
                TimeUnit::Nanosecond => t.timestamp_nanos_opt()?,
            });
            Some(after)
        }
        (b'"', Builder::Date(b)) => {
            let (s, after) = string(p, i)?;
            b.append_value(Date32Type::parse(text.get(s)?)?);
            Some(after)
        }
        (b'-' | b'0'..=b'9', b) => numeric(text, i, b),
        (b't' | b'f', Builder::Bool(b)) => {
            if p.get(i..i + 4) == Some(b"true") {
                b.append_value(true);
                Some(i + 4)
            } else if p.get(i..i + 5) == Some(b"false") {
                b.append_value(false);
                Some(i + 5)
            } else {
                None
            }
        }
        (b'{', Builder::Struct { children, nulls }) => {
            let Kind::Struct { columns, .. } = &c.kind else {
                return None;
            };
            let end = object(text, i, columns, children)?;
            nulls.append_non_null();
            Some(end)
        }
        (
            b'[',
            Builder::List {
                offsets,
                nulls,
                item,
            },
        ) => {
            let Kind::List { item: ic, .. } = &c.kind else {
                return None;
            };
            let mut i = ws(p, i + 1);
            if p.get(i) == Some(&b']') {
                i += 1;
            } else {
                loop {
                    i = value(text, i, ic, item)?;
                    i = ws(p, i);
                    match p.get(i) {
                        Some(b',') => i = ws(p, i + 1),
                        Some(b']') => {
                            i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            offsets.push(i32::try_from(item.len()).ok()?);
            nulls.append_non_null();
            Some(i)
        }
        _ => None,
    }
}

/// An integer or float at `i` into an integer or float builder. Integers take plain integer
/// literals in their type's range only (arrow-json reads `1.5` or `1e3` as floats and
/// truncates: those records take the general path); floats are correctly rounded and finite.
fn numeric(text: &str, i: usize, b: &mut Builder) -> Option<usize> {
    let p = text.as_bytes();
    let end = number(p, i)?;
    let s = text.get(i..end)?;
    let integer = || -> Option<i64> {
        if s.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
            return None;
        }
        s.parse::<i64>().ok()
    };
    match b {
        Builder::I8(b) => b.append_value(i8::try_from(integer()?).ok()?),
        Builder::I16(b) => b.append_value(i16::try_from(integer()?).ok()?),
        Builder::I32(b) => b.append_value(i32::try_from(integer()?).ok()?),
        Builder::I64(b) | Builder::Ts(b) => b.append_value(integer()?),
        Builder::Date(b) => b.append_value(i32::try_from(integer()?).ok()?),
        Builder::F32(b) => b.append_value(s.parse::<f32>().ok().filter(|v| v.is_finite())?),
        Builder::F64(b) => b.append_value(s.parse::<f64>().ok().filter(|v| v.is_finite())?),
        _ => return None,
    }
    Some(end)
}

fn decimal(text: &str, kind: &Kind) -> Option<i128> {
    match kind {
        Kind::Scalar(Scalar::Decimal128 { precision, scale }) => {
            parse_decimal::<Decimal128Type>(text, *precision, *scale).ok()
        }
        _ => None,
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

    use crate::record::decode::{ChunkDecoder, RawChunk};
    use crate::record::options::EventTime;
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

    /// One chunk of `payloads` decoded by both paths; a `clean` chunk keeps only the records
    /// the general path accepts.
    fn both_paths(
        fast: &ChunkDecoder,
        slow: &ChunkDecoder,
        payloads: impl Iterator<Item = Vec<u8>>,
        clean: bool,
    ) -> (
        crate::record::decode::Decoded,
        crate::record::decode::Decoded,
    ) {
        let mut chunk = RawChunk::default();
        for (o, payload) in payloads.enumerate() {
            let mut one = RawChunk::default();
            one.push(0, None, None, Some(&payload));
            if clean && !slow.decode(&one, "t", 0).dead.is_empty() {
                continue;
            }
            chunk.push(o as i64, Some(1_000), None, Some(&payload));
        }
        (fast.decode(&chunk, "t", 0), slow.decode(&chunk, "t", 0))
    }

    /// Both paths made the same rows, event times and dead letters.
    fn agree(
        a: &crate::record::decode::Decoded,
        b: &crate::record::decode::Decoded,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(&a.batch, &b.batch);
        prop_assert_eq!(&a.event_ms, &b.event_ms);
        prop_assert_eq!(&a.dead, &b.dead);
        Ok(())
    }

    proptest! {
        /// The fast path changes nothing but speed: rows, event times and dead letters are the
        /// general path's, for clean chunks and for chunks with every kind of oddity.
        #[test]
        fn fast_path_decodes_as_arrow_json_does(seeds in proptest::collection::vec(any::<u64>(), 1..60), clean in any::<bool>()) {
            let (fast, slow) = decoders();
            let (a, b) = both_paths(&fast, &slow, seeds.iter().map(|s| record(*s)), clean);
            agree(&a, &b)?;
        }
    }

    /// Found by `make fuzz`: a payload with something after its object was named differently
    /// by the two paths (the general path's decoder said "more than one value" or "invalid
    /// JSON" depending on how many records it had room for).
    #[test]
    fn a_bad_payload_is_named_alike_whatever_else_the_chunk_holds() {
        let (fast, slow) = decoders();
        // The fuzzer's input: a schema byte (0: payments), then payloads split on 0x1E.
        let input = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/json_paths/regression-trailing-garbage-reason"
        ));
        let chunk = input[1..].split(|&b| b == 0x1e).map(<[u8]>::to_vec);
        let (a, b) = both_paths(&fast, &slow, chunk, false);
        assert_eq!(a.dead.len(), 2);
        assert_eq!(a.dead, b.dead);
        assert_eq!(a.batch, b.batch);
    }

    /// Record by record: whatever the fast path accepts, arrow-json accepts too and decodes to
    /// the same row (and it accepts most well-formed records, odd ones included).
    #[test]
    fn every_record_the_fast_path_accepts_decodes_the_same() {
        let (fast, slow) = decoders();
        let (accepted, _) = record_by_record(&fast, &slow, 3000, record);
        assert!(
            accepted > 1000,
            "the fast path took only {accepted} of 3000"
        );
    }

    /// Decodes `n` records made by `make`, one at a time, by both paths; asserts that each one
    /// the fast path accepts decodes as arrow-json decodes it. Returns how many the fast path
    /// accepted and how many arrow-json accepted.
    fn record_by_record(
        fast: &ChunkDecoder,
        slow: &ChunkDecoder,
        n: u64,
        make: fn(u64) -> Vec<u8>,
    ) -> (usize, usize) {
        let Some(flat) = fast.flat.as_ref() else {
            panic!("the schema takes the fast path");
        };
        let (mut accepted, mut valid) = (0, 0);
        for seed in 0..n {
            let payload = make(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut one = RawChunk::default();
            one.push(0, Some(1_000), None, Some(&payload));
            let b = slow.decode(&one, "t", 0);
            valid += usize::from(b.dead.is_empty());
            let (_, taken) = flat.decode_prefix(
                std::iter::once(Some(payload.as_slice())),
                payload.len(),
                true,
            );
            if taken == 0 {
                continue;
            }
            accepted += 1;
            let a = fast.decode(&one, "t", 0);
            let text = String::from_utf8_lossy(&payload);
            assert_eq!(a.batch, b.batch, "{text}");
            assert_eq!(a.dead, b.dead, "{text}");
            assert_eq!(a.event_ms, b.event_ms, "{text}");
        }
        (accepted, valid)
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

    /// The bench's second shape: numbers, a boolean, a nullable nested record, an array.
    fn sensor_decoders() -> (ChunkDecoder, ChunkDecoder) {
        let schema = TableSchema::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/shapes/sensor.avsc"
        )))
        .unwrap();
        let time = EventTime::Field {
            name: "measured_at".into(),
            format: TimeFormat::EpochMillis,
        };
        let fast = ChunkDecoder::new(schema.clone(), time.clone());
        assert!(fast.flat.is_some(), "the sensor shape takes the fast path");
        let slow = ChunkDecoder::new(schema, time).without_fast_path();
        (fast, slow)
    }

    /// Numbers and other values an integer, float or boolean field may meet.
    const ODD_NUMBERS: &[&str] = &[
        "null",
        "0",
        "-0",
        "1.5",
        "-2.0",
        "1e3",
        "2E-2",
        "12345678901",
        "-2147483649",
        "2147483647",
        "9223372036854775807",
        "9223372036854775808",
        "1e400",
        "0.1",
        "3.4028236e38",
        "1.17549435e-38",
        "123456789.123456789",
        "\"7\"",
        "true",
        "false",
        "tru",
        "[]",
        "{}",
        "-",
        "01",
    ];

    /// A sensor-like record, mostly well formed, with odd values, odd nesting, missing, extra,
    /// duplicated and reordered fields, chosen by `seed`.
    fn sensor_record(seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut next = move |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let odd = |next: &mut dyn FnMut(u64) -> u64| {
            if next(3) == 0 {
                ODD[next(ODD.len() as u64) as usize].to_string()
            } else {
                ODD_NUMBERS[next(ODD_NUMBERS.len() as u64) as usize].to_string()
            }
        };
        let mut fields: Vec<String> = Vec::new();
        for f in [
            "reading_id",
            "device_id",
            "seq",
            "temperature",
            "humidity",
            "battery",
            "ok",
            "firmware",
            "tags",
            "measured_at",
        ] {
            let n = next(1000);
            let value = match next(48) {
                0 => continue,
                1 => odd(&mut next),
                _ => match f {
                    "reading_id" => format!("\"rd_{n}\""),
                    "device_id" => format!("{}", 100_000 + n),
                    "seq" => format!("{n}"),
                    "temperature" => format!("{:.3}", n as f64 / 7.0 - 50.0),
                    "humidity" => ["null".into(), format!("{}.5", n)][n as usize % 2].clone(),
                    "battery" => format!("0.{n}"),
                    "ok" => ["true", "false"][n as usize % 2].into(),
                    "firmware" => match next(8) {
                        0 => "null".into(),
                        1 => "{}".into(),
                        2 => format!("{{\"build\":{n},\"version\":\"2.{n}\"}}"),
                        3 => format!("{{\"version\":\"2.{n}\"}}"),
                        4 => format!(
                            "{{\"version\":\"2.{n}\",\"build\":{},\"x\":1}}",
                            odd(&mut next)
                        ),
                        5 => format!("{{\"version\":{},\"build\":{n}}}", odd(&mut next)),
                        6 => format!("{{ \"version\" : \"v\" , \"build\" : {n} , \"build\":1 }}"),
                        _ => format!("{{\"version\":\"2.{}.{}\",\"build\":{n}}}", n % 9, n % 20),
                    },
                    "tags" => match next(8) {
                        0 => "null".into(),
                        1 => "[]".into(),
                        2 => format!("[{}]", odd(&mut next)),
                        3 => "[\"a\",null]".into(),
                        4 => "[ \"a\" , \"b\" ]".into(),
                        5 => "[\"a\",]".into(),
                        6 => "[[\"a\"]]".into(),
                        _ => format!("[\"t{n}\",\"eu\"]"),
                    },
                    _ => format!("{}", 1_795_478_400_000u64 + n * 1000),
                },
            };
            fields.push(format!("\"{f}\":{value}"));
        }
        match next(12) {
            0 => fields.push("\"extra\":[1]".into()),
            1 if !fields.is_empty() => fields.push(fields[0].clone()),
            2 if fields.len() > 1 => fields.swap(0, 1),
            _ => {}
        }
        let text = format!("{{{}}}", fields.join(","));
        match next(30) {
            0 => text.as_bytes()[..text.len() / 2].to_vec(),
            1 => format!("{text} 1").into_bytes(),
            _ => text.into_bytes(),
        }
    }

    proptest! {
        /// The second shape: rows, event times and dead letters are the general path's.
        #[test]
        fn nested_and_numeric_fields_decode_as_arrow_json_does(seeds in proptest::collection::vec(any::<u64>(), 1..60), clean in any::<bool>()) {
            let (fast, slow) = sensor_decoders();
            let (a, b) = both_paths(&fast, &slow, seeds.iter().map(|s| sensor_record(*s)), clean);
            agree(&a, &b)?;
        }
    }

    /// Record by record on the second shape: whatever the fast path accepts decodes as
    /// arrow-json decodes it, and most well-formed records are accepted.
    #[test]
    fn every_nested_record_the_fast_path_accepts_decodes_the_same() {
        let (fast, slow) = sensor_decoders();
        let (accepted, valid) = record_by_record(&fast, &slow, 5000, sensor_record);
        // The general path also takes what this one refuses on purpose (unknown and duplicate
        // fields, a trailing comma in an array, `1.5` for an integer, a string for a number):
        // most of the odd records here. Plain records are all taken (next test).
        assert!(
            accepted > 300 && valid > accepted,
            "the fast path took {accepted} of the {valid} records arrow-json accepts"
        );
    }

    /// Plain sensor records (nulls, empty arrays, negative and integral floats, every nested
    /// shape) all take the fast path, and decode as the general path decodes them.
    #[test]
    fn plain_nested_records_all_take_the_fast_path() {
        let (fast, slow) = sensor_decoders();
        let mut chunk = RawChunk::default();
        for i in 0..400i64 {
            let humidity = ["null".to_string(), format!("{}.25", i % 90)][i as usize % 2].clone();
            let firmware = match i % 3 {
                0 => "null".to_string(),
                1 => format!(r#"{{"version":"2.{i}","build":{}}}"#, 1000 + i),
                _ => format!(r#"{{ "build" : -{i} , "version" : "" }}"#),
            };
            let tags = ["", r#""indoor""#, r#""lab", "cold","eu""#][i as usize % 3];
            let payload = format!(
                r#"{{"reading_id":"rd_{i}","device_id":{},"seq":{},"temperature":{},"humidity":{humidity},"battery":{},"ok":{},"firmware":{firmware},"tags":[{tags}],"measured_at":{}}}"#,
                100_000 + i * 7,
                i - 200,
                [
                    format!("{}", i - 7),
                    format!("-{}.125", i),
                    format!("{i}e-2")
                ][i as usize % 3],
                i as f64 / 400.0,
                i % 5 != 0,
                1_795_478_400_000 + i * 1_000,
            );
            chunk.push(i, Some(1_000), None, Some(payload.as_bytes()));
        }
        let Some(flat) = fast.flat.as_ref() else {
            panic!("the sensor schema takes the fast path");
        };
        let (_, taken) = flat.decode_prefix(
            (0..chunk.len()).map(|r| chunk.payload(r)),
            chunk.bytes(),
            true,
        );
        assert_eq!(taken, 400);
        let (a, b) = (fast.decode(&chunk, "t", 0), slow.decode(&chunk, "t", 0));
        assert!(b.dead.is_empty(), "{:?}", b.dead.first());
        assert_eq!(a.batch, b.batch);
        assert_eq!(a.event_ms, b.event_ms);
    }

    /// Timestamps and dates, as `sluice init` infers them from RFC 3339 strings, epoch
    /// milliseconds and calendar dates.
    fn time_decoders() -> (ChunkDecoder, ChunkDecoder) {
        let schema = TableSchema::parse(
            r#"{"type": "record", "name": "times", "fields": [
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "ms", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
                {"name": "local", "type": ["null", {"type": "long", "logicalType": "local-timestamp-micros"}], "default": null},
                {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null},
                {"name": "nested", "type": ["null", {"type": "record", "name": "n", "fields": [
                    {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}], "default": null},
                {"name": "seen", "type": {"type": "array", "items": {"type": "long", "logicalType": "timestamp-micros"}}}
            ]}"#,
        )
        .unwrap();
        let time = EventTime::Field {
            name: "at".into(),
            format: TimeFormat::Logical,
        };
        let fast = ChunkDecoder::new(schema.clone(), time.clone());
        assert!(
            fast.flat.is_some(),
            "timestamps and dates take the fast path"
        );
        let slow = ChunkDecoder::new(schema, time).without_fast_path();
        (fast, slow)
    }

    /// Times a timestamp or date field may meet: zones, fractions, no zone, a space for `T`,
    /// leap days, out-of-range and malformed ones, numbers.
    const TIMES: &[&str] = &[
        "\"2026-11-24T13:05:00Z\"",
        "\"2026-11-24T13:05:00.123456789+02:00\"",
        "\"2026-11-24T13:05:00.5-07:30\"",
        "\"2026-11-24T13:05:00\"",
        "\"2026-11-24 13:05:00Z\"",
        "\"2026-11-24t13:05:00z\"",
        "\"2024-02-29T00:00:00Z\"",
        "\"2026-02-29T00:00:00Z\"",
        "\"2026-11-24\"",
        "\"2026-11-24T25:00:00Z\"",
        "\"1969-12-31T23:59:59.999Z\"",
        "\"9999-12-31T23:59:59Z\"",
        "\"262143-01-01T00:00:00Z\"",
        "\"yesterday\"",
        "\"\"",
        "\"2026-11-24T13:05:00\\u005a\"",
        "1764000000000",
        "-5",
        "0",
        "1.5",
        "1e3",
        "9223372036854775807",
        "99999999999999999999",
        "20000",
        "null",
        "true",
    ];

    fn time_record(seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut next = move |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let mut pick = || TIMES[next(TIMES.len() as u64) as usize];
        let (at, ms, local, day, when, seen) = (pick(), pick(), pick(), pick(), pick(), pick());
        let day = if seed.is_multiple_of(3) {
            "\"2026-11-24\""
        } else {
            day
        };
        format!(
            r#"{{"at":{at},"ms":{ms},"local":{local},"day":{day},"nested":{{"when":{when}}},"seen":[{seen},{at}]}}"#
        )
        .into_bytes()
    }

    proptest! {
        /// Timestamps and dates on the fast path decode as arrow-json decodes them.
        #[test]
        fn fast_path_decodes_times_as_arrow_json_does(seeds in proptest::collection::vec(any::<u64>(), 1..60), clean in any::<bool>()) {
            let (fast, slow) = time_decoders();
            let (a, b) = both_paths(&fast, &slow, seeds.iter().map(|s| time_record(*s)), clean);
            agree(&a, &b)?;
        }
    }

    #[test]
    fn every_time_the_fast_path_accepts_decodes_the_same() {
        let (fast, slow) = time_decoders();
        let (accepted, valid) = record_by_record(&fast, &slow, 20_000, time_record);
        // It refuses what arrow-json reads with a loss or an escape (1.5, 1e3, numbers past
        // i64, `\u005a`), and so a good part of these odd records; it must take plenty.
        assert!(
            accepted > 500,
            "the fast path took only {accepted} ({valid} valid)"
        );
    }
}
