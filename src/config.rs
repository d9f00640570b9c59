//! Job files: parsed with serde (`deny_unknown_fields`), then validated into a [`Job`].
//!
//! Every error names the job file, the key and the problem. Strings in `source.brokers`,
//! `source.properties`, `storage.url` and `storage.options` may reference environment variables
//! as `${NAME}` (or `${NAME:-default}`), so secrets never have to live in the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{invalid, ConfigError, Invalid};
pub use crate::record::options::{
    redact_url, Compression, EventTime, PayloadFormat, RegistryAuth, RegistryConfig, WriterSchemas,
};
use crate::record::schema::TableSchema;
use crate::record::window::{Layout, WindowSize};

mod units;
pub use units::{parse_duration_ms, parse_size};

/// Kafka properties sluice sets itself; a job may not override them.
pub const FORCED_PROPERTIES: [&str; 7] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
    "isolation.level",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<String>,
    source: RawSource,
    schema: RawSchema,
    event_time: RawEventTime,
    window: Option<RawWindow>,
    storage: RawStorage,
    parquet: Option<RawParquet>,
    commit: Option<RawCommit>,
    bad_records: Option<RawBadRecords>,
    delta: Option<RawDelta>,
    iceberg: Option<RawIceberg>,
    compaction: Option<RawCompaction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIceberg {
    enabled: Option<bool>,
    retention: Option<String>,
    max_snapshots: Option<usize>,
    catalog: Option<String>,
    catalog_name: Option<String>,
    namespace: Option<String>,
    table: Option<String>,
    catalog_token: Option<String>,
    catalog_warehouse: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompaction {
    enabled: Option<bool>,
    target_size: Option<String>,
    sort_by: Option<Vec<String>>,
    min_files: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelta {
    enabled: Option<bool>,
    checkpoint_every: Option<u64>,
    retention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    brokers: String,
    topics: Vec<String>,
    group_id: Option<String>,
    start_offset: Option<StartOffset>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    file: String,
    format: Option<PayloadFormat>,
    registry: Option<RawRegistry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    url: Option<String>,
    directory: Option<String>,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    ca_file: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventTime {
    field: Option<String>,
    format: Option<String>,
    source: Option<EventTimeSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EventTimeSource {
    Field,
    KafkaTimestamp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    size: Option<String>,
    layout: Option<String>,
    allowed_lateness: Option<String>,
    idle_timeout: Option<String>,
    late_records: Option<LateRecords>,
}

/// What happens to a record of a window already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateRecords {
    /// Loaded into a new file of its window, recorded as a late addition.
    Load,
    /// Written to the commit's dead-letter file.
    DeadLetter,
    /// Stop with an error naming the record and its window.
    Fail,
}

/// `[window]`'s closing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    /// A partition's watermark is the latest event time it has loaded minus this.
    pub allowed_lateness: Duration,
    /// A partition caught up (lag 0) with no record for this long has its watermark moved
    /// by the clock (now minus the allowed lateness), so it holds no window open.
    pub idle_timeout: Duration,
    pub late_records: LateRecords,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParquet {
    compression: Option<String>,
    row_group_rows: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommit {
    interval: Option<String>,
    max_buffered_bytes: Option<String>,
    max_rows: Option<usize>,
    checkpoint_every: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBadRecords {
    policy: Option<BadRecordPolicy>,
}

/// Where a partition starts when the manifest has nothing for it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartOffset {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Write the record to the dead-letter file of the commit and go on.
    DeadLetter,
    /// Stop with an error naming topic, partition, offset and reason.
    Fail,
}

/// A checked job.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    pub name: String,
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub start_offset: StartOffset,
    pub kafka_properties: BTreeMap<String, String>,
    pub schema: TableSchema,
    /// How payloads are encoded (`schema.format`).
    pub format: PayloadFormat,
    /// `confluent-avro`: where writer schemas are looked up by id.
    pub writers: Option<WriterSchemas>,
    pub event_time: EventTime,
    pub window: WindowSize,
    pub layout: Layout,
    pub closing: Closing,
    pub storage_url: String,
    pub storage_options: BTreeMap<String, String>,
    pub compression: Compression,
    pub row_group_rows: usize,
    pub commit: CommitPolicy,
    pub checkpoint_every: u64,
    pub bad_records: BadRecordPolicy,
    /// The Delta Lake log kept beside the manifest (`None`: `[delta] enabled = false`).
    pub delta: Option<DeltaConfig>,
    /// The Apache Iceberg metadata kept beside the manifest (`None`: off, the default).
    pub iceberg: Option<IcebergConfig>,
    pub compaction: CompactionConfig,
    /// Record a schema that changes the table's incompatibly (`--allow-incompatible-schema`;
    /// never set by the job file).
    pub allow_incompatible_schema: bool,
}

/// `[compaction]`: how windows' small files are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// The continuous loader compacts each window when it closes, in the background.
    pub enabled: bool,
    /// Compacted files of about this many bytes.
    pub target_bytes: u64,
    /// Rows in a compacted file are sorted by these columns (`None`: by event time).
    pub sort_by: Option<Vec<String>>,
    /// A window is compacted when it has at least this many small files.
    pub min_files: usize,
}

/// `[delta]`: how the table's Delta log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaConfig {
    /// A Parquet checkpoint every this many versions.
    pub checkpoint_every: u64,
    /// How long a removed file stays readable by time travel; `gc` keeps it as long.
    pub retention: Duration,
}

/// `[iceberg]`: how the table's Iceberg metadata is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcebergConfig {
    /// Snapshots older than this (by their entries' commit times) are expired from the
    /// metadata; `gc` keeps the files they reference as long.
    pub retention: Duration,
    /// At most this many snapshots are kept in the metadata (the newest).
    pub max_snapshots: usize,
    /// The catalog the table is registered in and kept current (`None`: metadata files only).
    pub catalog: Option<crate::table::iceberg::catalog::CatalogSettings>,
}

