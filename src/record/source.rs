//! The Kafka side: consumer configuration and the rebalance hook that makes every newly
//! assigned partition start at the manifest's committed end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset};

use crate::config::Job;
use crate::error::{LoadError, Result};

pub type TopicPartition = (String, i32);

/// Where each partition starts: resolved from the manifest at assignment time.
pub type StartResolver = dyn Fn(&[TopicPartition]) -> Result<Vec<Offset>> + Send + Sync + 'static;

/// What a rebalance did, for the loader loop to act on after `poll` returns.
#[derive(Debug)]
pub enum Assignment {
    /// Newly owned partitions and the offset each was positioned at.
    Assigned(Vec<(TopicPartition, Offset)>),
    /// Partitions taken away: their uncommitted buffers must be dropped.
    Revoked(Vec<TopicPartition>),
    /// The start offsets could not be resolved: the loader stops with this error.
    Failed(String),
}

pub struct LoaderContext {
    resolver: Box<StartResolver>,
    events: Mutex<Vec<Assignment>>,
}

impl LoaderContext {
    pub fn new(resolver: Box<StartResolver>) -> Self {
        Self {
            resolver,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Takes the rebalance events since the last call.
    pub fn take_events(&self) -> Vec<Assignment> {
        match self.events.lock() {
            Ok(mut e) => std::mem::take(&mut *e),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn push(&self, a: Assignment) {
        match self.events.lock() {
            Ok(mut e) => e.push(a),
            Err(poisoned) => poisoned.into_inner().push(a),
        }
    }
}

impl ClientContext for LoaderContext {}

impl ConsumerContext for LoaderContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                match (self.resolver)(&parts) {
                    Ok(offsets) => {
                        let mut list = TopicPartitionList::new();
                        for ((t, p), o) in parts.iter().zip(&offsets) {
                            if let Err(e) = list.add_partition_offset(t, *p, *o) {
                                let _ = consumer.assign(&TopicPartitionList::new());
                                self.push(Assignment::Failed(format!(
                                    "positioning {t}/{p} at {o:?}: {e}"
                                )));
                                return;
                            }
                        }
                        if let Err(e) = consumer.assign(&list) {
                            self.push(Assignment::Failed(format!("assign failed: {e}")));
                            return;
                        }
                        tracing::info!(partitions = ?parts, "assigned");
                        self.push(Assignment::Assigned(
                            parts.into_iter().zip(offsets).collect(),
                        ));
                    }
                    Err(e) => {
                        let _ = consumer.assign(&TopicPartitionList::new());
                        self.push(Assignment::Failed(e.to_string()));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?parts, "revoked");
                self.push(Assignment::Revoked(parts));
                let _ = consumer.unassign();
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
                self.push(Assignment::Revoked(Vec::new()));
            }
        }
    }
}

/// The consumer configuration: the job's pass-through properties first, then the invariants
/// the exactly-once protocol relies on.
pub fn client_config(job: &Job) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    // Defaults a job may override. librdkafka backs off fetching for a whole second when the
    // local queue is over its threshold, which a loader that decodes between polls hits all the
    // time: a short backoff keeps the pipe full (measured: 2.8x the end-to-end throughput).
    cfg.set("fetch.queue.backoff.ms", "20");
    // librdkafka's prefetch counts against the process's memory as much as our buffers do:
    // keep it to an eighth of the buffer budget (librdkafka's defaults, 64 MiB queued plus
    // 50 MiB fetch responses, would double a 64 MiB budget).
    let prefetch_kib = prefetch_kib(job.commit.max_buffered_bytes);
    cfg.set("queued.max.messages.kbytes", prefetch_kib.to_string());
    cfg.set("fetch.max.bytes", (prefetch_kib * 1024).to_string());
    for (k, v) in &job.kafka_properties {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", &job.brokers)
        .set("group.id", &job.group_id)
        // The manifest holds the offsets; the group offset is advisory and written by hand
        // after each manifest commit.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // A start offset Kafka no longer has is a retention gap: report it, never skip it.
        .set("auto.offset.reset", "error")
        // Eager protocols: a rebalance revokes everything, then assigns (see rebalance()).
        .set("partition.assignment.strategy", "range,roundrobin");
    cfg
}

/// librdkafka's prefetch limit for a buffer budget: an eighth of it, between 4 and 64 MiB.
pub fn prefetch_kib(max_buffered_bytes: u64) -> u64 {
    (max_buffered_bytes / 8 / 1024).clamp(4 * 1024, 64 * 1024)
}

pub fn create_consumer(job: &Job, ctx: LoaderContext) -> Result<Arc<BaseConsumer<LoaderContext>>> {
    let consumer: BaseConsumer<LoaderContext> = client_config(job)
        .create_with_context(ctx)
        .map_err(|source| LoadError::Kafka {
            context: format!("creating a consumer for {}", job.brokers),
            source,
        })?;
    Ok(Arc::new(consumer))
}

/// Every partition of the job's topics, from the broker's metadata.
pub fn all_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<TopicPartition>> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|source| LoadError::Kafka {
                context: format!("fetching metadata of topic {topic}"),
                source,
            })?;
        for t in md.topics() {
            if let Some(err) = t.error() {
                return Err(LoadError::Kafka {
                    context: format!("topic {topic}"),
                    source: rdkafka::error::KafkaError::MetadataFetch(err.into()),
                });
            }
            for p in t.partitions() {
                out.push((t.name().to_string(), p.id()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `(low, high)` watermarks of each partition as the broker reports them in ListOffsets
/// (some brokers under-report the high one: see `cached_watermarks`).
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[TopicPartition],
    timeout: Duration,
) -> Result<HashMap<TopicPartition, (i64, i64)>> {
    let mut out = HashMap::new();
    for (t, p) in parts {
        let wm = consumer
            .fetch_watermarks(t, *p, timeout)
            .map_err(|source| LoadError::Kafka {
                context: format!("fetching watermarks of {t}/{p}"),
                source,
            })?;
        out.insert((t.clone(), *p), wm);
    }
    Ok(out)
}

/// A consumer for looking things up (metadata, watermarks), never for loading.
pub fn lookup_consumer(job: &Job) -> Result<BaseConsumer> {
    client_config(job)
        .create()
        .map_err(|source| LoadError::Kafka {
            context: format!("creating a consumer for {}", job.brokers),
            source,
        })
}

/// Commits advisory group offsets (for lag tools); failures are logged, never fatal.
pub fn commit_group_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(TopicPartition, i64)],
) {
    if offsets.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        if let Err(e) = list.add_partition_offset(t, *p, Offset::Offset(*o)) {
            tracing::debug!(topic = %t, partition = p, error = %e, "advisory group offset not set");
        }
    }
    let r: KafkaResult<()> = consumer.commit(&list, rdkafka::consumer::CommitMode::Async);
    if let Err(e) = r {
        tracing::debug!(error = %e, "advisory group offset commit failed");
    }
}

