//! `sluice init`: a working job and schema from a sample of a live topic.
//!
//! It reads the newest records of every partition (up to `--sample` in all), decides the
//! payload format, infers an Avro schema from JSON objects ([`infer`]) or takes the registry's
//! latest schema of the topic's subject (Confluent Avro), picks the event time ([`time`]),
//! then decodes the sample with the loader's own decoder to say how many records the written
//! schema accepts. It writes nothing until all of that succeeded, and never overwrites a file
//! without `force`.

pub mod infer;
pub mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::config::{Job, FORCED_PROPERTIES};
use crate::error::{ConfigError, LoadError};
use crate::record::chunk::RawChunk;
use crate::record::decode::ChunkDecoder;
use crate::record::options::{
    EventTime, PayloadFormat, RegistryAuth, RegistryConfig, WriterSchemas,
};
use crate::record::registry::SchemaSource;
use crate::record::schema::{TableSchema, TimeFormat};
use crate::record::source::{self, Settings};

/// What `sluice init` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: String,
    pub topic: String,
    /// Records to read at most, over every partition.
    pub sample: usize,
    pub registry: Option<Registry>,
    /// The job file to write.
    pub out: PathBuf,
    /// The schema file to write.
    pub schema_out: PathBuf,
    /// The table's storage URL; by default `warehouse/<topic>` in the current folder.
    pub table: Option<String>,
    /// librdkafka properties for the sample, written into the job.
    pub properties: BTreeMap<String, String>,
    pub force: bool,
}

/// A schema registry to take a Confluent Avro topic's schema from.
#[derive(Debug, Clone)]
pub struct Registry {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Why `sluice init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("--property {0}: {1}")]
    Property(String, String),
    #[error("topic `{topic}` does not exist on {brokers}{known}")]
    NoTopic {
        topic: String,
        brokers: String,
        known: String,
    },
    #[error("topic `{topic}` has no records to sample ({partitions} partitions, all empty): produce some first, or write the schema by hand (docs/schemas.md)")]
    Empty { topic: String, partitions: usize },
    #[error("no record of the {sampled} sampled from `{topic}` is a JSON object or Confluent Avro (magic byte 0, a schema id): {example}. Raw Avro payloads carry no schema: write the job by hand with `format = \"avro\"` (docs/configuration.md)")]
    Unknown {
        topic: String,
        sampled: usize,
        example: String,
    },
    #[error("the sampled records of `{topic}` are Confluent Avro (schema ids {ids}): pass --registry URL so their schema can be read from subject `{topic}-value`")]
    NeedsRegistry { topic: String, ids: String },
    #[error("the registry at {url} has no subject `{subject}` (sluice init reads the topic's value subject, TopicNameStrategy)")]
    NoSubject { url: String, subject: String },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("the {what} schema does not load: {message}")]
    Schema { what: &'static str, message: String },
    #[error("the inferred schema accepts none of the {sampled} sampled records; the first refused: {reasons}")]
    AcceptsNone { sampled: usize, reasons: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] LoadError),
    #[error("the written job does not load (a bug in sluice init): {0}")]
    Job(#[from] ConfigError),
}

/// One sampled record.
#[derive(Debug, Clone)]
struct Sampled {
    partition: i32,
    offset: i64,
    kafka_ms: Option<i64>,
    payload: Option<Vec<u8>>,
}

