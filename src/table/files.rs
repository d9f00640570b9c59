//! Data files as the table holds them: reading them whole, the summary of a file made of
//! others' rows (its spans), and the file a replace carries the rows of other partitions in.

use arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;

use crate::error::{CommitError, LoadError, Result};
use crate::record::schema::{PARTITION_COL, TOPIC_COL};
use crate::table::entry::{DataFile, Span};
use crate::table::store::TableStore;
use crate::table::upload::{encode_data_file, Encoded};

/// Sets a file's summary fields from its spans: the topic and partition when they are one
/// (else partition -1), and the offsets from the least first to the greatest next.
pub fn summarized(mut f: DataFile) -> DataFile {
    let one = |g: &dyn Fn(&Span) -> (String, i32)| {
        let mut keys = f.spans.iter().map(g);
        let first = keys.next();
        first.filter(|k| keys.all(|x| &x == k))
    };
    let topic = one(&|s| (s.topic.clone(), 0)).map(|k| k.0);
    let part = one(&|s| (s.topic.clone(), s.partition));
    f.topic = topic.unwrap_or_else(|| "*".into());
    f.partition = part.map(|k| k.1).unwrap_or(-1);
    f.first_offset = f.spans.iter().map(|s| s.first).min().unwrap_or(0);
    f.next_offset = f.spans.iter().map(|s| s.next).max().unwrap_or(0);
    f
}

/// The file that carries the rows of `f` a replace keeps (`keep(topic, partition)`): its spans
/// of those partitions, under a fresh name in the same folder. `None` when it keeps none.
pub fn carried_file(f: &DataFile, keep: &dyn Fn(&str, i32) -> bool) -> Option<DataFile> {
    let spans: Vec<Span> = f
        .lineage()
        .iter()
        .filter(|s| keep(&s.topic, s.partition))
        .cloned()
        .collect();
    if spans.is_empty() {
        return None;
    }
    let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    Some(summarized(DataFile {
        path: format!("{dir}/part-carry-{}.parquet", uuid::Uuid::new_v4().simple()),
        bytes: 0,
        rows: spans.iter().map(|s| s.rows).sum(),
        stats: None,
        spans,
        ..f.clone()
    }))
}

/// The rows of `source` that `carried` (its [`carried_file`]) holds, encoded: read, filtered
/// by topic and partition, and counted against the spans.
pub fn encode_carried(
    store: &TableStore,
    rt: &tokio::runtime::Runtime,
    source: &DataFile,
    carried: &DataFile,
    props: &WriterProperties,
    ids: Option<&crate::table::iceberg::FieldIds>,
) -> std::result::Result<Encoded, CommitError> {
    let failed = |source: LoadError| CommitError::Encode {
        path: carried.path.clone(),
        source: Box::new(source),
    };
    carried_rows(store, rt, source, carried)
        .map_err(failed)
        .and_then(|(schema, out)| encode_data_file(&schema, &out, props, &carried.path, ids))
}

/// The rows of `source` that `carried` holds, checked against its spans.
fn carried_rows(
    store: &TableStore,
    rt: &tokio::runtime::Runtime,
    source: &DataFile,
    carried: &DataFile,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    use arrow::array::{BooleanArray, Int32Array, StringArray};
    let keep: std::collections::HashSet<(String, i32)> = carried.partitions().into_iter().collect();
    let arrow_error = |e| LoadError::Arrow {
        context: format!("carrying the rows of {}", source.path),
        source: e,
    };
    let mut out = Vec::new();
    for b in rt.block_on(read_files(store, std::slice::from_ref(source)))? {
        let (Some(t), Some(p)) = (
            b.column_by_name(TOPIC_COL)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            b.column_by_name(PARTITION_COL)
                .and_then(|c| c.as_any().downcast_ref::<Int32Array>()),
        ) else {
            return Err(LoadError::Refused {
                message: format!("{}: no `_topic`/`_partition` columns", source.path),
            });
        };
        let mask: BooleanArray = (0..b.num_rows())
            .map(|i| Some(keep.contains(&(t.value(i).to_string(), p.value(i)))))
            .collect();
        out.push(arrow::compute::filter_record_batch(&b, &mask).map_err(arrow_error)?);
    }
    let rows: usize = out.iter().map(|b| b.num_rows()).sum();
    if rows as u64 != carried.rows {
        return Err(LoadError::Refused {
            message: format!(
                "{}: {rows} rows of the partitions kept, its spans record {}",
                source.path, carried.rows
            ),
        });
    }
    let Some(schema) = out.first().map(|b| b.schema()) else {
        return Err(LoadError::Refused {
            message: format!("{}: no rows", source.path),
        });
    };
    Ok((schema, out))
}

/// Reads data files whole.
pub async fn read_files(store: &TableStore, files: &[DataFile]) -> Result<Vec<RecordBatch>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = Vec::new();
    for f in files {
        let bytes = store
            .get(&f.path)
            .await?
            .ok_or_else(|| LoadError::Refused {
                message: format!("{} is listed as live but is missing", f.path),
            })?;
        let read_error = |e: parquet::errors::ParquetError| LoadError::Refused {
            message: format!("{}: {e}", f.path),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(read_error)?;
        for batch in reader {
            out.push(batch.map_err(|source| LoadError::Arrow {
                context: format!("reading {}", f.path),
                source,
            })?);
        }
    }
    Ok(out)
}
