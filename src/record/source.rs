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
    /// Every partition is gone (a rebalance error): all buffers are dropped.
    Lost,
    /// The start offsets could not be resolved: the loader stops with this error.
    Failed(String),
}

/// Watches librdkafka's error and log callbacks for errors no retry fixes: the broker refused
/// our credentials or certificate, or we refused the broker's. librdkafka itself would retry them
/// forever; whoever holds the consumer asks [`ClientWatch::check`] and stops.
pub struct ClientWatch {
    /// Set with `fatal`: the per-poll check is one relaxed load.
    failed: std::sync::atomic::AtomicBool,
    fatal: Mutex<Option<String>>,
    brokers: String,
}

impl ClientWatch {
    pub fn new(brokers: &str) -> Self {
        ClientWatch {
            failed: std::sync::atomic::AtomicBool::new(false),
            fatal: Mutex::new(None),
            brokers: brokers.to_string(),
        }
    }

    /// The first fatal client error seen, as an error naming the brokers.
    pub fn check(&self) -> Result<()> {
        if !self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let fatal = match self.fatal.lock() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        match fatal {
            Some(reason) => Err(LoadError::KafkaAuth {
                brokers: self.brokers.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Every error event passes here, consumer errors too (an end of partition, a start offset
    /// out of range), which the poll that returns them handles and logs: only the fatal ones
    /// are kept, the rest go to the log at debug level.
    fn on_error(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        if !is_fatal_client_error(error.rdkafka_error_code(), reason) {
            tracing::debug!(error = %error, reason, "kafka client error (librdkafka retries)");
            return;
        }
        tracing::error!(error = %error, reason, "kafka: authentication or TLS failed");
        self.fail(reason);
    }

    /// librdkafka logs a failed connection (`FAIL`, at error level) with its cause. Other
    /// lines go to the log at debug level (librdkafka logs no configuration value unless its
    /// `debug` property asks it to).
    fn on_log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let failure = matches!(level, L::Emerg | L::Alert | L::Critical | L::Error);
        if failure && fac == "FAIL" && is_fatal_client_error(None, message) {
            self.fail(message);
        } else {
            tracing::debug!(target: "librdkafka", fac, message);
        }
    }

    fn fail(&self, reason: &str) {
        let mut fatal = match self.fatal.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        fatal.get_or_insert_with(|| reason.to_string());
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether a client error reported by librdkafka's error callback is one no retry fixes:
/// SASL authentication failed, or a TLS handshake was refused by either side (a certificate not
/// trusted, a client certificate missing or rejected). A connection refused or reset (a broker
/// restarting) is not.
pub fn is_fatal_client_error(code: Option<rdkafka::error::RDKafkaErrorCode>, reason: &str) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    // The broker's TLS alert arrives on the first read after the handshake (TLS 1.3): a
    // transport failure whose reason names TLS.
    let tls = [
        "SSL handshake failed",
        "SSL alert",
        "certificate verify failed",
    ];
    let names_auth =
        || reason.contains("SASL authentication error") || tls.iter().any(|t| reason.contains(t));
    match code {
        Some(C::Authentication | C::SaslAuthenticationFailed | C::SSL) => true,
        Some(C::BrokerTransportFailure | C::AllBrokersDown) | None => names_auth(),
        _ => false,
    }
}

/// A consumer context that watches for fatal client errors.
pub trait Watched: ConsumerContext {
    fn watch(&self) -> &ClientWatch;
}

impl Watched for ClientWatch {
    fn watch(&self) -> &ClientWatch {
        self
    }
}

impl Watched for LoaderContext {
    fn watch(&self) -> &ClientWatch {
        &self.watch
    }
}

impl ClientContext for ClientWatch {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.on_error(&error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.on_log(level, fac, message);
    }
}

impl ConsumerContext for ClientWatch {}

pub struct LoaderContext {
    resolver: Box<StartResolver>,
    events: Mutex<Vec<Assignment>>,
    pub watch: ClientWatch,
}

impl LoaderContext {
    pub fn new(resolver: Box<StartResolver>, brokers: &str) -> Self {
        Self {
            resolver,
            events: Mutex::new(Vec::new()),
            watch: ClientWatch::new(brokers),
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

impl ClientContext for LoaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.watch.on_error(&error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.watch.on_log(level, fac, message);
    }
}

impl ConsumerContext for LoaderContext {
    /// Under the cooperative protocol (the default) a rebalance names only the partitions that
    /// move: they are added to or taken from the assignment, and every other partition keeps
    /// its buffers and its commit in flight. Under an eager protocol (a job may ask for one)
    /// every partition is revoked, then the new set assigned.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        let parts: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let none = TopicPartitionList::new();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let give_up = |reason: String| {
                    if cooperative {
                        let _ = consumer.incremental_assign(&none);
                    } else {
                        let _ = consumer.assign(&none);
                    }
                    self.push(Assignment::Failed(reason));
                };
                let offsets = match (self.resolver)(&parts) {
                    Ok(o) => o,
                    Err(e) => return give_up(e.to_string()),
                };
                let mut list = TopicPartitionList::new();
                for ((t, p), o) in parts.iter().zip(&offsets) {
                    if let Err(e) = list.add_partition_offset(t, *p, *o) {
                        return give_up(format!("positioning {t}/{p} at {o:?}: {e}"));
                    }
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(&list)
                } else {
                    consumer.assign(&list)
                };
                if let Err(e) = assigned {
                    self.push(Assignment::Failed(format!("assign failed: {e}")));
                    return;
                }
                tracing::info!(partitions = ?parts, cooperative, "assigned");
                self.push(Assignment::Assigned(
                    parts.into_iter().zip(offsets).collect(),
                ));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?parts, cooperative, "revoked");
                self.push(Assignment::Revoked(parts));
                if cooperative {
                    let _ = consumer.incremental_unassign(tpl);
                } else {
                    let _ = consumer.unassign();
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
                self.push(Assignment::Lost);
            }
        }
    }
}

/// What a consumer needs of a job.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub brokers: &'a str,
    pub group_id: &'a str,
    /// librdkafka properties passed through (`source.properties`).
    pub properties: &'a std::collections::BTreeMap<String, String>,
    /// The loader's buffer budget (librdkafka's prefetch is kept to a share of it).
    pub max_buffered_bytes: u64,
}

/// The consumer configuration: the job's pass-through properties first, then the invariants
/// the exactly-once protocol relies on.
pub fn client_config(job: Settings<'_>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    // librdkafka logs only what this level lets through (by default, what the `log` crate
    // would, which sluice does not use: nothing). Connection failures are logged at error
    // level; the contexts read them (see `ClientWatch::on_log`).
    cfg.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    // Defaults a job may override. librdkafka backs off fetching for a whole second when the
    // local queue is over its threshold, which a loader that decodes between polls hits all the
    // time: a short backoff keeps the pipe full (measured: 2.8x the end-to-end throughput).
    cfg.set("fetch.queue.backoff.ms", "20");
    // librdkafka's prefetch counts against the process's memory as much as our buffers do:
    // keep it to an eighth of the buffer budget (librdkafka's defaults, 64 MiB queued plus
    // 50 MiB fetch responses, would double a 64 MiB budget).
    let prefetch_kib = prefetch_kib(job.max_buffered_bytes);
    cfg.set("queued.max.messages.kbytes", prefetch_kib.to_string());
    cfg.set("fetch.max.bytes", (prefetch_kib * 1024).to_string());
    for (k, v) in job.properties {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", job.brokers)
        .set("group.id", job.group_id)
        // The manifest holds the offsets; the group offset is advisory and written by hand
        // after each manifest commit.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // Only committed transactional records are loaded: aborted ones and transaction markers
        // are offsets that hold no record (the entry records them as such), and a transaction
        // still open is not read past (its first offset is the partition's end for now).
        .set("isolation.level", "read_committed")
        // A start offset Kafka no longer has is a retention gap: report it, never skip it.
        .set("auto.offset.reset", "error")
        // A protocol the rebalance callback knows: cooperative-sticky (KIP-429, the default:
        // only the partitions that move are revoked) or the eager range/roundrobin ones.
        .set(
            "partition.assignment.strategy",
            assignment_strategy(job.properties.get("partition.assignment.strategy")),
        );
    cfg
}

/// The assignment strategy: cooperative-sticky unless the job names the eager ones (`range`,
/// `roundrobin`, or both); librdkafka cannot mix the two kinds in one group member.
pub fn assignment_strategy(asked: Option<&String>) -> &'static str {
    match asked.map(|s| s.replace(' ', "")) {
        Some(s) if s == "range" => "range",
        Some(s) if s == "roundrobin" => "roundrobin",
        Some(s) if s == "range,roundrobin" || s == "roundrobin,range" => "range,roundrobin",
        _ => "cooperative-sticky",
    }
}

/// librdkafka's prefetch limit for a buffer budget: an eighth of it, between 4 and 64 MiB.
pub fn prefetch_kib(max_buffered_bytes: u64) -> u64 {
    (max_buffered_bytes / 8 / 1024).clamp(4 * 1024, 64 * 1024)
}

pub fn create_consumer(
    job: Settings<'_>,
    ctx: LoaderContext,
) -> Result<Arc<BaseConsumer<LoaderContext>>> {
    let consumer: BaseConsumer<LoaderContext> = client_config(job)
        .create_with_context(ctx)
        .map_err(|source| LoadError::Kafka {
            context: format!("creating a consumer for {}", job.brokers),
            source,
        })?;
    Ok(Arc::new(consumer))
}

/// A request to the broker, asked in slices of a second until it answers or `timeout` passes:
/// between slices, a fatal client error (authentication, TLS) ends the wait at once with that
/// error instead of a time-out.
fn ask<C: Watched, T>(
    consumer: &BaseConsumer<C>,
    timeout: Duration,
    context: impl Fn() -> String,
    mut call: impl FnMut(Duration) -> KafkaResult<T>,
) -> Result<T> {
    use rdkafka::error::RDKafkaErrorCode as C;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match call(left.min(Duration::from_secs(1))) {
            Ok(v) => return Ok(v),
            Err(source) => {
                // Serve the client's events (errors and logs arrive through its queue), so a
                // connection refused for its credentials is seen now. Only a consumer with
                // nothing assigned is polled: no message can be taken from under the loader.
                if consumer.assignment().is_ok_and(|a| a.count() == 0) {
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                consumer.context().watch().check()?;
                // No answer yet, or no broker reachable (restarting): ask again.
                let again = matches!(
                    source.rdkafka_error_code(),
                    Some(
                        C::OperationTimedOut
                            | C::RequestTimedOut
                            | C::BrokerTransportFailure
                            | C::AllBrokersDown
                    )
                );
                if !again || std::time::Instant::now() >= deadline {
                    let unreachable = matches!(
                        source.rdkafka_error_code(),
                        Some(C::BrokerTransportFailure | C::AllBrokersDown)
                    );
                    return Err(LoadError::Kafka {
                        context: if unreachable {
                            format!(
                                "{} (no broker answered at {}: check source.brokers, or --brokers, and that the broker is up)",
                                context(),
                                consumer.context().watch().brokers
                            )
                        } else {
                            context()
                        },
                        source,
                    });
                }
            }
        }
    }
}

/// Every partition of the job's topics, from the broker's metadata.
pub fn all_partitions<C: Watched>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<TopicPartition>> {
    let mut out = Vec::new();
    for topic in topics {
        let md = ask(
            consumer,
            timeout,
            || format!("fetching metadata of topic {topic}"),
            |t| consumer.fetch_metadata(Some(topic), t),
        )?;
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
pub fn watermarks<C: Watched>(
    consumer: &BaseConsumer<C>,
    parts: &[TopicPartition],
    timeout: Duration,
) -> Result<HashMap<TopicPartition, (i64, i64)>> {
    let mut out = HashMap::new();
    for (t, p) in parts {
        let wm = ask(
            consumer,
            timeout,
            || format!("fetching watermarks of {t}/{p}"),
            |left| consumer.fetch_watermarks(t, *p, left),
        )?;
        out.insert((t.clone(), *p), wm);
    }
    Ok(out)
}

/// A consumer for looking things up (metadata, watermarks), never for loading.
pub fn lookup_consumer(job: Settings<'_>) -> Result<BaseConsumer<ClientWatch>> {
    client_config(job)
        .create_with_context(ClientWatch::new(job.brokers))
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
    job: Settings<'_>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode as C;

    #[test]
    fn refused_credentials_and_certificates_are_fatal_a_broker_going_away_is_not() {
        let fatal = [
            (Some(C::Authentication), "SASL authentication error: Authentication failed during authentication due to invalid credentials"),
            (Some(C::SSL), "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"),
            (Some(C::BrokerTransportFailure), "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42"),
            (None, "sasl_ssl://k:9094/bootstrap: SASL authentication error: Authentication failed"),
        ];
        for (code, reason) in fatal {
            assert!(is_fatal_client_error(code, reason), "{reason}");
        }
        let transient = [
            (
                Some(C::BrokerTransportFailure),
                "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused",
            ),
            (Some(C::AllBrokersDown), "1/1 brokers are down"),
            (
                None,
                "127.0.0.1:9092/1: Disconnected (after 1200ms in state UP)",
            ),
            (Some(C::OperationTimedOut), "SSL handshake failed"),
        ];
        for (code, reason) in transient {
            assert!(!is_fatal_client_error(code, reason), "{reason}");
        }
    }

    #[test]
    fn a_fatal_error_is_kept_and_named_with_the_brokers() {
        let w = ClientWatch::new("k1:9094");
        assert!(w.check().is_ok());
        w.on_log(
            rdkafka::config::RDKafkaLogLevel::Warning,
            "FAIL",
            "SASL authentication error: x",
        );
        assert!(w.check().is_ok(), "a warning is not a failure");
        w.on_log(
            rdkafka::config::RDKafkaLogLevel::Error,
            "FAIL",
            "SASL authentication error: first",
        );
        w.on_log(
            rdkafka::config::RDKafkaLogLevel::Error,
            "FAIL",
            "SASL authentication error: second",
        );
        let e = w.check().unwrap_err().to_string();
        assert!(
            e.contains("k1:9094") && e.contains("first") && !e.contains("second"),
            "{e}"
        );
        assert!(e.contains("source.properties"), "{e}");
    }
}
