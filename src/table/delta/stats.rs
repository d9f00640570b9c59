//! Per-file column statistics (Delta `stats`): min, max and null count of every top-level
//! column engines can skip files by.
//!
//! Min and max are read from the Parquet writer's own column-chunk statistics (it computes them
//! while encoding; computing them again from the rows cost 5% of the loader's CPU); null
//! counts from the Arrow arrays (kept by each array, free to read).

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, TimeUnit};
use chrono::{DateTime, NaiveDate};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::Value;

use crate::table::entry::FileStats;

/// Strings longer than this get no min/max (Delta engines truncate theirs to 32 characters).
const MAX_STRING_STAT: usize = 32;

/// The statistics of `batches` (one file's rows, all of one schema), encoded as the Parquet
/// file described by `metadata`.
pub fn file_stats(batches: &[RecordBatch], metadata: &ParquetMetaData) -> FileStats {
    let mut out = FileStats::default();
    let Some(first) = batches.first() else {
        return out;
    };
    // Top-level leaf columns by name: their statistics, one per row group.
    let mut chunks: HashMap<&str, Vec<Option<&Statistics>>> = HashMap::new();
    for rg in metadata.row_groups() {
        for c in rg.columns() {
            if let [name] = c.column_path().parts() {
                chunks
                    .entry(name.as_str())
                    .or_default()
                    .push(c.statistics());
            }
        }
    }
    for (i, field) in first.schema().fields().iter().enumerate() {
        let cols: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        let name = field.name();
        if !matches!(field.data_type(), DataType::Struct(_)) {
            out.nulls.insert(
                name.clone(),
                cols.iter().map(|c| c.null_count() as u64).sum(),
            );
        }
        let Some(stats) = chunks.get(name.as_str()) else {
            continue;
        };
        if stats.len() != metadata.num_row_groups() {
            continue;
        }
        if let Some((lo, hi)) = min_max(field.data_type(), stats, &cols) {
            out.min.insert(name.clone(), lo);
            out.max.insert(name.clone(), hi);
        }
    }
    out
}

/// A column's bounds over all its row groups; `None` when any row group has none, or when
/// they are not exact.
fn min_max(
    dt: &DataType,
    stats: &[Option<&Statistics>],
    cols: &[&dyn Array],
) -> Option<(Value, Value)> {
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            let (lo, hi) = fold(stats, int32)?;
            Some((Value::from(lo), Value::from(hi)))
        }
        DataType::Int64 => {
            let (lo, hi) = fold(stats, int64)?;
            Some((Value::from(lo), Value::from(hi)))
        }
        DataType::Float32 | DataType::Float64 => {
            // No bounds when a NaN is present (it orders differently in every engine; Parquet
            // leaves it out of its own).
            let nan = cols.iter().any(|c| match dt {
                DataType::Float32 => c
                    .as_primitive::<Float32Type>()
                    .iter()
                    .flatten()
                    .any(f32::is_nan),
                _ => c
                    .as_primitive::<Float64Type>()
                    .iter()
                    .flatten()
                    .any(f64::is_nan),
            });
            if nan {
                return None;
            }
            let (lo, hi) = fold(stats, |s| match s {
                Statistics::Float(v) => Some((f64::from(*v.min_opt()?), f64::from(*v.max_opt()?))),
                Statistics::Double(v) => Some((*v.min_opt()?, *v.max_opt()?)),
                _ => None,
            })?;
            let num = |v: f64| serde_json::Number::from_f64(v).map(Value::Number);
            Some((num(lo)?, num(hi)?))
        }
        DataType::Date32 => {
            let (lo, hi) = fold(stats, int32)?;
            let day = |d: i32| {
                NaiveDate::from_num_days_from_ce_opt(d.checked_add(719_163)?)
                    .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            };
            Some((day(lo)?, day(hi)?))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let (lo, hi) = fold(stats, int64)?;
            let utc = tz.is_some();
            let ts = |us: i64| {
                let t = DateTime::from_timestamp_micros(us)?;
                let f = if utc {
                    "%Y-%m-%dT%H:%M:%S%.6fZ"
                } else {
                    "%Y-%m-%dT%H:%M:%S%.6f"
                };
                Some(Value::String(t.format(f).to_string()))
            };
            Some((ts(lo)?, ts(hi)?))
        }
        DataType::Utf8 => {
            let (lo, hi) = fold(stats, |s| match s {
                Statistics::ByteArray(v) if v.min_is_exact() && v.max_is_exact() => Some((
                    v.min_opt()?.as_utf8().ok()?.to_string(),
                    v.max_opt()?.as_utf8().ok()?.to_string(),
                )),
                _ => None,
            })?;
            let short = |s: &str| s.chars().count() <= MAX_STRING_STAT;
            (short(&lo) && short(&hi)).then(|| (Value::from(lo), Value::from(hi)))
        }
        _ => None,
    }
}

