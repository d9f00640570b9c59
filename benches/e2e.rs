//! `make bench`: end-to-end throughput, ceilings measured in the same run on the same data,
//! freshness, memory and resume cost. Prints a table of medians and writes
//! `target/bench/latest.json`. Needs a broker (`SLUICE_TEST_BROKERS`, set by `make bench`).
//! `SLUICE_BENCH_BASELINE=/path/to/an/older/sluice` (`make bench BASELINE=…`) also times that
//! binary, taking turns with this one on the same topic, and prints the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::json::ReaderBuilder;
use parquet::arrow::ArrowWriter;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice::config::EventTime;
use sluice::load::{CHUNK_BYTES, CHUNK_RECORDS};
use sluice::ops::generate::{generate, GenSpec};
use sluice::record::buffer::{DecodedChunk, PartitionBuffer};
use sluice::record::decode::{ChunkDecoder, RawChunk};
use sluice::record::schema::TableSchema;
use sluice::record::schema::TimeFormat;

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Ctx {
    brokers: String,
    work: tempfile::TempDir,
    sluice: PathBuf,
}

impl Ctx {
    fn topic(&self, name: &str, partitions: i32) -> String {
        let t = format!("bench-{name}-{}", std::process::id());
        rt().block_on(sluice::ops::generate::create_topic(
            &self.brokers,
            &t,
            partitions,
        ))
        .unwrap();
        t
    }

    fn job(&self, name: &str, topic: &str, extra: &str) -> PathBuf {
        self.job_with(
            name,
            topic,
            &repo().join("schemas/payment.avsc"),
            "field = \"created_at\"",
            extra,
        )
    }

    /// A job on `topic` with schema file `schema` and `event_time` keys `event_time`.
    fn job_with(
        &self,
        name: &str,
        topic: &str,
        schema: &Path,
        event_time: &str,
        extra: &str,
    ) -> PathBuf {
        let path = self.work.path().join(format!("{name}.toml"));
        let table = self.work.path().join(name);
        let _ = std::fs::remove_dir_all(&table);
        std::fs::write(
            &path,
            format!(
                r#"
[source]
brokers = "{}"
topics = ["{topic}"]
group_id = "bench-{name}"
[source.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[schema]
file = "{}"
[event_time]
{event_time}
[storage]
url = "{}"
{extra}
"#,
                self.brokers,
                schema.display(),
                table.display()
            ),
        )
        .unwrap();
        path
    }

    /// Runs `sluice ARGS` under GNU time: (wall s, cpu s, peak RSS KiB, stdout).
    fn timed(&self, args: &[&str], job: &Path) -> (f64, f64, f64, String) {
        self.timed_binary(&self.sluice, args, job)
    }

    fn timed_binary(&self, sluice: &Path, args: &[&str], job: &Path) -> (f64, f64, f64, String) {
        let out = Command::new("/usr/bin/time")
            .args(["-f", "TIME %e %U %S %M"])
            .arg(sluice)
            .args(args)
            .arg("--job")
            .arg(job)
            .env("SLUICE_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "sluice {args:?} failed: {err}");
        let line = err.lines().rev().find(|l| l.starts_with("TIME ")).unwrap();
        let f: Vec<f64> = line[5..].split(' ').map(|x| x.parse().unwrap()).collect();
        (
            f[0],
            f[1] + f[2],
            f[3],
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }
}

fn payloads(spec: &GenSpec) -> (Vec<Vec<u8>>, u64) {
    let mut v = Vec::with_capacity(spec.count as usize);
    let mut bytes = 0;
    generate(spec, |r| {
        bytes += r.payload.len() as u64;
        v.push(r.payload);
    });
    (v, bytes)
}

/// The payment events of `json` as the Confluent wire format (schema id 1), encoded here by
/// hand from the Avro spec (zig-zag varints, length-prefixed strings, big-endian two's
/// complement decimals), not by sluice's or arrow-avro's code.
fn confluent_avro(json: &[Vec<u8>]) -> Vec<Vec<u8>> {
    fn long(o: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            o.push((z as u8) | 0x80);
            z >>= 7;
        }
        o.push(z as u8);
    }
    fn bytes(o: &mut Vec<u8>, b: &[u8]) {
        long(o, b.len() as i64);
        o.extend_from_slice(b);
    }
    let symbol = |list: &[&str], v: &Value| list.iter().position(|s| v == s).unwrap() as i64;
    json.iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(p).unwrap();
            let mut o = vec![0, 0, 0, 0, 1];
            let s = |k: &str| v[k].as_str().unwrap().as_bytes();
            bytes(&mut o, s("event_id"));
            bytes(&mut o, s("payment_id"));
            bytes(&mut o, s("merchant_id"));
            let opt = |o: &mut Vec<u8>, k: &str| match v[k].as_str() {
                Some(x) => {
                    long(o, 1);
                    bytes(o, x.as_bytes());
                }
                None => long(o, 0),
            };
            opt(&mut o, "customer_id");
            let cents: i64 = v["amount"]
                .as_str()
                .unwrap()
                .replace('.', "")
                .parse()
                .unwrap();
            let be = cents.to_be_bytes();
            let skip = be
                .windows(2)
                .take_while(|w| (w[0] == 0 && w[1] < 0x80) || (w[0] == 0xff && w[1] >= 0x80))
                .count();
            bytes(&mut o, &be[skip..]);
            bytes(&mut o, s("currency"));
            long(
                &mut o,
                symbol(
                    &["AUTHORIZED", "CAPTURED", "REFUNDED", "DECLINED"],
                    &v["status"],
                ),
            );
            long(
                &mut o,
                symbol(
                    &["card", "sepa_debit", "wallet", "bank_transfer"],
                    &v["method"],
                ),
            );
            opt(&mut o, "country");
            bytes(&mut o, s("created_at"));
            o
        })
        .collect()
}

