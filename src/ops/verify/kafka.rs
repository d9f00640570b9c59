//! `verify --kafka`: the broker's word on offsets the manifest does not account for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::error::{LoadError, Result};
use crate::ops::verify::report::{Span, VerifyReport, Violation};
use crate::record::source::{ClientWatch, Watched};

/// Between two spans of a partition, offsets read rather than sought past.
const READ_THROUGH: i64 = 10_000;

/// `verify --kafka`: asks the broker about every hole and every recorded non-record. A hole
/// the broker holds records in is a loss ([`Violation::Lost`]); one it holds none in is
/// listed in `unrecorded_non_records` (transaction markers or compacted offsets of an entry
/// written before sluice recorded them) and is no violation; a recorded non-record the broker
/// holds records in is a [`Violation::RecordedNonRecordIsRecord`]. A span the broker cannot
/// answer for (retention took it, or no answer in time) stays a hole. Each partition is read
/// once, in offset order, however many spans it has (a transactional topic has a marker per
/// transaction).
pub fn check_with_kafka(job: &crate::config::Job, report: &mut VerifyReport) -> Result<()> {
    let consumer = crate::record::source::lookup_consumer(job.source())?;
    let (holes, mut violations): (Vec<Violation>, Vec<Violation>) =
        std::mem::take(&mut report.violations)
            .into_iter()
            .partition(|v| matches!(v, Violation::Hole(_)));
    let holes: Vec<Span> = holes
        .into_iter()
        .filter_map(|v| match v {
            Violation::Hole(s) => Some(s),
            _ => None,
        })
        .collect();
    // Before each partition's first range, down to the broker's low watermark: a job that reads
    // from the earliest offset has loaded every committed record there.
    let prefixes: Vec<Span> = match job.start_offset {
        crate::config::StartOffset::Latest => Vec::new(),
        crate::config::StartOffset::Earliest => {
            let parts: Vec<(String, i32)> = report
                .partitions
                .iter()
                .filter(|p| !p.ranges.is_empty())
                .map(|p| (p.topic.clone(), p.partition))
                .collect();
            let wm = crate::record::source::watermarks(&consumer, &parts, Duration::from_secs(30))?;
            report
                .partitions
                .iter()
                .filter_map(|p| {
                    let first = p.ranges.iter().map(|r| r.0).min()?;
                    let &(low, _) = wm.get(&(p.topic.clone(), p.partition))?;
                    (low < first).then(|| Span {
                        seq: 0,
                        topic: p.topic.clone(),
                        partition: p.partition,
                        from: low,
                        to: first,
                    })
                })
                .collect()
        }
    };
    let spans: Vec<&Span> = holes
        .iter()
        .chain(&report.recorded_non_records)
        .chain(&prefixes)
        .collect();
    let counts = count_records(&consumer, &spans)?;
    for (span, count) in prefixes
        .iter()
        .zip(&counts[holes.len() + report.recorded_non_records.len()..])
    {
        if let Some(records) = count.filter(|&n| n > 0) {
            violations.push(Violation::Unloaded {
                topic: span.topic.clone(),
                partition: span.partition,
                from: span.from,
                to: span.to,
                records,
            });
        }
    }
    for (span, count) in holes.iter().zip(&counts) {
        match count {
            Some(0) => report.unrecorded_non_records.push(span.clone()),
            Some(records) => violations.push(Violation::Lost {
                span: span.clone(),
                records: *records,
            }),
            None => violations.push(Violation::Hole(span.clone())),
        }
    }
    for (span, count) in report
        .recorded_non_records
        .iter()
        .zip(&counts[holes.len()..holes.len() + report.recorded_non_records.len()])
    {
        if let Some(records) = count.filter(|&n| n > 0) {
            violations.push(Violation::RecordedNonRecordIsRecord {
                span: span.clone(),
                records,
            });
        }
    }
    report.violations = violations;
    Ok(())
}