fn int32(s: &Statistics) -> Option<(i32, i32)> {
    match s {
        Statistics::Int32(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        _ => None,
    }
}

fn int64(s: &Statistics) -> Option<(i64, i64)> {
    match s {
        Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        _ => None,
    }
}

/// The bounds of every row group's bounds (`bounds` reads one row group's); row groups whose
/// values are all null have none and are skipped; `None` if a row group has no statistics or
/// bounds `bounds` cannot read (a truncated string).
fn fold<T: PartialOrd>(
    stats: &[Option<&Statistics>],
    bounds: impl Fn(&Statistics) -> Option<(T, T)>,
) -> Option<(T, T)> {
    let mut acc: Option<(T, T)> = None;
    for s in stats {
        let s = (*s)?;
        let Some((lo, hi)) = bounds(s) else {
            if s.min_bytes_opt().is_none() && s.max_bytes_opt().is_none() {
                continue;
            }
            return None;
        };
        acc = Some(match acc {
            None => (lo, hi),
            Some((l, h)) => (if lo < l { lo } else { l }, if hi > h { hi } else { h }),
        });
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;

    /// The statistics of `batches` encoded as one file (row groups of 2 rows: bounds are
    /// folded over row groups, one of them all null in a column).
    fn stats(batches: &[RecordBatch]) -> FileStats {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let (_, metadata) =
            crate::record::encode::encode_with_metadata(&batches[0].schema(), batches, &props)
                .unwrap();
        file_stats(batches, &metadata)
    }

    #[test]
    fn min_max_and_nulls_across_batches() {
        let batch = |offsets: Vec<i64>, names: Vec<Option<&str>>, ts: Vec<Option<i64>>| {
            RecordBatch::try_from_iter(vec![
                ("_offset", Arc::new(Int64Array::from(offsets)) as ArrayRef),
                ("name", Arc::new(StringArray::from(names)) as ArrayRef),
                (
                    "_kafka_timestamp",
                    Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("+00:00"))
                        as ArrayRef,
                ),
            ])
            .unwrap()
        };
        let s = stats(&[
            batch(vec![7, 3], vec![Some("b"), None], vec![Some(1_500), None]),
            batch(vec![9], vec![Some("a")], vec![Some(2_000_001)]),
            batch(vec![12, 11], vec![None, None], vec![None, None]),
        ]);
        assert_eq!(s.min["_offset"], 3);
        assert_eq!(s.max["_offset"], 12);
        assert_eq!(s.min["name"], "a");
        assert_eq!(s.max["name"], "b");
        assert_eq!(s.nulls["name"], 3);
        assert_eq!(s.nulls["_offset"], 0);
        assert_eq!(s.min["_kafka_timestamp"], "1970-01-01T00:00:00.001500Z");
        assert_eq!(s.max["_kafka_timestamp"], "1970-01-01T00:00:02.000001Z");
        assert_eq!(s.nulls["_kafka_timestamp"], 3);
        // A long string has no bounds (a truncated max would be wrong).
        let long = "x".repeat(40);
        let s = stats(&[batch(vec![1], vec![Some(long.as_str())], vec![None])]);
        assert!(!s.min.contains_key("name") && !s.max.contains_key("name"));
        assert!(!s.min.contains_key("_kafka_timestamp"));
    }

    #[test]
    fn small_ints_floats_and_dates() {
        use arrow::array::{Date32Array, Float32Array, Float64Array, Int16Array, Int32Array};
        let b = RecordBatch::try_from_iter(vec![
            (
                "i16",
                Arc::new(Int16Array::from(vec![Some(-3), None, Some(9)])) as ArrayRef,
            ),
            (
                "i32",
                Arc::new(Int32Array::from(vec![5, -70_000, 4])) as ArrayRef,
            ),
            (
                "f32",
                Arc::new(Float32Array::from(vec![1.5, -0.25, 2.0])) as ArrayRef,
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![1.0, f64::NAN, 2.0])) as ArrayRef,
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![20_000, 19_000, 20_500])) as ArrayRef,
            ),
        ])
        .unwrap();
        let s = stats(&[b]);
        assert_eq!(
            (&s.min["i16"], &s.max["i16"]),
            (&Value::from(-3), &Value::from(9))
        );
        assert_eq!(s.nulls["i16"], 1);
        assert_eq!(
            (&s.min["i32"], &s.max["i32"]),
            (&Value::from(-70_000), &Value::from(5))
        );
        assert_eq!(
            (&s.min["f32"], &s.max["f32"]),
            (&Value::from(-0.25), &Value::from(2.0))
        );
        // A NaN: no bounds.
        assert!(!s.min.contains_key("f64") && !s.max.contains_key("f64"));
        assert_eq!(s.min["day"], "2022-01-08");
        assert_eq!(s.max["day"], "2026-02-16");
    }
}