/// Produces `payloads` to `topic`, payload `i` to partition `i % partitions` (as `generate`
/// spreads the JSON events), every one acknowledged.
fn produce_payloads(brokers: &str, topic: &str, partitions: i32, payloads: &[Vec<u8>]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    for (i, body) in payloads.iter().enumerate() {
        let mut rec = BaseRecord::<(), _>::to(topic)
            .partition(i as i32 % partitions)
            .payload(body);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

/// The second data shape (`benches/shapes/sensor.avsc`): integers, doubles, a float, a
/// boolean, a nullable nested record, an array of strings, epoch-millisecond event times over
/// 48 hours with 5% of events up to 3 h late. About 220 B of JSON an event.
fn sensor_payloads(count: u64, start_ms: i64) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let span = 48 * 3_600_000i64;
    (0..count)
        .map(|i| {
            let r = next();
            let mut t = start_ms + (i as i64 * span) / count as i64;
            if r % 20 == 0 {
                t -= (next() % (3 * 3_600_000)) as i64;
            }
            let humidity = if r % 7 == 0 {
                "null".to_string()
            } else {
                format!("{:.2}", 20.0 + (r % 6000) as f64 / 100.0)
            };
            let firmware = if r % 3 == 0 {
                "null".to_string()
            } else {
                format!(
                    r#"{{"version":"2.{}.{}","build":{}}}"#,
                    r % 9,
                    (r >> 8) % 20,
                    1000 + (r >> 16) % 9000
                )
            };
            let tags = ["\"indoor\"", "\"outdoor\",\"roof\"", "", "\"lab\",\"cold\",\"eu\""]
                [(r >> 24) as usize % 4];
            format!(
                r#"{{"reading_id":"rd_{i}","device_id":{},"seq":{},"temperature":{:.3},"humidity":{humidity},"battery":{:.2},"ok":{},"firmware":{firmware},"tags":[{tags}],"measured_at":{t}}}"#,
                100_000 + r % 5000,
                i % 100_000,
                -10.0 + (r % 50_000) as f64 / 1000.0,
                (r % 100) as f64 / 100.0,
                r % 11 != 0,
            )
            .into_bytes()
        })
        .collect()
}

/// Scale-out: `k` continuous loaders in one group on `topic` (holding `events` events), from
/// starting them to the manifest covering every offset (group joins included). Returns
/// (events/s, entries published, lost races for an entry, partitions fenced).
fn scale_out(ctx: &Ctx, topic: &str, events: u64, k: usize) -> (f64, u64, u64, u64) {
    let name = format!("scale-{k}");
    let job = ctx.job(&name, topic, "[commit]\ninterval = \"2s\"\n");
    let t = Instant::now();
    let children: Vec<std::process::Child> = (0..k)
        .map(|_| {
            Command::new(&ctx.sluice)
                .args(["run", "--job"])
                .arg(&job)
                .env("SLUICE_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let j = sluice::config::Job::load(&job).unwrap();
    let manifest = sluice::open_manifest(&j).unwrap();
    let rt = rt();
    loop {
        if let Ok(s) = rt.block_on(manifest.load()) {
            let done: i64 = s.partitions.iter().filter_map(|p| p.end()).sum();
            if done as u64 >= events {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "scale-out {k} stalled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = t.elapsed().as_secs_f64();
    for c in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let (mut commits, mut conflicts, mut fenced) = (0, 0, 0);
    for c in children {
        let out = c.wait_with_output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            let g = |k: &str| v[k].as_u64().unwrap_or(0);
            commits += g("commits");
            conflicts += g("conflicts");
            fenced += g("fenced");
        }
    }
    (events as f64 / wall, commits, conflicts, fenced)
}

/// sluice's payload decoding alone (chunks of 8,192, one core): events/s.
fn decode_only(dec: &ChunkDecoder, data: &[Vec<u8>]) -> f64 {
    let t = Instant::now();
    let mut rows = 0;
    let mut chunk = RawChunk::default();
    for (i, part) in data.chunks(CHUNK_RECORDS).enumerate() {
        chunk.clear();
        for (k, p) in part.iter().enumerate() {
            chunk.push((i * CHUNK_RECORDS + k) as i64, None, None, Some(p));
        }
        let d = dec.decode(&chunk, "t", 0);
        assert!(d.dead.is_empty(), "{:?}", d.dead.first());
        rows += d.batch.map_or(0, |b| b.num_rows());
    }
    assert_eq!(rows, data.len());
    data.len() as f64 / t.elapsed().as_secs_f64()
}

/// arrow-avro alone: the Confluent-framed datums of `avro` (their 5-byte prefix skipped)
/// through one decoder, flushed every 8,192 rows, one core: events/s. What sluice's Avro path
/// (framing, one decoder per writer id, rows back in record order, Arrow types of the table)
/// adds is the difference to its decode-only figure.
fn arrow_avro_alone(avsc: &str, avro: &[Vec<u8>]) -> f64 {
    use arrow_avro::reader::{DecoderMode, ReaderBuilder};
    use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
    let t = Instant::now();
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(1), AvroSchema::new(avsc.to_string()))
        .unwrap();
    let mut dec = ReaderBuilder::new()
        .with_batch_size(CHUNK_RECORDS)
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Id(1))
        .with_decoder_mode(DecoderMode::UnframedDatum)
        .build_decoder()
        .unwrap();
    let mut rows = 0;
    for chunk in avro.chunks(CHUNK_RECORDS) {
        for p in chunk {
            dec.decode(&p[5..]).unwrap();
        }
        rows += dec.flush().unwrap().map_or(0, |b| b.num_rows());
    }
    assert_eq!(rows, avro.len());
    avro.len() as f64 / t.elapsed().as_secs_f64()
}

/// Ceiling (a): `examples/bare_consumer.rs`, a minimal consumer in a process of its own
/// (built by `make bench`), timed like sluice, from process start to exit. Returns (events/s
/// start to exit, events/s first to last record).
fn bare_process(brokers: &str, topic: &str, partitions: i32, count: u64) -> (f64, f64) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples/bare_consumer"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: `make bench` builds it (cargo build --release --examples)",
        bin.display()
    );
    let t = Instant::now();
    let out = Command::new(&bin)
        .args([brokers, topic, &partitions.to_string(), &count.to_string()])
        .output()
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "bare_consumer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["events"], count, "{r}");
    (
        count as f64 / wall,
        count as f64 / r["first_to_last_s"].as_f64().unwrap(),
    )
}

/// The bench's former ceiling (a): a consumer inside the bench process with librdkafka's
/// defaults, timed from `assign` to the last record. Kept to show what made it slower than a
/// minimal consumer run separately.
fn in_process_consumer(brokers: &str, topic: &str, partitions: i32, count: u64) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let t = Instant::now();
    let (mut n, mut sum) = (0u64, 0u64);
    while n < count {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            n += 1;
            sum += m.payload().map(|p| p.len() as u64).unwrap_or(0);
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "bare consumer stalled at {n}"
        );
    }
    std::hint::black_box(sum);
    count as f64 / t.elapsed().as_secs_f64()
}

/// Ceiling (b): arrow-json decode + parquet zstd encode of the same payloads, libraries alone
/// (zstd level 1, the job default, as in every figure here).
fn libraries_alone(schema: &TableSchema, data: &[Vec<u8>]) -> f64 {
    let t = Instant::now();
    let mut dec = ReaderBuilder::new(schema.payload.clone())
        .with_batch_size(8192)
        .build_decoder()
        .unwrap();
    let props =
        sluice::record::encode::writer_properties(sluice::config::Compression::Zstd(1), 1_000_000);
    let mut w = ArrowWriter::try_new(Vec::new(), schema.payload.clone(), Some(props)).unwrap();
    for chunk in data.chunks(8192) {
        for p in chunk {
            dec.decode(p).unwrap();
        }
        if let Some(b) = dec.flush().unwrap() {
            w.write(&b).unwrap();
        }
    }
    std::hint::black_box(w.into_inner().unwrap().len());
    data.len() as f64 / t.elapsed().as_secs_f64()
}

/// sluice's own decode → window → encode path, in memory, on one core.
fn sluice_in_memory(schema: &TableSchema, data: &[Vec<u8>], partitions: usize) -> f64 {
    let dec = ChunkDecoder::new(
        schema.clone(),
        EventTime::Field {
            name: "created_at".into(),
            format: TimeFormat::Rfc3339,
        },
    );
    let window = sluice::record::window::WindowSize::from_millis(3_600_000).unwrap();
    let props =
        sluice::record::encode::writer_properties(sluice::config::Compression::Zstd(1), 1_000_000);
    let t = Instant::now();
    let mut buffers: Vec<PartitionBuffer> = (0..partitions).map(|_| Default::default()).collect();
    let mut chunks: Vec<RawChunk> = (0..partitions).map(|_| RawChunk::default()).collect();
    let mut offsets = vec![0i64; partitions];
    let flush = |p: usize, chunk: &mut RawChunk, buffer: &mut PartitionBuffer| {
        let d = dec.decode(chunk, "t", p as i32);
        chunk.clear();
        buffer.push(DecodedChunk::new(d, window).unwrap());
    };
    for (i, payload) in data.iter().enumerate() {
        let p = i % partitions;
        chunks[p].push(offsets[p], None, None, Some(payload));
        offsets[p] += 1;
        if chunks[p].len() >= CHUNK_RECORDS || chunks[p].bytes() >= CHUNK_BYTES {
            flush(p, &mut chunks[p], &mut buffers[p]);
        }
    }
    for (p, chunk) in chunks.iter_mut().enumerate() {
        flush(p, chunk, &mut buffers[p]);
    }
    let mut bytes = 0;
    for buffer in &buffers {
        for (_, w) in buffer.windows() {
            let batches = buffer.window_batches(w).unwrap();
            bytes += sluice::record::encode::encode(&schema.table, &batches, &props)
                .unwrap()
                .len();
        }
    }
    std::hint::black_box(bytes);
    data.len() as f64 / t.elapsed().as_secs_f64()
}

