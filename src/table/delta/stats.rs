//! Per-file column statistics (Delta `stats`), computed from a file's rows when it is encoded:
//! min, max and null count of every top-level column engines can skip files by.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{max, max_string, min, min_string};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use crate::table::entry::FileStats;

/// Strings longer than this get no min/max (Delta engines truncate theirs to 32 characters).
const MAX_STRING_STAT: usize = 32;

/// The statistics of `batches` (one file's rows, all of one schema).
pub fn file_stats(batches: &[RecordBatch]) -> FileStats {
    let mut out = FileStats::default();
    let Some(first) = batches.first() else {
        return out;
    };
    for (i, field) in first.schema().fields().iter().enumerate() {
        let cols: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        let name = field.name();
        if !matches!(field.data_type(), DataType::Struct(_)) {
            out.nulls.insert(
                name.clone(),
                cols.iter().map(|c| c.null_count() as u64).sum(),
            );
        }
        if let Some((lo, hi)) = min_max(field.data_type(), &cols) {
            out.min.insert(name.clone(), lo);
            out.max.insert(name.clone(), hi);
        }
    }
    out
}

fn min_max(dt: &DataType, cols: &[&dyn Array]) -> Option<(Value, Value)> {
    match dt {
        DataType::Int8 => ints::<Int8Type>(cols),
        DataType::Int16 => ints::<Int16Type>(cols),
        DataType::Int32 => ints::<Int32Type>(cols),
        DataType::Int64 => ints::<Int64Type>(cols),
        DataType::Float32 => floats::<Float32Type>(cols),
        DataType::Float64 => floats::<Float64Type>(cols),
        DataType::Date32 => {
            let (lo, hi) = fold::<Date32Type>(cols)?;
            let day = |d: i32| {
                NaiveDate::from_num_days_from_ce_opt(d.checked_add(719_163)?)
                    .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            };
            Some((day(lo)?, day(hi)?))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let (lo, hi) = fold::<TimestampMicrosecondType>(cols)?;
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
            let mut lo: Option<&str> = None;
            let mut hi: Option<&str> = None;
            for c in cols {
                let s = c.as_string::<i32>();
                if let Some(m) = min_string(s) {
                    lo = Some(lo.map_or(m, |l| l.min(m)));
                }
                if let Some(m) = max_string(s) {
                    hi = Some(hi.map_or(m, |h| h.max(m)));
                }
            }
            let (lo, hi) = (lo?, hi?);
            let short = |s: &str| s.chars().count() <= MAX_STRING_STAT;
            (short(lo) && short(hi)).then(|| (Value::from(lo), Value::from(hi)))
        }
        _ => None,
    }
}

fn fold<T: ArrowPrimitiveType>(cols: &[&dyn Array]) -> Option<(T::Native, T::Native)>
where
    T::Native: PartialOrd,
{
    let mut acc: Option<(T::Native, T::Native)> = None;
    for c in cols {
        let a = c.as_primitive::<T>();
        if let (Some(lo), Some(hi)) = (min(a), max(a)) {
            acc = Some(match acc {
                None => (lo, hi),
                Some((l, h)) => (if lo < l { lo } else { l }, if hi > h { hi } else { h }),
            });
        }
    }
    acc
}

fn ints<T: ArrowPrimitiveType>(cols: &[&dyn Array]) -> Option<(Value, Value)>
where
    T::Native: PartialOrd + Into<i64>,
{
    let (lo, hi) = fold::<T>(cols)?;
    Some((Value::from(lo.into()), Value::from(hi.into())))
}

/// Floats get no min/max when a NaN is present (it orders differently in every engine).
fn floats<T: ArrowPrimitiveType>(cols: &[&dyn Array]) -> Option<(Value, Value)>
where
    T::Native: PartialOrd + Into<f64>,
{
    let nan = cols.iter().any(|c| {
        c.as_primitive::<T>()
            .iter()
            .flatten()
            .any(|v| v.into().is_nan())
    });
    if nan {
        return None;
    }
    let (lo, hi) = fold::<T>(cols)?;
    let num = |v: f64| serde_json::Number::from_f64(v).map(Value::Number);
    Some((num(lo.into())?, num(hi.into())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;

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
        let s = file_stats(&[
            batch(vec![7, 3], vec![Some("b"), None], vec![Some(1_500), None]),
            batch(vec![9], vec![Some("a")], vec![Some(2_000_001)]),
        ]);
        assert_eq!(s.min["_offset"], 3);
        assert_eq!(s.max["_offset"], 9);
        assert_eq!(s.min["name"], "a");
        assert_eq!(s.max["name"], "b");
        assert_eq!(s.nulls["name"], 1);
        assert_eq!(s.nulls["_offset"], 0);
        assert_eq!(s.min["_kafka_timestamp"], "1970-01-01T00:00:00.001500Z");
        assert_eq!(s.max["_kafka_timestamp"], "1970-01-01T00:00:02.000001Z");
        assert_eq!(s.nulls["_kafka_timestamp"], 1);
        // A long string has no bounds (a truncated max would be wrong).
        let long = "x".repeat(40);
        let s = file_stats(&[batch(vec![1], vec![Some(long.as_str())], vec![None])]);
        assert!(!s.min.contains_key("name") && !s.max.contains_key("name"));
        assert!(!s.min.contains_key("_kafka_timestamp"));
    }
}
