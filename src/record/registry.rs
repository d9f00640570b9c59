//! Writer schemas by id: a Confluent-compatible schema registry, or a folder of `<id>.avsc`.
//!
//! An id names one schema for ever, so a schema found is cached by the caller and never asked
//! again. A lookup has three outcomes: the schema, [`Lookup::Missing`] (the registry answered
//! that it has no such id, error code 40403: the records naming it are dead letters), or
//! [`Unavailable`] (no answer: network, timeout, HTTP 5xx, refused credentials, a 404 that is
//! not the registry's, as from a wrong URL). Nothing is decided on an
//! unavailable registry: the caller waits and asks again.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{invalid, Invalid};
use crate::record::options::{redact_url, RegistryAuth, RegistryConfig, WriterSchemas};

/// What a registry said about an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The writer schema's JSON text.
    Found(String),
    /// The registry has no usable schema by that id (why).
    Missing(String),
}

/// The registry could not be asked (why); ask again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema registry unavailable: {0}")]
pub struct Unavailable(pub String);

/// Looks up writer schemas by id.
pub struct SchemaSource {
    kind: Kind,
}

enum Kind {
    Http {
        config: RegistryConfig,
        client: reqwest::Client,
        /// Built on the first lookup, in the thread that decodes (never inside a runtime).
        rt: OnceLock<Result<tokio::runtime::Runtime, String>>,
    },
    Directory(PathBuf),
}

impl SchemaSource {
    pub fn new(writers: &WriterSchemas) -> Result<Self, Invalid> {
        let kind = match writers {
            WriterSchemas::Directory(d) => Kind::Directory(d.clone()),
            WriterSchemas::Registry(config) => {
                let mut b = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if let Some(ca) = &config.ca_file {
                    let pem = std::fs::read(ca)
                        .map_err(|e| invalid!("schema.registry.ca_file {}: {e}", ca.display()))?;
                    for cert in reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| invalid!("schema.registry.ca_file {}: {e}", ca.display()))?
                    {
                        b = b.add_root_certificate(cert);
                    }
                }
                let client = b
                    .build()
                    .map_err(|e| invalid!("schema registry client: {e}"))?;
                Kind::Http {
                    config: config.clone(),
                    client,
                    rt: OnceLock::new(),
                }
            }
        };
        Ok(SchemaSource { kind })
    }

    /// Where schemas come from, for messages (credentials left out).
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Http { config, .. } => redact_url(&config.url),
            Kind::Directory(d) => d.display().to_string(),
        }
    }

    /// The writer schema with id `id`.
    pub fn lookup(&self, id: u32) -> Result<Lookup, Unavailable> {
        match &self.kind {
            Kind::Directory(dir) => {
                let path = dir.join(format!("{id}.avsc"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(Lookup::Found(text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lookup::Missing(
                        format!("no schema with id {id} ({} does not exist)", path.display()),
                    )),
                    Err(e) => Err(Unavailable(format!("{}: {e}", path.display()))),
                }
            }
            Kind::Http { config, client, rt } => {
                let rt = runtime(rt)?;
                rt.block_on(fetch(client, config, id))
            }
        }
    }
    /// The newest schema registered under `subject` (`GET {url}/subjects/{subject}/versions/latest`):
    /// its id and Avro text, or `None` when the registry has no such subject. A directory of
    /// `<id>.avsc` files has no subjects: `None`.
    pub fn latest(&self, subject: &str) -> Result<Option<(u32, String)>, Unavailable> {
        match &self.kind {
            Kind::Directory(_) => Ok(None),
            Kind::Http { config, client, rt } => {
                let rt = runtime(rt)?;
                rt.block_on(fetch_latest(client, config, subject))
            }
        }
    }
}

/// The runtime of registry calls, built on the first one in the thread that decodes (never
/// inside a runtime).
fn runtime(
    rt: &OnceLock<Result<tokio::runtime::Runtime, String>>,
) -> Result<&tokio::runtime::Runtime, Unavailable> {
    rt.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Unavailable(format!("no runtime for registry calls: {e}")))
}