/// When the watcher saw which committed end per partition.
type Observed = (Instant, Vec<i64>);

/// Freshness: a steady producer and a continuous loader with a 1 s commit interval; the delay
/// from producing an offset to its being listed in the manifest.
fn freshness(ctx: &Ctx, rate: u64, secs: u64) -> (f64, f64) {
    let partitions = 8;
    let topic = ctx.topic("fresh", partitions);
    let job = ctx.job("fresh", &topic, "[commit]\ninterval = \"1s\"\n");
    let mut child = Command::new(&ctx.sluice)
        .args(["run", "--job"])
        .arg(&job)
        .env("SLUICE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Watch the manifest.
    let manifest = sluice::open_manifest(&sluice::config::Job::load(&job).unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<std::sync::Mutex<Vec<Observed>>> = Default::default();
    let watcher = {
        let (stop, seen, topic) = (stop.clone(), seen.clone(), topic.clone());
        std::thread::spawn(move || {
            let rt = rt();
            let mut state = rt.block_on(manifest.load()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                rt.block_on(manifest.refresh(&mut state)).unwrap();
                let ends = (0..partitions)
                    .map(|p| {
                        state
                            .partition(&topic, p)
                            .and_then(|s| s.end())
                            .unwrap_or(0)
                    })
                    .collect();
                seen.lock().unwrap().push((Instant::now(), ends));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(8)); // group join
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &ctx.brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut produced = vec![0i64; partitions as usize];
    let mut ticks: Vec<(Instant, Vec<i64>)> = Vec::new();
    let per_tick = rate / 10;
    let start = Instant::now();
    let mut id = 0u64;
    let spec = GenSpec {
        count: 1,
        ..Default::default()
    };
    for tick in 0..secs * 10 {
        let due = start + Duration::from_millis(tick * 100);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        for _ in 0..per_tick {
            let p = (id % partitions as u64) as i32;
            generate(
                &GenSpec {
                    first_id: id,
                    ..spec.clone()
                },
                |r| {
                    let _ = producer.send(
                        BaseRecord::to(&topic)
                            .partition(p)
                            .key(&r.key)
                            .payload(&r.payload),
                    );
                },
            );
            produced[p as usize] += 1;
            id += 1;
        }
        producer.poll(Duration::ZERO);
        producer.flush(Duration::from_secs(5)).unwrap();
        ticks.push((Instant::now(), produced.clone()));
    }
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let seen = seen.lock().unwrap();
    let mut delays = Vec::new();
    for (t0, counts) in &ticks {
        for p in 0..partitions as usize {
            if let Some((t1, _)) = seen
                .iter()
                .find(|(t1, ends)| t1 >= t0 && ends[p] >= counts[p])
            {
                delays.push(t1.duration_since(*t0).as_secs_f64());
            } else {
                delays.push(f64::INFINITY);
            }
        }
    }
    (percentile(delays.clone(), 0.5), percentile(delays, 0.99))
}

/// Resume cost: a table with `entries` manifest entries (checkpoint every 100), then
/// `run --once` with nothing new: start-up, manifest read, first fetch, exit.
/// A loader's start on a table of `entries` entries, whose Delta log is up to date (written
/// first by `sluice delta sync`, timed too): (with the manifest's checkpoint hint, without it,
/// the Delta log's catch-up from nothing), then the Iceberg figures of [`IcebergResume`].
fn resume(ctx: &Ctx, entries: u64) -> (f64, f64, f64, IcebergResume) {
    let topic = ctx.topic("resume", 1);
    sluice::ops::generate::produce(
        &ctx.brokers,
        &topic,
        &GenSpec {
            count: entries,
            partitions: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let job = ctx.job("resume", &topic, "");
    let parsed = sluice::config::Job::load(&job).unwrap();
    let manifest = sluice::open_manifest(&parsed).unwrap();
    let log = manifest.path("_sluice/log");
    let dir = PathBuf::from("/").join(log.as_ref());
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = sluice::table::state::TableState::default();
    for seq in 1..=entries {
        let e = sluice::table::entry::Entry {
            format: 1,
            seq,
            kind: sluice::table::entry::EntryKind::Append,
            commit_id: format!("c{seq}"),
            writer: "bench".into(),
            committed_at_ms: 0,
            ranges: vec![sluice::table::entry::OffsetRange::new(
                &topic,
                0,
                seq as i64 - 1,
                seq as i64,
            )],
            files: vec![sluice::table::entry::DataFile {
                path: format!("date=2026-11-24/hour=00/part-{topic}-0-{seq:020}-x.parquet"),
                bytes: 1000,
                rows: 1,
                topic: topic.clone(),
                partition: 0,
                first_offset: seq as i64 - 1,
                next_offset: seq as i64,
                window_start_ms: 0,
                window_end_ms: 3_600_000,
                min_event_ms: 0,
                max_event_ms: 0,
                schema_fingerprint: parsed.schema.fingerprint.clone(),
                stats: None,
                spans: vec![],
                late: false,
            }],
            dead_letters: vec![],
            removed: vec![],
            schema: None,
            watermarks: vec![],
            closed_through_ms: None,
        };
        std::fs::write(
            dir.join(format!("{seq:020}.json")),
            serde_json::to_vec(&e).unwrap(),
        )
        .unwrap();
        state.apply(&e).unwrap();
        if seq % 100 == 0 && seq + 100 > entries {
            rt().block_on(manifest.write_checkpoint(&state)).unwrap();
        }
    }
    // The table's Delta log, from nothing: what a table older than its log costs once.
    let (catch_up, _, _, _) = ctx.timed(&["delta", "sync"], &job);
    let mut walls = Vec::new();
    for _ in 0..3 {
        let (wall, _, _, out) = ctx.timed(&["run", "--once"], &job);
        let stats: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(stats["commits"], 0);
        walls.push(wall);
    }
    // The same with the checkpoint hint removed: the checkpoints folder is listed instead.
    let _ = std::fs::remove_file(
        PathBuf::from("/").join(manifest.path("_sluice/_last_checkpoint").as_ref()),
    );
    let (no_hint, _, _, _) = ctx.timed(&["run", "--once"], &job);
    let iceberg = iceberg_resume(ctx, &job, &topic, entries, &mut state);
    (median(walls), no_hint, catch_up, iceberg)
}

/// The Iceberg projection on a long table: its start (a table of `entries` entries turning
/// Iceberg on: one snapshot of every live file), then its catch-up on `behind` more entries
/// (a version each), then a start with nothing to project.
#[derive(Debug, Clone, Copy)]
struct IcebergResume {
    start_s: f64,
    behind: u64,
    catch_up_s: f64,
    resume_s: f64,
}

fn iceberg_resume(
    ctx: &Ctx,
    job: &Path,
    topic: &str,
    entries: u64,
    state: &mut sluice::table::state::TableState,
) -> IcebergResume {
    let text = std::fs::read_to_string(job).unwrap();
    let ice = job.with_file_name("resume-iceberg.toml");
    // The Iceberg metadata alone (the Delta log's catch-up is timed above).
    std::fs::write(
        &ice,
        format!("{text}\n[delta]\nenabled = false\n[iceberg]\nenabled = true\n"),
    )
    .unwrap();
    let parsed = sluice::config::Job::load(&ice).unwrap();
    let manifest = sluice::open_manifest(&parsed).unwrap();
    let dir = PathBuf::from("/").join(manifest.path("_sluice/log").as_ref());
    let (start_s, _, _, _) = ctx.timed(&["run", "--once"], &ice);
    // Entries the metadata lacks (another job wrote them with Iceberg off), one record and
    // one file each, after whatever the runs above committed.
    *state = rt().block_on(manifest.load()).unwrap();
    let head = state.seq;
    let end = state.partitions[0].end().unwrap_or(0);
    let behind = 1_000u64;
    sluice::ops::generate::produce(
        &ctx.brokers,
        topic,
        &GenSpec {
            count: behind,
            partitions: 1,
            first_id: entries,
            ..Default::default()
        },
    )
    .unwrap();
    let template = rt()
        .block_on(manifest.read_entry(entries))
        .unwrap()
        .unwrap();
    for (i, seq) in (head + 1..=head + behind).enumerate() {
        let offset = end + i as i64;
        let mut e = template.clone();
        e.seq = seq;
        e.commit_id = format!("c{seq}");
        e.committed_at_ms = seq as i64;
        e.ranges = vec![sluice::table::entry::OffsetRange::new(
            topic,
            0,
            offset,
            offset + 1,
        )];
        e.files[0].path = format!("date=2026-11-24/hour=00/part-{topic}-0-{offset:020}-x.parquet");
        e.files[0].first_offset = offset;
        e.files[0].next_offset = offset + 1;
        std::fs::write(
            dir.join(format!("{seq:020}.json")),
            serde_json::to_vec(&e).unwrap(),
        )
        .unwrap();
        state.apply(&e).unwrap();
    }
    rt().block_on(manifest.write_checkpoint(state)).unwrap();
    let (catch_up_s, _, _, _) = ctx.timed(&["run", "--once"], &ice);
    let (resume_s, _, _, _) = ctx.timed(&["run", "--once"], &ice);
    let latest = rt()
        .block_on(sluice::table::iceberg::load_latest(manifest.store()))
        .unwrap()
        .unwrap();
    assert_eq!(
        latest.meta.sluice_entry().map(|e| e.0),
        Some(head + behind),
        "the Iceberg metadata caught up"
    );
    IcebergResume {
        start_s,
        behind,
        catch_up_s,
        resume_s,
    }
}

/// The Iceberg projection: its start and catch-up on a long table ([`resume`]), and the commit
/// latency on moto S3 of one writer with the Delta log alone and with the Iceberg metadata too,
/// `turns` times each in alternation (medians).
fn iceberg_cases(ctx: &Ctx, turns: usize) -> Value {
    let entries = env_or("SLUICE_BENCH_RESUME_ENTRIES", 100_000u64);
    let (resume_s, _, delta_catch_up_s, ice) = resume(ctx, entries);
    let (moto, endpoint) = start_moto(ctx, "bench");
    let each = env_or("SLUICE_BENCH_COMMITS", 200u64);
    let (mut delta, mut both, mut sqlite) = (Vec::new(), Vec::new(), Vec::new());
    for turn in 0..turns {
        for (k, iceberg, catalog) in [
            (0, false, None),
            (1, true, None),
            (2, true, Some("sqlite:catalog.db")),
        ] {
            let name = format!("ice-commits-{turn}-{k}");
            let r = commit_rate(
                ctx,
                &moto,
                &endpoint,
                &name,
                1,
                each,
                (true, iceberg, catalog),
            );
            eprintln!("bench: commits, Iceberg {iceberg}, catalog {catalog:?}: {r}");
            [&mut delta, &mut both, &mut sqlite][k].push(r);
        }
    }
    let med =
        |v: &[Value], k: &str| median(v.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect());
    json!({
        "entries": entries,
        "resume_s": resume_s,
        "delta_log_from_nothing_s": delta_catch_up_s,
        "iceberg_start_s": ice.start_s,
        "iceberg_behind": ice.behind,
        "iceberg_catch_up_s": ice.catch_up_s,
        "iceberg_resume_s": ice.resume_s,
        "commits": each,
        "turns": turns,
        "delta_p50_ms": med(&delta, "latency_ms_p50"),
        "delta_iceberg_p50_ms": med(&both, "latency_ms_p50"),
        "delta_requests_per_commit": med(&delta, "requests_per_commit"),
        "delta_iceberg_requests_per_commit": med(&both, "requests_per_commit"),
        "delta_commits_per_s": med(&delta, "commits_per_s"),
        "delta_iceberg_commits_per_s": med(&both, "commits_per_s"),
        "delta_iceberg_sqlite_catalog_p50_ms": med(&sqlite, "latency_ms_p50"),
        "delta_iceberg_sqlite_catalog_commits_per_s": med(&sqlite, "commits_per_s"),
    })
}

/// A local S3 (moto, installed by `make bench`'s tools step): the server (killed on drop) and
/// the file its request log goes to.
struct Moto(std::process::Child, PathBuf);

impl Moto {
    /// Requests served so far (one line of its log each).
    fn requests(&self) -> usize {
        std::fs::read_to_string(&self.1)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" HTTP/1.1"))
            .count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts moto with a bucket `bucket`: the server and its endpoint.
fn start_moto(ctx: &Ctx, bucket: &str) -> (Moto, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = ctx.work.path().join("moto.log");
    let child = Command::new(repo().join(".tools/venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("moto_server: run `make bench`, which installs it");
    let server = Moto(child, log);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The server may accept connections a moment before it answers: retry the bucket's PUT.
    while Command::new(repo().join(".tools/venv/bin/python"))
        .args([
            "-c",
            "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT'))",
            &format!("{endpoint}/{bucket}"),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    (server, endpoint)
}

/// The manifest's commit rate on an S3-like store: `writers` threads, each a committer of its
/// own (as separate loader processes are) on one table in a moto bucket, each publishing
/// `each` entries back to back through the real stages (prepare: re-read the log; write:
/// upload one small file; publish: one create-only put of the next entry, re-read on a lost
/// race). With `delta` (`iceberg`), every commit also brings the table's Delta log (Iceberg
/// metadata) up to the manifest, as a loader does. Returns commits/s over all writers, commit latency p50/p99 (ms), the races
/// lost and the store requests per commit.
fn commit_rate(
    ctx: &Ctx,
    moto: &Moto,
    endpoint: &str,
    name: &str,
    writers: usize,
    each: u64,
    (delta, iceberg, catalog): (bool, bool, Option<&str>),
) -> Value {
    use sluice::table::commit::{Committer, Encoded, Outcome, Proposal};
    use sluice::table::entry::{DataFile, EntryKind, OffsetRange};
    let extra = format!(
        "[storage.options]\naws_endpoint = \"{endpoint}\"\naws_allow_http = \"true\"\n\
         aws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\naws_region = \"us-east-1\"\n\
         [delta]\nenabled = {delta}\n[iceberg]\nenabled = {iceberg}\n{}",
        catalog.map_or(String::new(), |c| format!("catalog = \"{c}\"\n"))
    );
    let path = ctx.job(name, "commits", &extra);
    let text = std::fs::read_to_string(&path).unwrap();
    let local = ctx.work.path().join(name);
    let text = text.replace(
        &format!("url = \"{}\"", local.display()),
        &format!("url = \"s3://bench/{name}\""),
    );
    assert!(
        text.contains("s3://"),
        "the job's table must be on moto: {text}"
    );
    std::fs::write(&path, text).unwrap();
    let job = sluice::config::Job::load(&path).unwrap();
    let requests_before = moto.requests();
    let start = Instant::now();
    let per_writer: Vec<(Vec<f64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let job = &job;
                s.spawn(move || {
                    let rt = Arc::new(rt());
                    let manifest = sluice::open_manifest(job).unwrap();
                    let log = sluice::open_delta(job, &manifest).unwrap();
                    let ice = sluice::open_iceberg(job, &manifest).unwrap();
                    let c = Committer::open(manifest, rt, format!("bench-{w}"))
                        .unwrap()
                        .with_table(sluice::schema_def(job).unwrap(), log)
                        .with_iceberg(ice);
                    let (mut latencies, mut lost) = (Vec::new(), 0u64);
                    for i in 0..each as i64 {
                        let t = Instant::now();
                        let mut range = OffsetRange::new("commits", w as i32, i, i + 1);
                        range.records = Some(1);
                        let proposal = Proposal {
                            range,
                            rows: 1,
                            dead_letters: 0,
                        };
                        let (prepared, refused) = c
                            .prepare(EntryKind::Append, vec![proposal], vec![])
                            .unwrap();
                        assert!(refused.is_empty(), "{refused:?}");
                        let file = DataFile {
                            path: format!("commits/w{w}-{i:08}.parquet"),
                            bytes: 0,
                            rows: 1,
                            topic: "commits".into(),
                            partition: w as i32,
                            first_offset: i,
                            next_offset: i + 1,
                            window_start_ms: 0,
                            window_end_ms: 3_600_000,
                            min_event_ms: 0,
                            max_event_ms: 0,
                            schema_fingerprint: job.schema.fingerprint.clone(),
                            stats: None,
                            spans: vec![],
                            late: false,
                        };
                        let written = prepared
                            .write(vec![file], vec![], |_| Ok(Encoded::new(vec![0u8; 100], 1)))
                            .unwrap();
                        match written.publish().unwrap() {
                            Outcome::Published {
                                entry, conflicts, ..
                            } => {
                                c.settle(&entry);
                                lost += u64::from(conflicts)
                            }
                            Outcome::Refused { refused, .. } => panic!("refused: {refused:?}"),
                        }
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    (latencies, lost)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    // Opening the table (a few reads per writer) is counted too.
    let requests = moto.requests() - requests_before;
    let lost: u64 = per_writer.iter().map(|(_, l)| l).sum();
    let all: Vec<f64> = per_writer.into_iter().flat_map(|(l, _)| l).collect();
    let commits = all.len() as f64;
    json!({
        "writers": writers,
        "delta_log": delta,
        "iceberg": iceberg,
        "commits": commits,
        "commits_per_s": commits / wall,
        "latency_ms_p50": percentile(all.clone(), 0.5),
        "latency_ms_p99": percentile(all, 0.99),
        "races_lost": lost,
        "requests_per_commit": requests as f64 / commits,
    })
}

/// One day of event time loaded by 96 scheduled runs (one every 15 minutes of event time, as
/// a continuous loader or a cron job leaves it: a file per partition per window per run), then
/// `sluice compact`: file counts, bytes and DuckDB query times before and after, and what the
/// compaction took.
fn compaction(ctx: &Ctx, events: u64, runs: usize) -> Value {
    let partitions = 8;
    let topic = ctx.topic("day", partitions);
    let job = ctx.job("day", &topic, "[compaction]\nenabled = false\n");
    let loads = 96u64;
    let per = events / loads;
    for i in 0..loads {
        sluice::ops::generate::produce(
            &ctx.brokers,
            &topic,
            &GenSpec {
                first_id: i * per,
                count: per,
                partitions,
                start_ms: 1_795_478_400_000 + (i * 15 * 60_000) as i64,
                span_ms: 15 * 60_000,
                seed: i,
                ..Default::default()
            },
        )
        .unwrap();
        ctx.timed(&["run", "--once"], &job);
    }
    let python = std::env::var("SLUICE_TEST_PYTHON").unwrap();
    let query = |job: &Path| -> Value {
        let files = Command::new(&ctx.sluice)
            .args(["files", "--job"])
            .arg(job)
            .output()
            .unwrap();
        let mut child = Command::new(&python)
            .arg(repo().join("benches/query.py"))
            .arg(runs.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&files.stdout)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let state = |job: &Path| {
        let j = sluice::config::Job::load(job).unwrap();
        rt().block_on(sluice::open_manifest(&j).unwrap().load())
            .unwrap()
    };
    let bytes = |s: &sluice::table::state::TableState| s.files.iter().map(|f| f.bytes).sum::<u64>();
    let before_state = state(&job);
    let before = query(&job);
    let (wall, cpu, rss, _) = ctx.timed(&["compact"], &job);
    let after_state = state(&job);
    let after = query(&job);
    assert_eq!(before["rows"], after["rows"]);
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    json!({
        "events": per * loads,
        "loads": loads,
        "windows": 24,
        "files_before": before_state.files.len(),
        "files_after": after_state.files.len(),
        "bytes_before": bytes(&before_state),
        "bytes_after": bytes(&after_state),
        "query_rollup_s_before": before["rollup_s"],
        "query_rollup_s_after": after["rollup_s"],
        "query_one_hour_s_before": before["one_hour_s"],
        "query_one_hour_s_after": after["one_hour_s"],
        "speedup_rollup": f(&before["rollup_s"]) / f(&after["rollup_s"]),
        "speedup_one_hour": f(&before["one_hour_s"]) / f(&after["one_hour_s"]),
        "compact_wall_s": wall,
        "compact_cpu_s": cpu,
        "compact_peak_rss_mib": rss / 1024.0,
    })
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let brokers =
        std::env::var("SLUICE_TEST_BROKERS").expect("run via `make bench`, which starts a broker");
    let events: u64 = env_or("SLUICE_BENCH_EVENTS", 1_000_000);
    let runs: usize = env_or("SLUICE_BENCH_RUNS", 5);
    let ctx = Ctx {
        brokers,
        work: tempfile::tempdir().unwrap(),
        sluice: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
    };
    let partitions = 8;
    let baseline = std::env::var_os("SLUICE_BENCH_BASELINE").map(PathBuf::from);
    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
    if only == "continuous" || only == "rolling" {
        // Only the continuous loader's cases (`rolling`: the rolling restart alone), merged
        // into the last full report.
        let path = repo().join("target/bench/latest.json");
        let mut report: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({}));
        let (slow, rolling) = if only == "rolling" {
            (report["slow_store"].clone(), rolling_cases(&ctx, runs))
        } else {
            continuous_cases(&ctx, baseline.as_deref(), runs)
        };
        report["slow_store"] = slow;
        report["rolling_restart"] = rolling;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        print_continuous(&report);
        return;
    }
    if only == "iceberg" {
        // The Iceberg projection's own figures, merged into the last full report.
        let path = repo().join("target/bench/latest.json");
        let mut report: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({}));
        report["iceberg"] = iceberg_cases(&ctx, runs.min(3));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!(
            "{}",
            serde_json::to_string_pretty(&report["iceberg"]).unwrap()
        );
        return;
    }
    eprintln!("bench: {events} events over {partitions} partitions, {runs} runs each");

    // The data: payment events over 48 hourly windows, 5% up to 20 minutes out of order.
    let spec = GenSpec {
        count: events,
        partitions,
        span_ms: 48 * 3_600_000,
        ..Default::default()
    };
    let topic = ctx.topic("e2e", partitions);
    sluice::ops::generate::produce(&ctx.brokers, &topic, &spec).unwrap();
    let (data, payload_bytes) = payloads(&spec);
    let schema = TableSchema::load(&repo().join("schemas/payment.avsc")).unwrap();

    let libs: Vec<f64> = (0..runs).map(|_| libraries_alone(&schema, &data)).collect();
    let ours: Vec<f64> = (0..runs)
        .map(|_| sluice_in_memory(&schema, &data, partitions as usize))
        .collect();
    eprintln!("bench: in-memory pipelines done");

    // The same events as Confluent-framed Avro, on a topic of their own; writer schema id 1 from
    // a schema directory (a registry is asked once per id: not a throughput factor).
    let avro = confluent_avro(&data);
    let avro_bytes: usize = avro.iter().map(Vec::len).sum();
    let avro_topic = ctx.topic("e2e-avro", partitions);
    produce_payloads(&ctx.brokers, &avro_topic, partitions, &avro);
    let ids = ctx.work.path().join("schema-ids");
    std::fs::create_dir_all(&ids).unwrap();
    std::fs::copy(repo().join("schemas/payment.avsc"), ids.join("1.avsc")).unwrap();
    let event_time = EventTime::Field {
        name: "created_at".into(),
        format: TimeFormat::Rfc3339,
    };
    let json_dec = ChunkDecoder::new(schema.clone(), event_time.clone());
    let avro_dec = ChunkDecoder::new(schema.clone(), event_time)
        .with_avro(
            sluice::config::PayloadFormat::ConfluentAvro,
            Some(&sluice::config::WriterSchemas::Directory(ids.clone())),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
    let (mut json_decode, mut avro_decode, mut avro_alone) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        json_decode.push(decode_only(&json_dec, &data));
        avro_decode.push(decode_only(&avro_dec, &avro));
        avro_alone.push(arrow_avro_alone(&schema.avsc, &avro));
    }
    let avro_job = ctx.job(
        "e2e-avro",
        &avro_topic,
        &format!("[schema.registry]\ndirectory = \"{}\"\n", ids.display()),
    );
    // The format joins the job's `[schema]` table (the section before `[event_time]`).
    let text = std::fs::read_to_string(&avro_job).unwrap().replacen(
        "\n[event_time]",
        "\nformat = \"confluent-avro\"\n[event_time]",
        1,
    );
    std::fs::write(&avro_job, text).unwrap();
    let (mut avro_rate, mut avro_cpu) = (vec![], vec![]);

    // The second shape, on a topic of its own, with its own bare-consumer ceiling.
    let sensor = sensor_payloads(events, spec.start_ms);
    let sensor_bytes: usize = sensor.iter().map(Vec::len).sum();
    let sensor_topic = ctx.topic("e2e-sensor", partitions);
    produce_payloads(&ctx.brokers, &sensor_topic, partitions, &sensor);
    let sensor_job = ctx.job_with(
        "e2e-sensor",
        &sensor_topic,
        &repo().join("benches/shapes/sensor.avsc"),
        "field = \"measured_at\"\nformat = \"epoch_millis\"",
        "",
    );
    let (mut sensor_rate, mut sensor_cpu, mut sensor_bare, mut sensor_files) =
        (vec![], vec![], vec![], 0.0);

    let job = ctx.job("e2e", &topic, "");
    let (mut rate, mut cpu, mut rss, mut files, mut commits) = (vec![], vec![], vec![], 0.0, 0.0);
    // The bare consumer and sluice take turns, so a drift of the machine or the broker over
    // the runs weighs on both sides of the ratio alike.
    let (mut bare, mut bare_first_last, mut in_process) = (Vec::new(), Vec::new(), Vec::new());
    let base_job = ctx.job("e2e-base", &topic, "");
    let (mut base_rate, mut base_cpu) = (vec![], vec![]);
    for _ in 0..runs {
        let (wall, first_last) = bare_process(&ctx.brokers, &topic, partitions, events);
        bare.push(wall);
        bare_first_last.push(first_last);
        in_process.push(in_process_consumer(
            &ctx.brokers,
            &topic,
            partitions,
            events,
        ));
        if let Some(b) = &baseline {
            let _ = std::fs::remove_dir_all(ctx.work.path().join("e2e-base"));
            let (wall, c, _, out) = ctx.timed_binary(b, &["run", "--once"], &base_job);
            let stats: Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(stats["rows"], events, "baseline: {stats}");
            base_rate.push(events as f64 / wall);
            base_cpu.push(c / (events as f64 / 1e6));
        }
        let _ = std::fs::remove_dir_all(ctx.work.path().join("e2e"));
        let (wall, c, r, out) = ctx.timed(&["run", "--once"], &job);
        let stats: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(stats["rows"], events, "{stats}");
        rate.push(events as f64 / wall);
        cpu.push(c / (events as f64 / 1e6));
        rss.push(r / 1024.0);
        files = stats["files"].as_f64().unwrap_or(0.0);
        commits = stats["commits"].as_f64().unwrap_or(0.0);
        let _ = std::fs::remove_dir_all(ctx.work.path().join("e2e-avro"));
        let (wall, c, _, out) = ctx.timed(&["run", "--once"], &avro_job);
        let stats: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(stats["rows"], events, "avro: {stats}");
        avro_rate.push(events as f64 / wall);
        avro_cpu.push(c / (events as f64 / 1e6));

        sensor_bare.push(bare_process(&ctx.brokers, &sensor_topic, partitions, events).0);
        let _ = std::fs::remove_dir_all(ctx.work.path().join("e2e-sensor"));
        let (wall, c, _, out) = ctx.timed(&["run", "--once"], &sensor_job);
        let stats: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(stats["rows"], events, "sensor: {stats}");
        sensor_rate.push(events as f64 / wall);
        sensor_cpu.push(c / (events as f64 / 1e6));
        sensor_files = stats["files"].as_f64().unwrap_or(0.0);
    }
    eprintln!("bench: end to end and bare consumer done");
    let mb = payload_bytes as f64 / events as f64 / 1e6;

    // Memory: 1,000 open windows x 8 partitions (scattered event times), 64 MiB budget.
    let mem_events = env_or("SLUICE_BENCH_MEM_EVENTS", 400_000u64);
    let mem_topic = ctx.topic("mem", partitions);
    sluice::ops::generate::produce(
        &ctx.brokers,
        &mem_topic,
        &GenSpec {
            count: mem_events,
            partitions,
            span_ms: 1000 * 3_600_000,
            scatter: true,
            seed: 11,
            ..Default::default()
        },
    )
    .unwrap();
    let budget_mib = 64.0;
    let mem_job = ctx.job(
        "mem",
        &mem_topic,
        "[commit]\nmax_buffered_bytes = \"64MiB\"\n",
    );
    let (_, _, mem_rss, mem_out) = ctx.timed(&["run", "--once"], &mem_job);
    let mem_stats: Value = serde_json::from_str(mem_out.trim()).unwrap();
    eprintln!("bench: memory done");

    let (fresh_p50, fresh_p99) = freshness(&ctx, env_or("SLUICE_BENCH_FRESH_RATE", 20_000), 15);
    eprintln!("bench: freshness done");
    let (slow, rolling) = continuous_cases(&ctx, baseline.as_deref(), runs);
    let (resume_s, resume_no_hint_s, delta_catch_up_s, iceberg_resume) =
        resume(&ctx, env_or("SLUICE_BENCH_RESUME_ENTRIES", 100_000));

    let day = compaction(&ctx, env_or("SLUICE_BENCH_DAY_EVENTS", 480_000u64), runs);
    eprintln!("bench: compaction done");

    // Scale-out: 1, 2 and 4 loaders in one group on 16 partitions.
    let scale_topic = ctx.topic("scale", 16);
    sluice::ops::generate::produce(
        &ctx.brokers,
        &scale_topic,
        &GenSpec {
            partitions: 16,
            ..spec.clone()
        },
    )
    .unwrap();
    let scale: Vec<Value> = [1usize, 2, 4]
        .iter()
        .map(|&k| {
            let (rate, commits, conflicts, fenced) = scale_out(&ctx, &scale_topic, events, k);
            json!({"processes": k, "events_per_s": rate, "entries": commits, "conflicts": conflicts, "fenced": fenced})
        })
        .collect();
    eprintln!("bench: scale-out done");

    // The manifest's commit rate on an S3-like store (moto): one writer without and with the
    // Delta log, then four racing writers without and with it.
    let (moto, endpoint) = start_moto(&ctx, "bench");
    let each = env_or("SLUICE_BENCH_COMMITS", 200u64);
    // Then each with the Iceberg metadata as well.
    let commit_rates: Vec<Value> = [
        (1usize, false, false),
        (1, true, false),
        (1, true, true),
        (4, false, false),
        (4, true, false),
        (4, true, true),
    ]
    .iter()
    .map(|&(writers, delta, iceberg)| {
        let name = format!("commits-{writers}-{delta}-{iceberg}");
        commit_rate(
            &ctx,
            &moto,
            &endpoint,
            &name,
            writers,
            each,
            (delta, iceberg, None),
        )
    })
    .collect();
    eprintln!("bench: commit rate done");

    let e2e = median(rate.clone());
    let report = json!({
        "events": events,
        "partitions": partitions,
        "runs": runs,
        "payload_bytes_per_event": payload_bytes as f64 / events as f64,
        "e2e": {
            "events_per_s": e2e,
            "mb_per_s": e2e * mb,
            "cpu_s_per_million": median(cpu.clone()),
            "peak_rss_mib": median(rss),
            "files": files,
            "commits": commits,
        },
        "ceiling_bare_consumer_events_per_s": median(bare.clone()),
        "ceiling_bare_consumer": {
            "process": "examples/bare_consumer.rs, a process of its own",
            "start_to_exit_events_per_s": median(bare.clone()),
            "first_to_last_record_events_per_s": median(bare_first_last.clone()),
            "in_bench_process_default_config_events_per_s": median(in_process.clone()),
        },
        "ceiling_libraries_decode_encode_events_per_s": median(libs.clone()),
        "sluice_decode_window_encode_events_per_s": median(ours.clone()),
        "ratio_e2e_to_bare_consumer": e2e / median(bare.clone()),
        "ratio_sluice_to_libraries": median(ours) / median(libs),
        "freshness_s": { "commit_interval": 1.0, "p50": fresh_p50, "p99": fresh_p99 },
        "memory": {
            "open_windows": mem_stats["files"],
            "events": mem_events,
            "budget_mib": budget_mib,
            "peak_rss_mib": mem_rss / 1024.0,
            "commits": mem_stats["commits"],
        },
        "baseline": baseline.as_ref().map(|b| json!({
            "binary": b.display().to_string(),
            "events_per_s": median(base_rate.clone()),
            "cpu_s_per_million": median(base_cpu.clone()),
            "ratio_events_per_s": e2e / median(base_rate.clone()),
        })),
        "compaction": day,
        "scale_out": { "partitions": 16, "commit_interval_s": 2, "runs": scale },
        "manifest_commits_s3_moto": { "commits_per_writer": each, "runs": commit_rates },
        "shapes": {
            "payment": {
                "payload_bytes_per_event": payload_bytes as f64 / events as f64,
                "e2e_events_per_s": e2e,
                "cpu_s_per_million": median(cpu.clone()),
                "ceiling_bare_consumer_events_per_s": median(bare.clone()),
                "ratio_e2e_to_bare_consumer": e2e / median(bare.clone()),
            },
            "sensor": {
                "schema": "benches/shapes/sensor.avsc",
                "payload_bytes_per_event": sensor_bytes as f64 / events as f64,
                "e2e_events_per_s": median(sensor_rate.clone()),
                "cpu_s_per_million": median(sensor_cpu.clone()),
                "files": sensor_files,
                "ceiling_bare_consumer_events_per_s": median(sensor_bare.clone()),
                "ratio_e2e_to_bare_consumer": median(sensor_rate.clone()) / median(sensor_bare.clone()),
            },
        },
        "avro": {
            "format": "confluent-avro",
            "payload_bytes_per_event": avro_bytes as f64 / events as f64,
            "decode_events_per_s_per_core": median(avro_decode.clone()),
            "json_decode_events_per_s_per_core": median(json_decode.clone()),
            "ratio_decode_avro_to_json": median(avro_decode.clone()) / median(json_decode.clone()),
            "arrow_avro_alone_events_per_s_per_core": median(avro_alone.clone()),
            "ratio_decode_to_arrow_avro_alone": median(avro_decode.clone()) / median(avro_alone.clone()),
            "e2e_events_per_s": median(avro_rate.clone()),
            "e2e_cpu_s_per_million": median(avro_cpu.clone()),
        },
        "slow_store": slow,
        "rolling_restart": rolling,
        "resume_s": { "entries": env_or("SLUICE_BENCH_RESUME_ENTRIES", 100_000u64), "with_checkpoint_hint": resume_s, "listing_checkpoints": resume_no_hint_s, "delta_log_from_nothing": delta_catch_up_s, "iceberg_start": iceberg_resume.start_s, "iceberg_behind": iceberg_resume.behind, "iceberg_catch_up": iceberg_resume.catch_up_s, "iceberg_resume": iceberg_resume.resume_s },
    });
    let out_dir = repo().join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(
        out_dir.join("latest.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();

    let r = &report;
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!();
    println!("sluice bench — {events} payment events (~{:.0} B JSON), {partitions} partitions, medians of {runs} runs", f(&r["payload_bytes_per_event"]));
    println!("{:<52} {:>14}", "figure", "value");
    println!(
        "{:<52} {:>14.0}",
        "end to end run --once (events/s)",
        f(&r["e2e"]["events_per_s"])
    );
    println!(
        "{:<52} {:>14.1}",
        "end to end run --once (MB/s of payload)",
        f(&r["e2e"]["mb_per_s"])
    );
    println!(
        "{:<52} {:>14.2}",
        "CPU seconds per million events",
        f(&r["e2e"]["cpu_s_per_million"])
    );
    println!(
        "{:<52} {:>14.0}",
        "peak RSS (MiB)",
        f(&r["e2e"]["peak_rss_mib"])
    );
    println!(
        "{:<52} {:>14}",
        "files / commits",
        format!("{files} / {commits}")
    );
    println!(
        "{:<52} {:>14.0}",
        "ceiling (a) bare consumer, own process (events/s)",
        f(&r["ceiling_bare_consumer_events_per_s"])
    );
    println!(
        "{:<52} {:>14}",
        "  (a) first to last record / old in-bench consumer",
        format!(
            "{:.0} / {:.0}",
            f(&r["ceiling_bare_consumer"]["first_to_last_record_events_per_s"]),
            f(&r["ceiling_bare_consumer"]["in_bench_process_default_config_events_per_s"])
        )
    );
    println!(
        "{:<52} {:>14.0}",
        "ceiling (b) arrow-json + parquet alone, 1 core (ev/s)",
        f(&r["ceiling_libraries_decode_encode_events_per_s"])
    );
    println!(
        "{:<52} {:>14.0}",
        "sluice decode+window+encode, 1 core (events/s)",
        f(&r["sluice_decode_window_encode_events_per_s"])
    );
    println!(
        "{:<52} {:>14.2}",
        "ratio end to end / (a)   [target >= 0.75]",
        f(&r["ratio_e2e_to_bare_consumer"])
    );
    println!(
        "{:<52} {:>14.2}",
        "ratio sluice / (b)",
        f(&r["ratio_sluice_to_libraries"])
    );
    println!(
        "{:<52} {:>14}",
        "freshness p50 / p99 (s)   [target p99 <= 2 s]",
        format!("{:.2} / {:.2}", fresh_p50, fresh_p99)
    );
    print_continuous(r);
    println!(
        "{:<52} {:>14}",
        "memory: peak RSS, 64 MiB budget (MiB) [<= 164]",
        format!("{:.0}", f(&r["memory"]["peak_rss_mib"]))
    );
    println!(
        "{:<52} {:>14}",
        "  open windows written / commits",
        format!(
            "{} / {}",
            r["memory"]["open_windows"], r["memory"]["commits"]
        )
    );
    println!(
        "{:<52} {:>14}",
        "resume, 100k entries (s) [target <= 1]",
        format!("{:.2} ({:.2} w/o hint)", resume_s, resume_no_hint_s)
    );
    println!(
        "{:<52} {:>14}",
        "  its Delta log written from nothing (s, once)",
        format!("{delta_catch_up_s:.1}")
    );
    println!(
        "{:<52} {:>14}",
        "  Iceberg turned on: first snapshot (s, once)",
        format!("{:.2}", iceberg_resume.start_s)
    );
    println!(
        "{:<52} {:>14}",
        format!(
            "  Iceberg {} entries behind: catch-up (s)",
            iceberg_resume.behind
        ),
        format!(
            "{:.1} ({:.1} ms each)",
            iceberg_resume.catch_up_s,
            iceberg_resume.catch_up_s * 1000.0 / iceberg_resume.behind as f64
        )
    );
    println!(
        "{:<52} {:>14}",
        "  resume with Iceberg up to date (s)",
        format!("{:.2}", iceberg_resume.resume_s)
    );
    let d = &r["compaction"];
    println!(
        "{:<52} {:>14}",
        "a day, 96 loads: files before / after compact",
        format!("{} / {}", d["files_before"], d["files_after"])
    );
    println!(
        "{:<52} {:>14}",
        "  DuckDB day rollup (s) before / after",
        format!(
            "{:.3} / {:.3}",
            f(&d["query_rollup_s_before"]),
            f(&d["query_rollup_s_after"])
        )
    );
    println!(
        "{:<52} {:>14}",
        "  DuckDB one-hour query (s) before / after",
        format!(
            "{:.3} / {:.3}",
            f(&d["query_one_hour_s_before"]),
            f(&d["query_one_hour_s_after"])
        )
    );
    println!(
        "{:<52} {:>14}",
        "  sluice compact: wall s, CPU s, peak RSS MiB",
        format!(
            "{:.1}, {:.1}, {:.0}",
            f(&d["compact_wall_s"]),
            f(&d["compact_cpu_s"]),
            f(&d["compact_peak_rss_mib"])
        )
    );
    for run in r["scale_out"]["runs"].as_array().into_iter().flatten() {
        println!(
            "{:<52} {:>14}",
            format!(
                "scale-out, {} loader(s), 16 partitions (ev/s)",
                run["processes"]
            ),
            format!(
                "{:.0} ({}/{} entries/lost)",
                f(&run["events_per_s"]),
                run["entries"],
                run["conflicts"]
            )
        );
    }
    for run in r["manifest_commits_s3_moto"]["runs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "{:<52} {:>14}",
            format!(
                "commits on moto S3, {} writer(s){} (/s)",
                run["writers"],
                match (run["delta_log"] == true, run["iceberg"] == true) {
                    (true, true) => ", Delta + Iceberg",
                    (true, false) => ", Delta",
                    (false, true) => ", Iceberg",
                    (false, false) => "",
                }
            ),
            format!(
                "{:.0} (p50 {:.0} ms, {} lost, {:.1} req)",
                f(&run["commits_per_s"]),
                f(&run["latency_ms_p50"]),
                run["races_lost"],
                f(&run["requests_per_commit"])
            )
        );
    }
    let sh = &r["shapes"]["sensor"];
    println!(
        "{:<52} {:>14}",
        "sensor shape: end to end (ev/s), CPU s/M",
        format!(
            "{:.0}, {:.2}",
            f(&sh["e2e_events_per_s"]),
            f(&sh["cpu_s_per_million"])
        )
    );
    println!(
        "{:<52} {:>14}",
        "  its bare consumer (ev/s) / ratio [>= 0.75]",
        format!(
            "{:.0} / {:.2}",
            f(&sh["ceiling_bare_consumer_events_per_s"]),
            f(&sh["ratio_e2e_to_bare_consumer"])
        )
    );
    let a = &r["avro"];
    println!(
        "{:<52} {:>14}",
        "decode only, 1 core (ev/s): JSON / confluent-avro",
        format!(
            "{:.0} / {:.0}",
            f(&a["json_decode_events_per_s_per_core"]),
            f(&a["decode_events_per_s_per_core"])
        )
    );
    println!(
        "{:<52} {:>14.0}",
        "  arrow-avro alone, same datums, 1 core (ev/s)",
        f(&a["arrow_avro_alone_events_per_s_per_core"])
    );
    println!(
        "{:<52} {:>14}",
        "  payload bytes per event: JSON / Avro",
        format!(
            "{:.0} / {:.0}",
            f(&r["payload_bytes_per_event"]),
            f(&a["payload_bytes_per_event"])
        )
    );
    println!(
        "{:<52} {:>14}",
        "end to end confluent-avro (ev/s, CPU s/M)",
        format!(
            "{:.0}, {:.2}",
            f(&a["e2e_events_per_s"]),
            f(&a["e2e_cpu_s_per_million"])
        )
    );
    if let Some(b) = &baseline {
        let (br, bc) = (median(base_rate), median(base_cpu));
        println!(
            "{:<52} {:>14}",
            "baseline run --once (events/s, CPU s/M)",
            format!("{br:.0}, {bc:.2}")
        );
        println!(
            "{:<52} {:>14.2}",
            "ratio end to end / baseline   [>= ~0.95: unchanged]",
            e2e / br
        );
        println!("  baseline: {}", b.display());
    }
    println!("\nwritten to {}", out_dir.join("latest.json").display());
}

/// The continuous loader's cases: freshness with a slow store (and the baseline's, if any),
/// and the rolling restart, eager and cooperative in turns.
fn continuous_cases(ctx: &Ctx, baseline: Option<&Path>, runs: usize) -> (Value, Value) {
    let slow = slow_store(
        ctx,
        baseline,
        env_or("SLUICE_BENCH_SLOW_RUNS", 2usize).min(runs),
    );
    eprintln!("bench: slow store done");
    (slow, rolling_cases(ctx, runs))
}

/// The rolling restart, eager and cooperative in turns.
fn rolling_cases(ctx: &Ctx, runs: usize) -> Value {
    let turns = env_or("SLUICE_BENCH_ROLL_RUNS", 2usize).min(runs);
    let strategies = ["range,roundrobin", "cooperative-sticky"];
    let mut by: Vec<Vec<Value>> = vec![vec![], vec![]];
    for run in 0..turns {
        for (i, s) in strategies.iter().enumerate() {
            by[i].push(rolling_restart(ctx, s, 4, run));
        }
    }
    eprintln!("bench: rolling restart done");
    let per = |v: &[Value]| {
        median(
            v.iter()
                .map(|x| x["rows_reread_per_restart"].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let (eager, coop) = (per(&by[0]), per(&by[1]));
    json!({
        "loaders": 4,
        "partitions": 16,
        "commit_interval_s": 5,
        "rows_reread_per_restart": { "eager": eager, "cooperative": coop },
        "ratio_cooperative_to_eager": coop / eager,
        "runs": { "eager": by[0], "cooperative": by[1] },
    })
}

fn print_continuous(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for (name, fig) in r["slow_store"]["figures"].as_object().into_iter().flatten() {
        println!(
            "{:<52} {:>14}",
            format!("freshness, 200 ms store, 20k ev/s: {name} p50/p99 (s)"),
            format!(
                "{:.2} / {:.2}",
                f(&fig["freshness_p50_s"]),
                f(&fig["freshness_p99_s"])
            )
        );
        println!(
            "{:<52} {:>14}",
            "  max.poll.interval.ms exceeded / rebalances",
            format!(
                "{} / {}",
                fig["max_poll_interval_exceeded"], fig["rebalances"]
            )
        );
    }
    let rr = &r["rolling_restart"]["rows_reread_per_restart"];
    println!(
        "{:<52} {:>14}",
        "rolling restart, 4 loaders: rows re-read/restart",
        format!("{:.0} eager", f(&rr["eager"]))
    );
    println!(
        "{:<52} {:>14}",
        "  cooperative-sticky",
        format!("{:.0}", f(&rr["cooperative"]))
    );
}

include!("e2e/continuous.rs");