/// How many records the broker holds in each span (as the loader's consumer configuration
/// reads them: committed records only), or `None` where it cannot tell.
fn count_records(
    consumer: &BaseConsumer<ClientWatch>,
    spans: &[&Span],
) -> Result<Vec<Option<u64>>> {
    let mut by_partition: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
    for (i, s) in spans.iter().enumerate() {
        if s.from < s.to {
            by_partition
                .entry((s.topic.as_str(), s.partition))
                .or_default()
                .push(i);
        }
    }
    let mut counts: Vec<Option<u64>> = spans
        .iter()
        .map(|s| (s.from >= s.to).then_some(0))
        .collect();
    for ((topic, partition), mut idx) in by_partition {
        idx.sort_by_key(|&i| (spans[i].from, spans[i].to));
        let ranges: Vec<(i64, i64)> = idx.iter().map(|&i| (spans[i].from, spans[i].to)).collect();
        for (k, c) in sweep_partition(consumer, topic, partition, &ranges)?
            .into_iter()
            .enumerate()
        {
            counts[idx[k]] = c;
        }
    }
    Ok(counts)
}

/// Reads one partition from its first span on, counting the records in each of `ranges`
/// (sorted by start); seeks over long stretches between spans.
fn sweep_partition(
    consumer: &BaseConsumer<ClientWatch>,
    topic: &str,
    partition: i32,
    ranges: &[(i64, i64)],
) -> Result<Vec<Option<u64>>> {
    let mut counts = vec![0u64; ranges.len()];
    let Some(&(first, _)) = ranges.first() else {
        return Ok(Vec::new());
    };
    let kafka = |context: String| move |source| LoadError::Kafka { context, source };
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(topic, partition, rdkafka::Offset::Offset(first))
        .and_then(|_| consumer.assign(&list))
        .map_err(kafka(format!("assigning {topic}/{partition} at {first}")))?;
    // Spans before `done` are final; the consumer reads from `next` on.
    let (mut done, mut next) = (0usize, first);
    let mut deadline = Instant::now() + Duration::from_secs(20);
    let answered = loop {
        // Spans that end at or before `next` are final.
        while done < ranges.len() && ranges[done].1 <= next {
            done += 1;
        }
        if done == ranges.len() {
            break true;
        }
        if ranges[done].0 > next + READ_THROUGH {
            next = ranges[done].0;
            consumer
                .seek(
                    topic,
                    partition,
                    rdkafka::Offset::Offset(next),
                    Duration::from_secs(10),
                )
                .map_err(kafka(format!("seeking {topic}/{partition} to {next}")))?;
        }
        if Instant::now() > deadline {
            break false;
        }
        let polled = consumer.poll(Duration::from_millis(200));
        consumer.context().watch().check()?;
        match polled {
            // Some brokers send no end-of-partition event to a consumer that starts at the
            // end: the high watermark of the fetch answers too.
            None => {
                let cached = crate::record::source::cached_watermarks(consumer, topic, partition);
                if cached.is_some_and(|(_, high)| high <= next) {
                    break true;
                }
            }
            Some(Ok(msg)) if msg.topic() == topic && msg.partition() == partition => {
                let o = msg.offset();
                for (k, &(from, to)) in ranges.iter().enumerate().skip(done) {
                    if from > o {
                        break;
                    }
                    if o < to {
                        counts[k] += 1;
                    }
                }
                next = next.max(o + 1);
                deadline = Instant::now() + Duration::from_secs(20);
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break true,
            Some(Err(e)) => {
                tracing::warn!(topic, partition, offset = next, error = %e, "the broker cannot answer for these offsets");
                break false;
            }
        }
    };
    let _ = consumer.unassign();
    // At the end of the partition every span is answered; otherwise only the final ones.
    Ok(counts
        .into_iter()
        .enumerate()
        .map(|(k, c)| (answered || k < done).then_some(c))
        .collect())
}