/// When a loader commits: every `interval`, or sooner when its buffers reach a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    pub interval: Duration,
    pub max_buffered_bytes: u64,
    pub max_rows: usize,
}

/// What a loader holds uncommitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffered {
    pub bytes: u64,
    pub rows: usize,
    /// Some partition has a range to commit (it may hold no rows: markers, a pinned start).
    pub ranges: bool,
}

impl CommitPolicy {
    /// Whether to commit now, `since_last` after the last commit.
    pub fn due(&self, since_last: Duration, buffered: Buffered) -> bool {
        let full = buffered.bytes >= self.max_buffered_bytes || buffered.rows >= self.max_rows;
        let time = since_last >= self.interval && (buffered.bytes > 0 || buffered.ranges);
        full || time
    }
}

/// Defaults, documented in docs/configuration.md.
pub mod defaults {
    pub const WINDOW: &str = "1h";
    pub const COMPRESSION: &str = "zstd";
    pub const ROW_GROUP_ROWS: usize = 1_000_000;
    pub const COMMIT_INTERVAL: &str = "60s";
    pub const MAX_BUFFERED_BYTES: &str = "256MiB";
    pub const MAX_ROWS: usize = 5_000_000;
    pub const CHECKPOINT_EVERY: u64 = 100;
    pub const DELTA_CHECKPOINT_EVERY: u64 = 100;
    /// Delta's own default `delta.deletedFileRetentionDuration`.
    pub const DELTA_RETENTION: &str = "7d";
    pub const ICEBERG_RETENTION: &str = "1d";
    pub const ICEBERG_MAX_SNAPSHOTS: usize = 1000;
    pub const ALLOWED_LATENESS: &str = "10m";
    pub const IDLE_TIMEOUT: &str = "5m";
    pub const COMPACTION_TARGET_SIZE: &str = "128MiB";
    pub const COMPACTION_MIN_FILES: usize = 2;
}

impl Job {
    /// What the job's consumers need of it.
    pub fn source(&self) -> crate::record::source::Settings<'_> {
        crate::record::source::Settings {
            brokers: &self.brokers,
            group_id: &self.group_id,
            properties: &self.kafka_properties,
            max_buffered_bytes: self.commit.max_buffered_bytes,
        }
    }
}

