//! The options of a record's path that a job sets: how payloads are encoded, where Avro writer
//! schemas come from (and the registry's address and credentials), where the event time comes
//! from, and how Parquet files are compressed. `record` owns them; `config` reads them from job
//! files.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::record::schema::TimeFormat;

/// How payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    Json,
    /// Raw Avro binary datums written with the job's schema.
    Avro,
    /// The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, an Avro datum.
    #[serde(rename = "confluent-avro", alias = "confluent_avro")]
    ConfluentAvro,
}

/// Where the writer schemas of `confluent-avro` payloads come from, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterSchemas {
    /// A Confluent-compatible schema registry (`GET {url}/schemas/ids/{id}`).
    Registry(RegistryConfig),
    /// A folder of `<id>.avsc` files (offline, or a registry exported to files).
    Directory(PathBuf),
}

#[derive(Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub url: String,
    pub auth: RegistryAuth,
    /// Extra CA certificates (PEM) to trust, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Per request.
    pub timeout: Duration,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    None,
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RegistryAuth::None => "None",
            RegistryAuth::Basic { .. } => "Basic(..)",
            RegistryAuth::Bearer(_) => "Bearer(..)",
        })
    }
}

/// Where the event time of a record comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTime {
    /// The Kafka message timestamp (create or log-append time).
    KafkaTimestamp,
    /// A top-level field of the event.
    Field { name: String, format: TimeFormat },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd(i32),
    Snappy,
    Lz4,
    None,
}

/// A URL with any user info and query string removed, safe to print.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}