/// The `(low, high)` watermarks cached from the latest fetch response of a partition (no
/// request; `None` before the first fetch). Unlike ListOffsets (`fetch_watermarks`), this is
/// what the broker said while serving data.
pub fn cached_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; `topic` is a valid C string
    // for the call; librdkafka only writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low.max(0), high))
}

/// Each partition's high watermark as the broker states it while serving a fetch: a short
/// lookup that assigns every partition just below its listed end and polls until each has
/// answered (falling back to ListOffsets after `timeout`). ListOffsets alone under-reports on
/// some brokers.
pub fn served_high_watermarks(
    job: &Job,
    parts: &[TopicPartition],
    timeout: Duration,
) -> Result<HashMap<TopicPartition, i64>> {
    let consumer = lookup_consumer(job)?;
    let listed = watermarks(&consumer, parts, timeout)?;
    let mut list = TopicPartitionList::new();
    for (t, p) in parts {
        let (low, high) = listed.get(&(t.clone(), *p)).copied().unwrap_or((0, 0));
        list.add_partition_offset(t, *p, Offset::Offset((high - 1).max(low)))
            .map_err(|source| LoadError::Kafka {
                context: format!("positioning {t}/{p} for a watermark lookup"),
                source,
            })?;
    }
    consumer.assign(&list).map_err(|source| LoadError::Kafka {
        context: "assigning partitions for a watermark lookup".into(),
        source,
    })?;
    let deadline = std::time::Instant::now() + timeout.min(Duration::from_secs(10));
    let mut out = HashMap::new();
    while std::time::Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(50));
        out = parts
            .iter()
            .filter_map(|(t, p)| Some(((t.clone(), *p), cached_watermarks(&consumer, t, *p)?.1)))
            .collect();
        if out.len() == parts.len() {
            break;
        }
    }
    for (k, (_, high)) in listed {
        let v = out.entry(k).or_insert(high);
        *v = (*v).max(high);
    }
    Ok(out)
}