impl Job {
    /// Reads, parses and validates a job file. Relative schema paths and relative local storage
    /// paths are taken relative to the job file's folder.
    pub fn load(path: &Path) -> Result<Job, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, &|k| std::env::var(k).ok())
    }

    /// Parses job text; `env` resolves `${NAME}` references.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Job, ConfigError> {
        let raw: RawJob = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let subst = |key: &str, v: &str| expand_env(v, env).map_err(|m| invalid(key, m.0));

        let brokers = subst("source.brokers", &raw.source.brokers)?;
        if brokers.trim().is_empty() {
            return Err(invalid("source.brokers", "must not be empty".into()));
        }
        if raw.source.topics.is_empty() {
            return Err(invalid("source.topics", "name at least one topic".into()));
        }
        for t in &raw.source.topics {
            let legal = t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !legal || t.is_empty() || t == "." || t == ".." || t.len() > 249 {
                return Err(invalid(
                    "source.topics",
                    format!("`{t}` is not a valid Kafka topic name"),
                ));
            }
        }
        let name = raw.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sluice".into())
        });
        let group_id = raw
            .source
            .group_id
            .clone()
            .unwrap_or_else(|| format!("sluice-{name}"));
        let start_offset = raw.source.start_offset.unwrap_or(StartOffset::Earliest);
        let mut kafka_properties = BTreeMap::new();
        for (k, v) in &raw.source.properties {
            let key = format!("source.properties.{k}");
            if FORCED_PROPERTIES.contains(&k.as_str()) {
                return Err(invalid(
                    &key,
                    "sluice sets this property itself (the exactly-once protocol relies on it: docs/configuration.md, DESIGN.md)"
                        .into(),
                ));
            }
            let v = subst(&key, v)?;
            let strategies = [
                "cooperative-sticky",
                "range",
                "roundrobin",
                "range,roundrobin",
                "roundrobin,range",
            ];
            if k == "partition.assignment.strategy"
                && !strategies.contains(&v.replace(' ', "").as_str())
            {
                return Err(invalid(
                    &key,
                    format!("`{v}`: sluice rebalances with `cooperative-sticky` (the default) or the eager `range`/`roundrobin`"),
                ));
            }
            kafka_properties.insert(k.clone(), v);
        }

        let format = raw.schema.format.unwrap_or(PayloadFormat::Json);
        let schema_path = base.join(&raw.schema.file);
        let schema = TableSchema::load(&schema_path).map_err(|m| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "schema.file".into(),
            message: format!("{}: {m}", schema_path.display()),
        })?;
        let writers = match (format, &raw.schema.registry) {
            (PayloadFormat::ConfluentAvro, Some(r)) => {
                Some(writer_schemas(r, &base, &subst, &invalid)?)
            }
            (PayloadFormat::ConfluentAvro, None) => {
                return Err(invalid(
                    "schema.registry",
                    "`confluent-avro` needs [schema.registry] with `url` or `directory`".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "schema.registry",
                    "only `confluent-avro` payloads name their writer schemas by id".into(),
                ))
            }
            (_, None) => None,
        };

        use EventTimeSource as S;
        let event_time = match (raw.event_time.source, raw.event_time.field.as_ref()) {
            (Some(S::KafkaTimestamp), None) => {
                if raw.event_time.format.is_some() {
                    return Err(invalid(
                        "event_time.format",
                        "only applies to `field`".into(),
                    ));
                }
                EventTime::KafkaTimestamp
            }
            (Some(S::Field) | None, Some(field)) => {
                let format = schema
                    .event_time_format(field, raw.event_time.format.as_deref())
                    .map_err(|m| invalid("event_time.field", m.0))?;
                EventTime::Field {
                    name: field.clone(),
                    format,
                }
            }
            (Some(S::KafkaTimestamp), Some(_)) => {
                return Err(invalid(
                    "event_time",
                    "set either `field` or `source = \"kafka_timestamp\"`, not both".into(),
                ))
            }
            (Some(S::Field) | None, None) => {
                return Err(invalid(
                    "event_time",
                    "set `field = \"...\"` (a timestamp field of the event) or `source = \"kafka_timestamp\"`"
                        .into(),
                ))
            }
        };

        let raw_window = raw.window.as_ref();
        let size_text = raw_window
            .and_then(|w| w.size.as_deref())
            .unwrap_or(defaults::WINDOW);
        let size_ms = parse_duration_ms(size_text).map_err(|m| invalid("window.size", m.0))?;
        let window = WindowSize::from_millis(size_ms)
            .filter(|w| w.millis() >= 60_000 && (w.millis() % 60_000 == 0))
            .ok_or_else(|| {
                invalid(
                    "window.size",
                    format!("`{size_text}`: must be a whole number of minutes, at least 1m"),
                )
            })?;
        if 86_400_000 % size_ms != 0 && size_ms % 86_400_000 != 0 {
            return Err(invalid(
                "window.size",
                format!("`{size_text}`: must divide a day (15m, 1h, 6h…) or be whole days"),
            ));
        }
        let layout = match raw_window.and_then(|w| w.layout.as_deref()) {
            None => Layout::default_for(window),
            Some(t) => Layout::parse(t, window).map_err(|m| invalid("window.layout", m.0))?,
        };

        let duration = |key: &str, text: Option<&str>, default: &str| {
            let text = text.unwrap_or(default);
            parse_duration_ms(text)
                .map(|ms| Duration::from_millis(ms.unsigned_abs()))
                .map_err(|m| invalid(key, m.0))
        };
        let closing = Closing {
            allowed_lateness: duration(
                "window.allowed_lateness",
                raw_window.and_then(|w| w.allowed_lateness.as_deref()),
                defaults::ALLOWED_LATENESS,
            )?,
            idle_timeout: duration(
                "window.idle_timeout",
                raw_window.and_then(|w| w.idle_timeout.as_deref()),
                defaults::IDLE_TIMEOUT,
            )?,
            late_records: raw_window
                .and_then(|w| w.late_records)
                .unwrap_or(LateRecords::Load),
        };

        let storage_url = resolve_storage_url(&subst("storage.url", &raw.storage.url)?, &base)
            .map_err(|e| invalid("storage.url", e.to_string()))?;
        let parsed = url::Url::parse(&storage_url).map_err(|e| {
            invalid(
                "storage.url",
                format!("`{}`: {e}", redact_url(&storage_url)),
            )
        })?;
        match parsed.scheme() {
            "file" | "memory" | "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure"
            | "http" | "https" => {}
            other => {
                return Err(invalid(
                    "storage.url",
                    format!("unsupported scheme `{other}` (file, memory, s3, gs, az)"),
                ))
            }
        }
        let mut storage_options = BTreeMap::new();
        for (k, v) in &raw.storage.options {
            storage_options.insert(k.clone(), subst(&format!("storage.options.{k}"), v)?);
        }

        let rp = raw.parquet.as_ref();
        let compression = parse_compression(
            rp.and_then(|p| p.compression.as_deref())
                .unwrap_or(defaults::COMPRESSION),
        )
        .map_err(|m| invalid("parquet.compression", m.0))?;
        let row_group_rows = rp
            .and_then(|p| p.row_group_rows)
            .unwrap_or(defaults::ROW_GROUP_ROWS);
        if row_group_rows == 0 {
            return Err(invalid("parquet.row_group_rows", "must be positive".into()));
        }

        let rc = raw.commit.as_ref();
        let interval_text = rc
            .and_then(|c| c.interval.as_deref())
            .unwrap_or(defaults::COMMIT_INTERVAL);
        let interval_ms =
            parse_duration_ms(interval_text).map_err(|m| invalid("commit.interval", m.0))?;
        if interval_ms < 1000 {
            return Err(invalid(
                "commit.interval",
                format!("`{interval_text}`: at least 1s"),
            ));
        }
        let bytes_text = rc
            .and_then(|c| c.max_buffered_bytes.as_deref())
            .unwrap_or(defaults::MAX_BUFFERED_BYTES);
        let max_buffered_bytes =
            parse_size(bytes_text).map_err(|m| invalid("commit.max_buffered_bytes", m.0))?;
        if max_buffered_bytes < 1 << 20 {
            return Err(invalid(
                "commit.max_buffered_bytes",
                format!("`{bytes_text}`: at least 1MiB"),
            ));
        }
        let max_rows = rc.and_then(|c| c.max_rows).unwrap_or(defaults::MAX_ROWS);
        if max_rows == 0 {
            return Err(invalid("commit.max_rows", "must be positive".into()));
        }
        let checkpoint_every = rc
            .and_then(|c| c.checkpoint_every)
            .unwrap_or(defaults::CHECKPOINT_EVERY);
        if checkpoint_every == 0 {
            return Err(invalid(
                "commit.checkpoint_every",
                "must be positive".into(),
            ));
        }

        let bad_records = raw
            .bad_records
            .and_then(|b| b.policy)
            .unwrap_or(BadRecordPolicy::DeadLetter);

        let rd = raw.delta.as_ref();
        let delta = match rd.and_then(|d| d.enabled).unwrap_or(true) {
            false => None,
            true => {
                let checkpoint_every = rd
                    .and_then(|d| d.checkpoint_every)
                    .unwrap_or(defaults::DELTA_CHECKPOINT_EVERY);
                if checkpoint_every == 0 {
                    return Err(invalid("delta.checkpoint_every", "must be positive".into()));
                }
                let text = rd
                    .and_then(|d| d.retention.as_deref())
                    .unwrap_or(defaults::DELTA_RETENTION);
                let ms = parse_duration_ms(text).map_err(|m| invalid("delta.retention", m.0))?;
                Some(DeltaConfig {
                    checkpoint_every,
                    retention: Duration::from_millis(ms.unsigned_abs()),
                })
            }
        };

        let ri = raw.iceberg.as_ref();
        let iceberg = match ri.and_then(|i| i.enabled).unwrap_or(false) {
            false if ri.is_some_and(|i| i.catalog.is_some()) => {
                return Err(invalid(
                    "iceberg.catalog",
                    "a catalog needs the Iceberg metadata: set `[iceberg] enabled = true`".into(),
                ))
            }
            false => None,
            true => {
                let text = ri
                    .and_then(|i| i.retention.as_deref())
                    .unwrap_or(defaults::ICEBERG_RETENTION);
                let ms = parse_duration_ms(text).map_err(|m| invalid("iceberg.retention", m.0))?;
                let max_snapshots = ri
                    .and_then(|i| i.max_snapshots)
                    .unwrap_or(defaults::ICEBERG_MAX_SNAPSHOTS);
                if max_snapshots == 0 {
                    return Err(invalid("iceberg.max_snapshots", "must be positive".into()));
                }
                let catalog = match ri.and_then(|i| i.catalog.as_deref()) {
                    None => None,
                    Some(uri) => {
                        let uri = subst("iceberg.catalog", uri)?;
                        let uri = match uri.strip_prefix("sqlite:") {
                            Some(p) if !p.starts_with('/') && !p.is_empty() => {
                                format!("sqlite:{}", base.join(p).display())
                            }
                            _ => uri,
                        };
                        let opt = |key: &str, v: Option<&String>| {
                            v.map(|v| subst(&format!("iceberg.{key}"), v)).transpose()
                        };
                        let namespace = opt("namespace", ri.and_then(|i| i.namespace.as_ref()))?
                            .unwrap_or_else(|| "default".to_string());
                        if namespace.split('.').any(str::is_empty) {
                            return Err(invalid(
                                "iceberg.namespace",
                                "levels are names joined by `.`".into(),
                            ));
                        }
                        Some(crate::table::iceberg::catalog::CatalogSettings {
                            uri,
                            name: opt("catalog_name", ri.and_then(|i| i.catalog_name.as_ref()))?
                                .unwrap_or_else(|| "sluice".to_string()),
                            namespace: namespace.split('.').map(str::to_string).collect(),
                            table: opt("table", ri.and_then(|i| i.table.as_ref()))?
                                .unwrap_or_else(|| name.clone()),
                            token: opt("catalog_token", ri.and_then(|i| i.catalog_token.as_ref()))?,
                            warehouse: opt(
                                "catalog_warehouse",
                                ri.and_then(|i| i.catalog_warehouse.as_ref()),
                            )?,
                        })
                    }
                };
                Some(IcebergConfig {
                    retention: Duration::from_millis(ms.unsigned_abs()),
                    max_snapshots,
                    catalog,
                })
            }
        };

        let rc = raw.compaction.as_ref();
        let target_text = rc
            .and_then(|c| c.target_size.as_deref())
            .unwrap_or(defaults::COMPACTION_TARGET_SIZE);
        let target_bytes =
            parse_size(target_text).map_err(|m| invalid("compaction.target_size", m.0))?;
        if target_bytes < 1 << 10 {
            return Err(invalid(
                "compaction.target_size",
                format!("`{target_text}`: at least 1KiB"),
            ));
        }
        let sort_by = rc.and_then(|c| c.sort_by.clone());
        for col in sort_by.iter().flatten() {
            if schema.table.field_with_name(col).is_err() {
                return Err(invalid(
                    "compaction.sort_by",
                    format!("`{col}` is not a column of the table"),
                ));
            }
        }
        let compaction = CompactionConfig {
            enabled: rc.and_then(|c| c.enabled).unwrap_or(true),
            target_bytes,
            sort_by,
            min_files: rc
                .and_then(|c| c.min_files)
                .unwrap_or(defaults::COMPACTION_MIN_FILES)
                .max(2),
        };

        Ok(Job {
            path: path.to_path_buf(),
            name,
            brokers,
            topics: raw.source.topics,
            group_id,
            start_offset,
            kafka_properties,
            schema,
            format,
            writers,
            event_time,
            window,
            layout,
            closing,
            storage_url,
            storage_options,
            compression,
            row_group_rows,
            commit: CommitPolicy {
                interval: Duration::from_millis(interval_ms.unsigned_abs()),
                max_buffered_bytes,
                max_rows,
            },
            checkpoint_every,
            bad_records,
            delta,
            iceberg,
            compaction,
            allow_incompatible_schema: false,
        })
    }
}

