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
use parquet::file::properties::WriterProperties;

use crate::config::Compression;
use crate::decode::DeadRecord;

pub fn writer_properties(compression: Compression, row_group_rows: usize) -> WriterProperties {
    let c = match compression {
        Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l).unwrap_or_default()),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    WriterProperties::builder()
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
    let capacity: usize = batches.iter().map(|b| b.get_array_memory_size() / 4).sum();
    let props = without_useless_dictionaries(schema, batches.first(), props);
    let mut w = ArrowWriter::try_new(Vec::with_capacity(capacity), schema.clone(), Some(props))?;
    for b in batches {
        w.write(b)?;
        crate::failpoint::hit("mid-encode");
    }
    w.into_inner()
}

/// Dictionary encoding of mostly-unique strings (ids) costs time and saves nothing: switch it
/// off for top-level string columns whose sample (the first 512 rows of the first batch) is
/// more than half distinct. Low-cardinality columns (currency, status) keep their
/// dictionaries. (Sampling 4096 rows hashed nearly every value: 5% of a load's CPU.)
fn without_useless_dictionaries(
    schema: &SchemaRef,
    sample: Option<&RecordBatch>,
    props: &WriterProperties,
) -> WriterProperties {
    let Some(sample) = sample else {
        return props.clone();
    };
    let rows = sample.num_rows().min(512);
    if rows < 64 {
        return props.clone();
    }
    let mut builder: Option<parquet::file::properties::WriterPropertiesBuilder> = None;
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
            let b = builder
                .take()
                .unwrap_or_else(|| props.clone().into_builder());
            builder = Some(b.set_column_dictionary_enabled(
                parquet::schema::types::ColumnPath::from(field.name().as_str()),
                false,
            ));
        }
    }
    builder.map(|b| b.build()).unwrap_or_else(|| props.clone())
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