/// A GET to the registry with the job's credentials: the status and the body.
async fn get(
    client: &reqwest::Client,
    config: &RegistryConfig,
    url: &str,
) -> Result<(reqwest::StatusCode, String), Unavailable> {
    let mut req = client.get(url).header(
        "Accept",
        "application/vnd.schemaregistry.v1+json, application/json",
    );
    req = match &config.auth {
        RegistryAuth::None => req,
        RegistryAuth::Basic { username, password } => req.basic_auth(username, Some(password)),
        RegistryAuth::Bearer(token) => req.bearer_auth(token),
    };
    let at = redact_url(url);
    let resp = req
        .send()
        .await
        .map_err(|e| Unavailable(format!("GET {at}: {}", error_chain(&e))))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| Unavailable(format!("GET {at}: reading the answer: {e}")))?;
    Ok((status, body))
}

async fn fetch_latest(
    client: &reqwest::Client,
    config: &RegistryConfig,
    subject: &str,
) -> Result<Option<(u32, String)>, Unavailable> {
    let url = format!("{}/subjects/{subject}/versions/latest", config.url);
    let at = redact_url(&url);
    let (status, body) = get(client, config, &url).await?;
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error_code").and_then(serde_json::Value::as_i64));
    // 40401: no such subject (Confluent's code; Apicurio's ccompat API answers the same).
    if status == reqwest::StatusCode::NOT_FOUND && code == Some(40401) {
        return Ok(None);
    }
    let answer = schema_answer(&at, status, &body)?;
    let id = answer
        .id
        .ok_or_else(|| Unavailable(format!("GET {at}: not a registry answer: no `id`")))?;
    match answer.schema_type.as_deref() {
        None | Some("AVRO") => Ok(Some((id, answer.schema))),
        Some(other) => Err(Unavailable(format!(
            "GET {at}: the subject's latest schema (id {id}) is a {other} schema, not Avro"
        ))),
    }
}

async fn fetch(
    client: &reqwest::Client,
    config: &RegistryConfig,
    id: u32,
) -> Result<Lookup, Unavailable> {
    let url = format!("{}/schemas/ids/{id}", config.url);
    let at = redact_url(&url);
    let (status, body) = get(client, config, &url).await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        // Only the registry's own answer (error code 40403, "schema not found") says the id
        // does not exist; any other 404 is a wrong URL, and deciding on it would dead-letter
        // every record.
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error_code").and_then(serde_json::Value::as_i64));
        if code == Some(40403) {
            return Ok(Lookup::Missing(format!(
                "the registry has no schema with id {id}"
            )));
        }
        return Err(Unavailable(format!(
            "GET {at}: HTTP 404 without the registry's \"schema not found\" (error code 40403): check schema.registry.url: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    let answer = schema_answer(&at, status, &body)?;
    match answer.schema_type.as_deref() {
        None | Some("AVRO") => Ok(Lookup::Found(answer.schema)),
        Some(other) => Ok(Lookup::Missing(format!(
            "schema id {id} is a {other} schema, not Avro"
        ))),
    }
}

/// A registry's answer holding a schema.
#[derive(serde::Deserialize)]
struct SchemaAnswer {
    #[serde(default)]
    id: Option<u32>,
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

/// The schema in a successful answer; any other status is no answer (with a hint for the
/// ones a user can fix).
fn schema_answer(
    at: &str,
    status: reqwest::StatusCode,
    body: &str,
) -> Result<SchemaAnswer, Unavailable> {
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => {
                " (check the registry credentials: schema.registry.* in the job, --registry-username with init)"
            }
            404 => " (check the registry URL)",
            _ => "",
        };
        return Err(Unavailable(format!(
            "GET {at}: HTTP {status}{hint}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    serde_json::from_str(body)
        .map_err(|e| Unavailable(format!("GET {at}: not a registry answer: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