/// `[schema.registry]`: a registry URL (with its credentials, CA and timeout) or a directory.
fn writer_schemas(
    r: &RawRegistry,
    base: &Path,
    subst: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<WriterSchemas, ConfigError> {
    let key = |k: &str| format!("schema.registry.{k}");
    let opt = |k: &str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
        v.as_deref()
            .map(|v| subst(&key(k), v))
            .transpose()
            .map(|v| v.filter(|v| !v.is_empty()))
    };
    let err = |k: &str, m: &str| Err(invalid(&key(k), m.to_string()));
    let url = opt("url", &r.url)?;
    let directory = opt("directory", &r.directory)?;
    match (url, directory) {
        (Some(_), Some(_)) | (None, None) => err("url", "set exactly one of `url` and `directory`"),
        (None, Some(d)) => {
            if r.username.is_some() || r.token.is_some() || r.ca_file.is_some() {
                return err("directory", "credentials and `ca_file` go with `url`");
            }
            Ok(WriterSchemas::Directory(base.join(d)))
        }
        (Some(url), None) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return err("url", "expected an http:// or https:// URL");
            }
            let auth = match (
                opt("username", &r.username)?,
                opt("password", &r.password)?,
                opt("token", &r.token)?,
            ) {
                (None, None, None) => RegistryAuth::None,
                (Some(username), password, None) => RegistryAuth::Basic {
                    username,
                    password: password.unwrap_or_default(),
                },
                (None, None, Some(t)) => RegistryAuth::Bearer(t),
                _ => return err("token", "set `username`/`password` or `token`, not both"),
            };
            let timeout = match &r.timeout {
                Some(t) => {
                    let ms = parse_duration_ms(t).map_err(|m| invalid(&key("timeout"), m.0))?;
                    Duration::from_millis(ms.unsigned_abs().max(1))
                }
                None => Duration::from_secs(10),
            };
            Ok(WriterSchemas::Registry(RegistryConfig {
                url: url.trim_end_matches('/').to_string(),
                auth,
                ca_file: opt("ca_file", &r.ca_file)?.map(|f| base.join(f)),
                timeout,
            }))
        }
    }
}

