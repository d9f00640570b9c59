//! The event-time field most likely to be one, from the decoded sample (`sluice init`).
//!
//! A candidate is a top-level column that holds a time in every sampled row: a timestamp, an
//! RFC 3339 string, or integers all in the epoch-seconds or epoch-milliseconds range. Events
//! are usually produced soon after they happen, so the best candidate is the one nearest its
//! records' Kafka timestamps; a name that says "time" breaks ties. Pure: no I/O.

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};

use crate::record::schema::{TimeFormat, KAFKA_TS_COL, SOURCE_COLS};

use super::infer::{time_name, EPOCH_MS, EPOCH_S, NEAR_MS};

/// A column that could be the event time, and how well it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub format: TimeFormat,
    /// Rows within a day of their Kafka timestamp, of `rows`.
    pub near: usize,
    pub rows: usize,
    /// Median distance to the Kafka timestamp.
    pub median_ms: i64,
    /// The name says it is a time.
    pub named: bool,
}

/// The candidates among `batch`'s columns, best first.
pub fn candidates(batch: &RecordBatch) -> Vec<Candidate> {
    let rows = batch.num_rows();
    let Some(kafka) = batch
        .column_by_name(KAFKA_TS_COL)
        .and_then(|c| millis(c.as_ref(), TimeFormat::Logical))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if rows == 0 || SOURCE_COLS.contains(&field.name().as_str()) || col.null_count() > 0 {
            continue;
        }
        let formats: &[TimeFormat] = match field.data_type() {
            DataType::Timestamp(_, _) => &[TimeFormat::Logical],
            DataType::Utf8 => &[TimeFormat::Rfc3339],
            DataType::Int64 | DataType::Int32 => {
                &[TimeFormat::EpochMillis, TimeFormat::EpochSeconds]
            }
            _ => &[],
        };
        for &format in formats {
            let Some(ms) = millis(col.as_ref(), format) else {
                continue;
            };
            let mut dist: Vec<i64> = (0..rows)
                .filter(|&i| kafka.is_valid(i))
                .map(|i| (ms.value(i) - kafka.value(i)).abs())
                .collect();
            dist.sort_unstable();
            out.push(Candidate {
                name: field.name().clone(),
                format,
                near: dist.iter().filter(|&&d| d <= NEAR_MS).count(),
                rows,
                median_ms: dist.get(dist.len() / 2).copied().unwrap_or(i64::MAX),
                named: time_name(field.name()),
            });
            break;
        }
    }
    out.sort_by(|a, b| {
        b.near
            .cmp(&a.near)
            .then(b.named.cmp(&a.named))
            .then(a.median_ms.cmp(&b.median_ms))
    });
    out
}

/// The column's values as epoch milliseconds, if every one is a time in `format`.
fn millis(col: &dyn Array, format: TimeFormat) -> Option<Int64Array> {
    let in_range =
        |a: &Int64Array, (lo, hi): (i64, i64)| a.iter().flatten().all(|v| (lo..hi).contains(&v));
    match format {
        TimeFormat::Logical => {
            let ms = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok()?;
            let ints = cast(&ms, &DataType::Int64).ok()?;
            ints.as_any().downcast_ref::<Int64Array>().cloned()
        }
        TimeFormat::Rfc3339 => {
            let s = col.as_any().downcast_ref::<StringArray>()?;
            s.iter()
                .map(|v| {
                    v.and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
                        .map(|t| t.timestamp_millis())
                        .map(Some)
                })
                .collect::<Option<Int64Array>>()
        }
        TimeFormat::EpochMillis | TimeFormat::EpochSeconds => {
            let ints = cast(col, &DataType::Int64).ok()?;
            let ints = ints.as_any().downcast_ref::<Int64Array>()?.clone();
            if format == TimeFormat::EpochMillis {
                in_range(&ints, EPOCH_MS).then_some(ints)
            } else {
                in_range(&ints, EPOCH_S).then(|| ints.iter().map(|v| v.map(|v| v * 1000)).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    #[test]
    fn nearest_to_the_kafka_timestamp_wins() {
        let k = 1_764_000_000_000i64;
        let kafka: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![k * 1000, (k + 1000) * 1000])
                .with_timezone("+00:00"),
        );
        let b = batch(vec![
            // A birthday-like time far in the past: a time, but not the event's.
            (
                "born_at",
                Arc::new(StringArray::from(vec![
                    "2001-01-01T00:00:00Z",
                    "2001-01-02T00:00:00Z",
                ])),
            ),
            ("id", Arc::new(Int64Array::from(vec![1, 2]))),
            (
                "sent",
                Arc::new(Int64Array::from(vec![k / 1000, k / 1000 + 1])),
            ),
            ("ts", Arc::new(Int64Array::from(vec![k + 5, k + 1005]))),
            (KAFKA_TS_COL, kafka),
        ]);
        let c = candidates(&b);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ts", "sent", "born_at"], "{c:?}");
        assert_eq!(c[0].format, TimeFormat::EpochMillis);
        assert_eq!(c[0].median_ms, 5);
        assert_eq!(c[1].format, TimeFormat::EpochSeconds);
        assert_eq!(c[2].near, 0);
    }
}