/// Reads the sample, decides, checks, and writes the job and the schema; returns what it did,
/// a line each, to print.
pub fn init(opts: &Options) -> Result<Vec<String>, InitError> {
    for k in opts.properties.keys() {
        if FORCED_PROPERTIES.contains(&k.as_str()) {
            return Err(InitError::Property(
                k.clone(),
                "sluice sets this property itself".into(),
            ));
        }
    }
    if !opts.force {
        for p in [&opts.out, &opts.schema_out] {
            if p.exists() {
                return Err(InitError::Exists(p.clone()));
            }
        }
    }
    let mut lines = Vec::new();
    let (records, partitions) = sample(opts)?;
    let non_empty: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    lines.push(format!(
        "sampled {} records of `{}`: the newest of {} of its {} partitions",
        records.len(),
        opts.topic,
        non_empty.len(),
        partitions
    ));

    // What the payloads are.
    let mut objects = infer::Object::default();
    let (mut json, mut confluent, mut tombstones) = (0usize, 0usize, 0usize);
    let mut ids = BTreeSet::new();
    let mut other: Option<String> = None;
    for r in &records {
        match r.payload.as_deref() {
            None => tombstones += 1,
            Some(&[0, a, b, c, d, ..]) => {
                confluent += 1;
                ids.insert(u32::from_be_bytes([a, b, c, d]));
            }
            Some(p) => match serde_json::from_slice::<infer::Json>(p) {
                Ok(infer::Json::Obj(o)) => {
                    json += 1;
                    objects.observe(&o, r.kafka_ms);
                }
                _ => {
                    other.get_or_insert_with(|| {
                        format!(
                            "partition {} offset {} begins {}",
                            r.partition,
                            r.offset,
                            preview(p)
                        )
                    });
                }
            },
        }
    }
    let format = if json == 0 && confluent == 0 {
        return Err(InitError::Unknown {
            topic: opts.topic.clone(),
            sampled: records.len(),
            example: other.unwrap_or_else(|| "every one is a tombstone (no payload)".into()),
        });
    } else if confluent > json {
        PayloadFormat::ConfluentAvro
    } else {
        PayloadFormat::Json
    };
    let mut kinds = vec![];
    if json > 0 {
        kinds.push(format!("{json} JSON objects"));
    }
    if confluent > 0 {
        kinds.push(format!("{confluent} Confluent Avro"));
    }
    let rest = records.len() - json - confluent - tombstones;
    if rest > 0 {
        kinds.push(format!(
            "{rest} neither ({})",
            other.as_deref().unwrap_or("")
        ));
    }
    if tombstones > 0 {
        kinds.push(format!("{tombstones} tombstones"));
    }
    lines.push(format!("payloads: {}", kinds.join(", ")));

    // The schema.
    let table_name = infer::avro_name(&opts.topic);
    let (avsc, writers) = match format {
        PayloadFormat::Json => {
            let inferred = infer::infer(&table_name, &objects);
            lines.push(format!(
                "schema: inferred from {json} JSON objects, {} fields:",
                inferred.choices.len()
            ));
            lines.extend(inferred.report());
            (infer::avsc_text(&inferred.avsc), None)
        }
        _ => {
            let Some(reg) = &opts.registry else {
                return Err(InitError::NeedsRegistry {
                    topic: opts.topic.clone(),
                    ids: ids
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let config = RegistryConfig {
                url: reg.url.trim_end_matches('/').to_string(),
                auth: match (&reg.username, &reg.password) {
                    (Some(u), p) => RegistryAuth::Basic {
                        username: u.clone(),
                        password: p.clone().unwrap_or_default(),
                    },
                    (None, _) => RegistryAuth::None,
                },
                ca_file: None,
                timeout: Duration::from_secs(10),
            };
            let writers = WriterSchemas::Registry(config.clone());
            let registry = SchemaSource::new(&writers).map_err(|e| InitError::Registry(e.0))?;
            let subject = format!("{}-value", opts.topic);
            let (id, text) = registry
                .latest(&subject)
                .map_err(|e| InitError::Registry(e.0))?
                .ok_or_else(|| InitError::NoSubject {
                    url: registry.describe(),
                    subject: subject.clone(),
                })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| InitError::Schema {
                what: "registry's",
                message: e.to_string(),
            })?;
            lines.push(format!(
                "schema: the registry's latest for subject `{subject}` (id {id}); the sample names ids {}",
                ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ));
            (infer::avsc_text(&value), Some(writers))
        }
    };
    let schema = TableSchema::parse(&avsc).map_err(|e| InitError::Schema {
        what: if writers.is_some() {
            "registry's"
        } else {
            "inferred"
        },
        message: e.0,
    })?;

    // The event time, from the rows the loader's decoder makes of the sample.
    let decode = |event_time: EventTime| -> Result<(Vec<arrow::array::RecordBatch>, Vec<String>), InitError> {
        let decoder = ChunkDecoder::for_format(
            schema.clone(),
            event_time,
            format,
            writers.as_ref(),
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(|e| InitError::Schema {
            what: "chosen",
            message: e.0,
        })?;
        let mut batches = Vec::new();
        let mut dead = Vec::new();
        for p in &non_empty {
            let mut chunk = RawChunk::default();
            for r in records.iter().filter(|r| r.partition == *p) {
                chunk.push(r.offset, r.kafka_ms, None, r.payload.as_deref());
            }
            let d = decoder.decode(&chunk, &opts.topic, *p);
            if let Some(why) = d.interrupted {
                return Err(InitError::Registry(why));
            }
            batches.extend(d.batch);
            dead.extend(
                d.dead
                    .iter()
                    .map(|x| format!("partition {p} offset {}: {}", x.offset, x.error)),
            );
        }
        Ok((batches, dead))
    };
    let (batches, _) = decode(EventTime::KafkaTimestamp)?;
    let all = match batches.first() {
        Some(b) => concat_batches(&b.schema(), &batches).ok(),
        None => None,
    };
    let candidates = all.as_ref().map(time::candidates).unwrap_or_default();
    let event_time = match candidates.first() {
        Some(c) => {
            let how = match c.format {
                TimeFormat::Logical => "a timestamp",
                TimeFormat::Rfc3339 => "RFC 3339 strings",
                TimeFormat::EpochMillis => "epoch milliseconds",
                TimeFormat::EpochSeconds => "epoch seconds",
            };
            let others: Vec<String> = candidates
                .iter()
                .skip(1)
                .map(|o| format!("{} ({} from it)", o.name, span(o.median_ms)))
                .collect();
            lines.push(format!(
                "event time: `{}`, {how} in every record, {} of {} within a day of their Kafka timestamp (median {} apart){}{}",
                c.name,
                c.near,
                c.rows,
                span(c.median_ms),
                if c.named { "; its name says time" } else { "" },
                if others.is_empty() {
                    String::new()
                } else {
                    format!("; other candidates: {}", others.join(", "))
                }
            ));
            EventTime::Field {
                name: c.name.clone(),
                format: c.format,
            }
        }
        None => {
            lines.push("event time: the Kafka timestamp (no top-level field holds a time in every sampled record)".into());
            EventTime::KafkaTimestamp
        }
    };
    let (batches, dead) = decode(event_time.clone())?;
    let accepted: usize = batches.iter().map(|b| b.num_rows()).sum();
    let sampled = records.len();
    if accepted == 0 {
        return Err(InitError::AcceptsNone {
            sampled,
            reasons: dead.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
        });
    }
    lines.push(format!(
        "the schema accepts {accepted} of {sampled} sampled records ({:.1}%){}",
        accepted as f64 * 100.0 / sampled as f64,
        if dead.is_empty() {
            String::new()
        } else {
            format!(
                "; the others go to the dead-letter file, e.g. {}",
                dead.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            )
        }
    ));

    // Write: the schema, then the job that names it.
    for p in [&opts.out, &opts.schema_out] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| InitError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let job_dir = absolute(opts.out.parent().unwrap_or(Path::new("")))?;
    let schema_rel = relative(&job_dir, &absolute(&opts.schema_out)?);
    let table = match &opts.table {
        Some(t) => t.clone(),
        None => {
            let rel = relative(
                &job_dir,
                &absolute(&Path::new("warehouse").join(&opts.topic))?,
            );
            format!("${{SLUICE_TABLE_URL:-{}}}", rel.display())
        }
    };
    let job = job_text(opts, &schema_rel, format, &event_time, &table, sampled);
    write(&opts.schema_out, &avsc, opts.force)?;
    write(&opts.out, &job, opts.force)?;
    Job::load(&opts.out)?;
    lines.push(format!(
        "wrote {} and {}",
        opts.schema_out.display(),
        opts.out.display()
    ));
    let secrets: Vec<String> = secret_vars(opts);
    if !secrets.is_empty() {
        lines.push(format!(
            "the job reads secrets from the environment: export {} before running it",
            secrets.join(", ")
        ));
    }
    lines.push(format!(
        "next: sluice run --once --job {}",
        opts.out.display()
    ));
    Ok(lines)
}

/// Reads up to `opts.sample` records, the newest of each partition, shared out evenly.
fn sample(opts: &Options) -> Result<(Vec<Sampled>, usize), InitError> {
    let settings = Settings {
        brokers: &opts.brokers,
        group_id: "sluice-init",
        properties: &opts.properties,
        max_buffered_bytes: 64 << 20,
    };
    let consumer = source::lookup_consumer(settings)?;
    let timeout = Duration::from_secs(30);
    let parts = match source::all_partitions(&consumer, std::slice::from_ref(&opts.topic), timeout)
    {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => return Err(no_topic(opts, &consumer)),
        Err(LoadError::Kafka { source, .. })
            if source.rdkafka_error_code()
                == Some(rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition) =>
        {
            return Err(no_topic(opts, &consumer))
        }
        Err(e) => return Err(e.into()),
    };
    let marks = source::watermarks(&consumer, &parts, timeout)?;
    let avail: Vec<i64> = parts
        .iter()
        .map(|p| marks.get(p).map_or(0, |(lo, hi)| (hi - lo).max(0)))
        .collect();
    if avail.iter().all(|&n| n == 0) {
        return Err(InitError::Empty {
            topic: opts.topic.clone(),
            partitions: parts.len(),
        });
    }
    let take = share(&avail, opts.sample as i64);
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for (p, n) in parts.iter().zip(&take) {
        let Some(&(_, hi)) = marks.get(p) else {
            continue;
        };
        if *n > 0 {
            tpl.add_partition_offset(&p.0, p.1, Offset::Offset(hi - n))
                .map_err(|source| LoadError::Kafka {
                    context: format!("assigning {}/{}", p.0, p.1),
                    source,
                })?;
            open.insert(p.1);
        }
    }
    consumer.assign(&tpl).map_err(|source| LoadError::Kafka {
        context: format!("assigning the partitions of {}", opts.topic),
        source,
    })?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() && out.len() < opts.sample && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => {
                out.push(Sampled {
                    partition: m.partition(),
                    offset: m.offset(),
                    kafka_ms: m.timestamp().to_millis(),
                    payload: m.payload().map(<[u8]>::to_vec),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(source)) => {
                consumer.context().check()?;
                return Err(LoadError::Kafka {
                    context: format!("sampling {}", opts.topic),
                    source,
                }
                .into());
            }
        }
    }
    if out.is_empty() {
        return Err(InitError::Empty {
            topic: opts.topic.clone(),
            partitions: parts.len(),
        });
    }
    Ok((out, parts.len()))
}

fn no_topic(
    opts: &Options,
    consumer: &rdkafka::consumer::BaseConsumer<source::ClientWatch>,
) -> InitError {
    let known: Vec<String> = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|md| {
            md.topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|t| !t.starts_with("__"))
                .collect()
        })
        .unwrap_or_default();
    InitError::NoTopic {
        topic: opts.topic.clone(),
        brokers: opts.brokers.clone(),
        known: if known.is_empty() {
            String::new()
        } else {
            let mut k = known;
            k.sort();
            k.truncate(20);
            format!(" (it has: {})", k.join(", "))
        },
    }
}

/// `want` records shared out over partitions holding `avail` each: evenly, a partition's
/// unused share going to the others.
fn share(avail: &[i64], want: i64) -> Vec<i64> {
    let mut take = vec![0i64; avail.len()];
    let mut left = want;
    loop {
        let open: Vec<usize> = (0..avail.len()).filter(|&i| take[i] < avail[i]).collect();
        if open.is_empty() || left <= 0 {
            return take;
        }
        let each = (left / open.len() as i64).max(1);
        for i in open {
            if left == 0 {
                break;
            }
            let n = each.min(avail[i] - take[i]).min(left);
            take[i] += n;
            left -= n;
        }
    }
}

fn preview(p: &[u8]) -> String {
    let head = &p[..p.len().min(24)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

fn span(ms: i64) -> String {
    match ms {
        i64::MAX => "unknown".into(),
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 7_200_000 => format!("{:.0} min", ms as f64 / 60_000.0),
        ms if ms < 172_800_000 => format!("{:.0} h", ms as f64 / 3_600_000.0),
        ms => format!("{:.0} days", ms as f64 / 86_400_000.0),
    }
}

/// The environment variable the job reads a secret property from (`sasl.password` →
/// `SLUICE_SASL_PASSWORD`); `None` for a property that is no secret.
pub fn secret_var(key: &str) -> Option<String> {
    let k = key.to_ascii_lowercase();
    (k.contains("password") || k.contains("secret") || k.ends_with(".key.pem")).then(|| {
        format!(
            "SLUICE_{}",
            key.to_ascii_uppercase().replace(['.', '-'], "_")
        )
    })
}

fn secret_vars(opts: &Options) -> Vec<String> {
    let mut v: Vec<String> = opts
        .properties
        .keys()
        .filter_map(|k| secret_var(k))
        .collect();
    if opts.registry.as_ref().is_some_and(|r| r.username.is_some()) {
        v.push("SCHEMA_REGISTRY_PASSWORD".into());
    }
    v
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn job_text(
    opts: &Options,
    schema_rel: &Path,
    format: PayloadFormat,
    event_time: &EventTime,
    table: &str,
    sampled: usize,
) -> String {
    let topic = &opts.topic;
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(format!(
        "# Written by `sluice init` from {sampled} records of topic `{topic}`. Every key, with its default: docs/configuration.md"
    ));
    line(format!("name = {}", quote(topic)));
    line(String::new());
    line("[source]".into());
    line("# SLUICE_BROKERS overrides the brokers sampled at init.".into());
    line(format!(
        "brokers = {}",
        quote(&format!("${{SLUICE_BROKERS:-{}}}", opts.brokers))
    ));
    line(format!("topics = [{}]", quote(topic)));
    line(format!("group_id = {}", quote(&format!("sluice-{topic}"))));
    line(
        "# Where a partition starts when the table has nothing for it: earliest or latest.".into(),
    );
    line("start_offset = \"earliest\"".into());
    if !opts.properties.is_empty() {
        line(String::new());
        line("[source.properties]".into());
        for (k, v) in &opts.properties {
            let v = match secret_var(k) {
                Some(var) => format!("${{{var}}}"),
                None => v.clone(),
            };
            line(format!("{} = {}", quote(k), quote(&v)));
        }
    }
    line(String::new());
    line("[schema]".into());
    line(
        "# Inferred from the sample: review it (types, nullable fields) before loading for real."
            .into(),
    );
    line(format!("file = {}", quote(&schema_rel.to_string_lossy())));
    match format {
        PayloadFormat::Json => line("format = \"json\"".into()),
        PayloadFormat::Avro => line("format = \"avro\"".into()),
        PayloadFormat::ConfluentAvro => {
            line("format = \"confluent-avro\"".into());
            line(String::new());
            line("[schema.registry]".into());
            if let Some(r) = &opts.registry {
                line(format!("url = {}", quote(r.url.trim_end_matches('/'))));
                if let Some(u) = &r.username {
                    line(format!("username = {}", quote(u)));
                    line("password = \"${SCHEMA_REGISTRY_PASSWORD}\"".into());
                }
            }
        }
    }
    line(String::new());
    line("[event_time]".into());
    match event_time {
        EventTime::KafkaTimestamp => {
            line(
                "# No field holds a time in every sampled record: windows by the Kafka timestamp."
                    .into(),
            );
            line("source = \"kafka_timestamp\"".into());
        }
        EventTime::Field { name, format } => {
            line(format!("field = {}", quote(name)));
            match format {
                TimeFormat::Logical => {}
                TimeFormat::Rfc3339 => line("format = \"rfc3339\"".into()),
                TimeFormat::EpochMillis => line("format = \"epoch_millis\"".into()),
                TimeFormat::EpochSeconds => line("format = \"epoch_seconds\"".into()),
            }
        }
    }
    t.push_str(&format!(
        r#"
[window]
# Files are grouped by hour of event time; a window closes once every partition is 10 minutes past it.
size = "1h"
allowed_lateness = "10m"
late_records = "load"

[storage]
# A local folder (relative to this file), or s3://bucket/prefix, gs://…, az://… with [storage.options].
url = {table}

[commit]
# A continuous loader commits at least this often; --once commits at the end.
interval = "60s"
max_buffered_bytes = "256MiB"

[bad_records]
# Records that do not fit the schema go to the commit's dead-letter file (sluice files --dead-letters).
policy = "dead_letter"

# The table is a Delta table; uncomment to make it an Apache Iceberg table too, and to register
# it in a SQL (sqlite:///…, postgresql://…) or REST (http(s)://…) catalog.
# [iceberg]
# enabled = true
# catalog = "sqlite:catalog.db"
# namespace = "default"
"#,
        table = quote(table)
    ));
    t
}

fn write(path: &Path, text: &str, force: bool) -> Result<(), InitError> {
    let io = |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .create_new(!force)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                InitError::Exists(path.to_path_buf())
            } else {
                io(e)
            }
        })?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// `p` from the root, `.` and `..` taken out (the path need not exist yet).
fn absolute(p: &Path) -> Result<PathBuf, InitError> {
    let joined = std::env::current_dir()
        .map_err(|source| InitError::Io {
            path: p.to_path_buf(),
            source,
        })?
        .join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `to` relative to the folder `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_spread_and_refill() {
        assert_eq!(share(&[100, 100, 100, 100], 100), [25, 25, 25, 25]);
        assert_eq!(share(&[0, 5, 1000, 1000], 100), [0, 5, 48, 47]);
        assert_eq!(share(&[3, 2], 100), [3, 2]);
        assert_eq!(share(&[10], 0), [0]);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/w/jobs"), Path::new("/w/schemas/t.avsc")),
            PathBuf::from("../schemas/t.avsc")
        );
        assert_eq!(
            relative(Path::new("/w"), Path::new("/w/warehouse/t")),
            PathBuf::from("warehouse/t")
        );
    }

    #[test]
    fn secrets_go_to_the_environment() {
        assert_eq!(
            secret_var("sasl.password").as_deref(),
            Some("SLUICE_SASL_PASSWORD")
        );
        assert_eq!(secret_var("security.protocol"), None);
    }
}
