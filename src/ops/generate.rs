//! A generator of realistic payment events (about 250 bytes of JSON, 10 fields), for the demo,
//! the tests and the benchmark. Deterministic for a seed; ids are unique per run index.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    /// Event ids are `evt_{first_id + i}` for i in 0..count.
    pub first_id: u64,
    pub count: u64,
    /// Records go to partition `id % partitions`...
    pub partitions: i32,
    /// ... or all to this one.
    pub only_partition: Option<i32>,
    /// Event times spread evenly over `[start_ms, start_ms + span_ms)`.
    pub start_ms: i64,
    pub span_ms: i64,
    /// Per mille of events moved up to `disorder_ms` back in time (out of order, late).
    pub disorder_permille: u32,
    pub disorder_ms: i64,
    /// Per mille of events replaced by malformed payloads.
    pub malformed_permille: u32,
    /// Event times drawn at random over the span instead of rising with the index.
    pub scatter: bool,
    pub seed: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            first_id: 0,
            count: 100_000,
            partitions: 4,
            only_partition: None,
            start_ms: 1_795_478_400_000, // 2026-11-24T00:00:00Z
            span_ms: 3 * 3_600_000,
            disorder_permille: 50,
            disorder_ms: 20 * 60_000,
            malformed_permille: 0,
            scatter: false,
            seed: 7,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const CURRENCIES: [&str; 6] = ["EUR", "USD", "GBP", "CHF", "SEK", "PLN"];
const STATUSES: [&str; 4] = ["AUTHORIZED", "CAPTURED", "REFUNDED", "DECLINED"];
const METHODS: [&str; 4] = ["card", "sepa_debit", "wallet", "bank_transfer"];
const COUNTRIES: [&str; 8] = ["DE", "FR", "NL", "GB", "US", "SE", "PL", "CH"];

/// One generated record: partition, key, payload, and whether it is malformed.
pub struct GenRecord {
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    pub malformed: bool,
}

/// Generates the records of `spec`, in order, calling `f` for each.
pub fn generate(spec: &GenSpec, mut f: impl FnMut(GenRecord)) {
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut payload = Vec::with_capacity(320);
    for i in 0..spec.count {
        let id = spec.first_id + i;
        let base =
            spec.start_ms + (i as i128 * spec.span_ms as i128 / spec.count.max(1) as i128) as i64;
        let mut t = if spec.scatter {
            spec.start_ms + rng.below(spec.span_ms.max(1) as u64) as i64
        } else {
            base
        };
        if (rng.below(1000) as u32) < spec.disorder_permille {
            t -= rng.below(spec.disorder_ms.max(1) as u64) as i64;
            t = t.max(spec.start_ms);
        }
        let partition = spec
            .only_partition
            .unwrap_or((id % spec.partitions.max(1) as u64) as i32);
        let malformed = (rng.below(1000) as u32) < spec.malformed_permille;
        payload.clear();
        if malformed {
            let kind = rng.below(4);
            let text = match kind {
                0 => format!("{{\"event_id\":\"evt_{id:012}\",\"amount\":"),
                1 => format!("{{\"event_id\":\"evt_{id:012}\",\"amount\":\"not-a-number\",\"payment_id\":\"p\",\"merchant_id\":\"m\",\"customer_id\":\"c\",\"currency\":\"EUR\",\"status\":\"CAPTURED\",\"method\":\"card\",\"country\":\"DE\",\"created_at\":\"2026-11-24T00:00:00Z\"}}"),
                2 => "<html>502 Bad Gateway</html>".to_string(),
                _ => format!("{{\"event_id\":\"evt_{id:012}\"}}"),
            };
            payload.extend_from_slice(text.as_bytes());
        } else {
            use std::io::Write;
            let ts = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t).unwrap_or_default();
            let cents = 100 + rng.below(500_000);
            let _ = write!(
                payload,
                "{{\"event_id\":\"evt_{id:012}\",\"payment_id\":\"pay_{:016x}\",\"merchant_id\":\"mer_{:05}\",\"customer_id\":\"cus_{:010}\",\"amount\":\"{}.{:02}\",\"currency\":\"{}\",\"status\":\"{}\",\"method\":\"{}\",\"country\":\"{}\",\"created_at\":\"{}\"}}",
                rng.next(),
                rng.below(20_000),
                rng.below(10_000_000_000),
                cents / 100,
                cents % 100,
                CURRENCIES[rng.below(6) as usize],
                STATUSES[rng.below(4) as usize],
                METHODS[rng.below(4) as usize],
                COUNTRIES[rng.below(8) as usize],
                ts.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            );
        }
        f(GenRecord {
            partition,
            key: format!("evt_{id:012}"),
            payload: payload.clone(),
            malformed,
        });
    }
}

/// Counts failed deliveries, and keeps the first one's error.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first: std::sync::OnceLock<KafkaError>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let _ = self.first.set(e.clone());
        }
    }
}

/// Creates `topic` with `partitions` partitions (an existing topic is an error).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for r in results {
        if let Err((_, code)) = r {
            return Err(KafkaError::AdminOp(code));
        }
    }
    Ok(())
}

/// Produces the records of `spec` to `topic`, every one acknowledged; returns how many were
/// malformed.
pub fn produce(brokers: &str, topic: &str, spec: &GenSpec) -> Result<u64, KafkaError> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "all")
        // A retry after a broker restart must not write a record twice.
        .set("enable.idempotence", "true")
        .create_with_context(Deliveries::default())?;
    let mut malformed = 0;
    let mut failed: Option<KafkaError> = None;
    generate(spec, |r| {
        if failed.is_some() {
            return;
        }
        malformed += r.malformed as u64;
        let mut record = BaseRecord::to(topic)
            .partition(r.partition)
            .key(&r.key)
            .payload(&r.payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    producer.flush(Duration::from_secs(120))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(producer
            .context()
            .first
            .get()
            .cloned()
            .unwrap_or(KafkaError::MessageProduction(RDKafkaErrorCode::Fail)));
    }
    Ok(malformed)
}
