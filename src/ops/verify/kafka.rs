//! `verify --kafka`: the broker's word on offsets the manifest does not account for.

use super::{Span, VerifyReport, Violation};

/// `verify --kafka`: asks the broker about every hole and every recorded non-record. A hole
/// the broker holds records in is a loss ([`Violation::Lost`]); one it holds none in is
/// listed in `unrecorded_non_records` (transaction markers or compacted offsets of an entry
/// written before sluice recorded them) and is no violation; a recorded non-record the broker
/// holds records in is a [`Violation::RecordedNonRecordIsRecord`]. A span the broker cannot
/// answer for (retention took it, or no answer in time) stays a hole.
pub fn check_with_kafka(
    job: &crate::config::Job,
    report: &mut VerifyReport,
) -> crate::error::Result<()> {
    let consumer = crate::record::source::lookup_consumer(job)?;
    let mut violations = Vec::new();
    for v in std::mem::take(&mut report.violations) {
        let Violation::Hole(span) = v else {
            violations.push(v);
            continue;
        };
        match records_in(&consumer, &span)? {
            Some(0) => report.unrecorded_non_records.push(span),
            Some(records) => violations.push(Violation::Lost { span, records }),
            None => violations.push(Violation::Hole(span)),
        }
    }
    for span in &report.recorded_non_records {
        if let Some(records) = records_in(&consumer, span)?.filter(|&n| n > 0) {
            violations.push(Violation::RecordedNonRecordIsRecord {
                span: span.clone(),
                records,
            });
        }
    }
    report.violations = violations;
    Ok(())
}

/// How many records the broker holds in `[from, to)` of a partition (as the loader's consumer
/// configuration reads them), or `None` if it cannot tell.
fn records_in(
    consumer: &rdkafka::consumer::BaseConsumer,
    span: &Span,
) -> crate::error::Result<Option<u64>> {
    use rdkafka::consumer::Consumer;
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(
        &span.topic,
        span.partition,
        rdkafka::Offset::Offset(span.from),
    )
    .and_then(|_| consumer.assign(&list))
    .map_err(|source| crate::error::LoadError::Kafka {
        context: format!(
            "assigning {}/{} at {}",
            span.topic, span.partition, span.from
        ),
        source,
    })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut records = 0u64;
    // The next offset the broker may hold a record at.
    let mut next = span.from;
    let answer = loop {
        if std::time::Instant::now() > deadline {
            break None;
        }
        match consumer.poll(std::time::Duration::from_millis(200)) {
            // Some brokers send no end-of-partition event to a consumer that starts at the
            // end: the high watermark of the fetch answers too.
            None => {
                let cached =
                    crate::record::source::cached_watermarks(consumer, &span.topic, span.partition);
                if cached.is_some_and(|(_, high)| high <= next) {
                    break Some(records);
                }
            }
            Some(Ok(msg)) if msg.topic() == span.topic && msg.partition() == span.partition => {
                let o = msg.offset();
                if o >= span.to {
                    break Some(records);
                }
                if o >= span.from {
                    records += 1;
                }
                next = next.max(o + 1);
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == span.partition => break Some(records),
            Some(Err(e)) => {
                tracing::warn!(topic = %span.topic, partition = span.partition, from = span.from, error = %e, "the broker cannot answer for these offsets");
                break None;
            }
        }
    };
    let _ = consumer.unassign();
    Ok(answer)
}
