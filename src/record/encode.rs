//! Parquet encoding. Writing a file is not publishing it: these functions return bytes and a
//! description; only the committer touches the manifest.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;

use crate::record::decode::DeadRecord;
use crate::record::options::Compression;

pub fn writer_properties(compression: Compression, row_group_rows: usize) -> WriterProperties {
    let c = match compression {
        Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l).unwrap_or_default()),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    let col = |name: &str| parquet::schema::types::ColumnPath::from(name);
    let mut builder = WriterProperties::builder();
    // Source columns: offsets and Kafka timestamps rise row by row, so deltas take a few bits
    // a row where a dictionary held every value; the partition is one dictionary code.
    for name in [
        crate::record::schema::OFFSET_COL,
        crate::record::schema::KAFKA_TS_COL,
    ] {
        builder = builder
            .set_column_dictionary_enabled(col(name), false)
            .set_column_encoding(col(name), parquet::basic::Encoding::DELTA_BINARY_PACKED);
    }
    builder
        .set_column_compression(
            col(crate::record::schema::PARTITION_COL),
            PqCompression::UNCOMPRESSED,
        )
        .set_compression(c)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Encodes `batches` (all of `schema`) as one Parquet file in memory.
pub fn encode(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: &WriterProperties,
) -> Result<Vec<u8>, ParquetError> {
    encode_with_metadata(schema, batches, props).map(|(body, _)| body)
}

/// [`encode`], with the file's Parquet metadata (its column statistics among it).
pub fn encode_with_metadata(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: &WriterProperties,
) -> Result<(Vec<u8>, ParquetMetaData), ParquetError> {
    let capacity: usize = batches.iter().map(|b| b.get_array_memory_size() / 4).sum();
    let props = file_properties(schema, batches, props);
    let mut w = ArrowWriter::try_new(Vec::with_capacity(capacity), schema.clone(), Some(props))?;
    for b in batches {
        w.write(b)?;
        crate::failpoint::hit("mid-encode");
    }
    // `finish` writes the footer and flushes into the Vec (`into_inner` would finish again).
    let metadata = w.finish()?;
    Ok((std::mem::take(w.inner_mut()), metadata))
}

/// Rows under which a file is written uncompressed: setting up zstd costs about 30 µs per
/// column chunk (a compression and a decompression context each), which is most of the cost
/// of a file this small and saves little space in it.
const SMALL_FILE_ROWS: usize = 128;

/// String columns with at most this many distinct values in the sample are dictionary codes of
/// a few bits each: compressing them again costs a zstd context and saves next to nothing.
const FEW_DISTINCT: usize = 64;

/// Per-file properties, from a sample (the first 512 rows of the first batch):
/// - dictionary encoding off for top-level string columns more than half distinct (ids): it
///   costs time and saves nothing; low-cardinality columns (currency, status) keep theirs;
/// - no compression for string columns that are a handful of dictionary codes, nor for whole
///   files under [`SMALL_FILE_ROWS`] rows.
///
/// (Choices that do not depend on the data, for the source columns, are in
/// [`writer_properties`].)
fn file_properties(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: &WriterProperties,
) -> WriterProperties {
    let Some(sample) = batches.first() else {
        return props.clone();
    };
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut builder = props.clone().into_builder();
    if total < SMALL_FILE_ROWS {
        return builder.set_compression(PqCompression::UNCOMPRESSED).build();
    }
    let path = |name: &str| parquet::schema::types::ColumnPath::from(name);
    let rows = sample.num_rows().min(512);
    if rows < 64 {
        return builder.build();
    }
    for (i, field) in schema.fields().iter().enumerate() {
        let Some(col) = sample
            .column(i)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
        else {
            continue;
        };
        let mut seen = std::collections::HashSet::with_capacity(rows);
        for v in col.iter().take(rows).flatten() {
            seen.insert(v);
        }
        if seen.len() * 2 > rows {
            builder = builder.set_column_dictionary_enabled(path(field.name()), false);
        } else if seen.len() <= FEW_DISTINCT {
            builder =
                builder.set_column_compression(path(field.name()), PqCompression::UNCOMPRESSED);
        }
    }
    builder.build()
}

pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "kafka_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("error", DataType::Utf8, false),
    ]))
}

/// Encodes dead records of one partition as a Parquet file.
pub fn encode_dead_letters(
    topic: &str,
    partition: i32,
    records: &[DeadRecord],
    props: &WriterProperties,
) -> Result<Vec<u8>, ParquetError> {
    let schema = dead_letter_schema();
    let n = records.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(topic, n))),
        Arc::new(Int32Array::from_value(partition, n)),
        Arc::new(Int64Array::from_iter_values(
            records.iter().map(|r| r.offset),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter(records.iter().map(|r| r.kafka_timestamp))
                .with_timezone("+00:00"),
        ),
        Arc::new(BinaryArray::from_iter(
            records.iter().map(|r| r.key.as_deref()),
        )),
        Arc::new(BinaryArray::from_iter(
            records.iter().map(|r| r.payload.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.error.as_str()),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    encode(&schema, &[batch], props)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Compression as Pq;

    use super::*;
    use crate::ops::generate::{generate, GenSpec};
    use crate::record::decode::{ChunkDecoder, RawChunk};
    use crate::record::options::EventTime;
    use crate::record::schema::TableSchema;
    use crate::record::schema::TimeFormat;

    fn batch(rows: u64) -> (TableSchema, RecordBatch) {
        let schema = TableSchema::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/payment.avsc"
        )))
        .unwrap();
        let mut raw = RawChunk::default();
        let mut offset = 0;
        generate(
            &GenSpec {
                count: rows,
                ..Default::default()
            },
            |r| {
                raw.push(offset, None, Some(r.key.as_bytes()), Some(&r.payload));
                offset += 1;
            },
        );
        let dec = ChunkDecoder::new(
            schema.clone(),
            EventTime::Field {
                name: "created_at".into(),
                format: TimeFormat::Rfc3339,
            },
        );
        let batch = dec.decode(&raw, "payments", 3).batch.unwrap();
        (schema, batch)
    }

    /// (column name, compression, has a dictionary page) per column of a file.
    fn columns(body: Vec<u8>, expect: &RecordBatch) -> Vec<(String, Pq, bool)> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(body)).unwrap();
        let meta = reader.metadata().clone();
        let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let read = arrow::compute::concat_batches(&expect.schema(), &read).unwrap();
        assert_eq!(&read, expect, "the file reads back as written");
        meta.row_group(0)
            .columns()
            .iter()
            .map(|c| {
                (
                    c.column_path().string(),
                    c.compression(),
                    c.dictionary_page_offset().is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn per_column_choices_follow_the_data() {
        let (schema, b) = batch(2000);
        let props = writer_properties(Compression::Zstd(1), 1_000_000);
        let cols = columns(
            encode(&schema.table, std::slice::from_ref(&b), &props).unwrap(),
            &b,
        );
        let get = |name: &str| cols.iter().find(|c| c.0 == name).cloned().unwrap();
        // Ids: no dictionary, compressed.
        assert!(matches!(get("payment_id").1, Pq::ZSTD(_)));
        assert!(!get("payment_id").2);
        // A handful of values: dictionary codes, not compressed again.
        assert_eq!(get("currency").1, Pq::UNCOMPRESSED);
        assert!(get("currency").2);
        assert_eq!(get("_partition").1, Pq::UNCOMPRESSED);
        // Offsets rise row by row: delta-encoded, no dictionary.
        assert!(matches!(get("_offset").1, Pq::ZSTD(_)));
        assert!(!get("_offset").2);
    }

    #[test]
    fn small_files_are_not_compressed() {
        let (schema, b) = batch(50);
        let props = writer_properties(Compression::Zstd(1), 1_000_000);
        let cols = columns(
            encode(&schema.table, std::slice::from_ref(&b), &props).unwrap(),
            &b,
        );
        assert!(cols.iter().all(|c| c.1 == Pq::UNCOMPRESSED), "{cols:?}");
    }
}