/// A storage URL as given, or a plain path (a local folder, relative to `base`) turned into a
/// `file://` URL. Touches no filesystem: the folder is created when the table is opened.
pub fn resolve_storage_url(s: &str, base: &Path) -> Result<String, std::io::Error> {
    if s.contains("://") {
        return Ok(s.to_string());
    }
    let abs = std::path::absolute(base.join(s))?;
    url::Url::from_directory_path(&abs)
        .map(|u| u.to_string())
        .map_err(|()| std::io::Error::other(format!("{}: not a path", abs.display())))
}

fn parse_compression(s: &str) -> Result<Compression, Invalid> {
    let (name, level) = match s.split_once(':') {
        Some((n, l)) => (n, Some(l)),
        None => (s, None),
    };
    match (name, level) {
        ("zstd", None) => Ok(Compression::Zstd(1)),
        ("zstd", Some(l)) => match l.parse::<i32>() {
            Ok(l) if (1..=22).contains(&l) => Ok(Compression::Zstd(l)),
            _ => Err(invalid!("`{s}`: zstd level must be 1..=22")),
        },
        ("snappy", None) => Ok(Compression::Snappy),
        ("lz4", None) => Ok(Compression::Lz4),
        ("none", None) => Ok(Compression::None),
        _ => Err(invalid!(
            "`{s}`: expected zstd, zstd:LEVEL, snappy, lz4 or none"
        )),
    }
}

/// Replaces `${NAME}` with the variable's value; a missing variable is an error.
fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Invalid> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated `${` reference".into());
        };
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(invalid!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A minimal job on `storage_url` for unit tests: topic `t`, the payment schema.
#[cfg(test)]
pub(crate) fn test_job(storage_url: &str) -> Result<Job, ConfigError> {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/payment.avsc");
    let text = format!(
        "[source]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n\
         [schema]\nfile = \"{schema}\"\n[event_time]\nfield = \"created_at\"\n\
         [storage]\nurl = \"{storage_url}\"\n"
    );
    Job::parse(Path::new("/job.toml"), &text, &|_| None)
}

/// Every key a job file may set, dotted (`source.brokers`), from the parser's own structs: the
/// reference (docs/configuration.md) is checked against it. `source.properties` and
/// `storage.options` are maps of free-form keys, listed as themselves.
pub fn job_keys() -> Vec<String> {
    fn under(section: &str, fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| format!("{section}.{f}")).collect()
    }
    let mut keys = Vec::new();
    for top in fields_of::<RawJob>() {
        let more = match *top {
            "name" => vec!["name".to_string()],
            "source" => under("source", fields_of::<RawSource>()),
            "schema" => fields_of::<RawSchema>()
                .iter()
                .flat_map(|f| match *f {
                    "registry" => under("schema.registry", fields_of::<RawRegistry>()),
                    f => vec![format!("schema.{f}")],
                })
                .collect(),
            "event_time" => under("event_time", fields_of::<RawEventTime>()),
            "window" => under("window", fields_of::<RawWindow>()),
            "storage" => under("storage", fields_of::<RawStorage>()),
            "parquet" => under("parquet", fields_of::<RawParquet>()),
            "commit" => under("commit", fields_of::<RawCommit>()),
            "bad_records" => under("bad_records", fields_of::<RawBadRecords>()),
            "delta" => under("delta", fields_of::<RawDelta>()),
            "iceberg" => under("iceberg", fields_of::<RawIceberg>()),
            "compaction" => under("compaction", fields_of::<RawCompaction>()),
            // A section added to the parser but not here: named so that no reference can
            // document it, and the check fails until it is listed above.
            other => vec![format!("{other}.<keys not listed in config::job_keys>")],
        };
        keys.extend(more);
    }
    keys
}

/// The field names serde's derive gives a struct (its `deserialize_struct` call), read by a
/// deserializer that answers nothing else.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests;
