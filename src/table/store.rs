//! The table's storage: one object store under one root prefix, with one retry policy.
//!
//! Every object sluice writes goes through here: data and dead-letter files, manifest entries
//! and checkpoints. Paths are relative to the table root. Transient failures (a network error,
//! a 5xx, a throttling answer) are retried here, with jittered exponential backoff; permanent
//! ones (permission, authentication, a bad path, not found) are returned at once. This is the
//! only retry layer: stores are opened with the object store client's own retries off
//! ([`open_url`]), so every attempt of a request is seen here, and a create-only put knows
//! whether an earlier attempt of its own may have landed.
//!
//! A create-only put says whether the object was created or already there; only the caller
//! knows whether "already there" is its own earlier attempt (a data file under a fresh name)
//! or someone else's (a manifest entry: [`crate::table::commit`] decides).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::StoreError;

/// How often and how patiently transient store errors are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Backoff before the second attempt; doubled each time up to `max_backoff`. Each pause
    /// is drawn between half the backoff and the whole (so writers that failed together do
    /// not retry together).
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// About 35 s of retries at most: 0.1 s, 0.2 s, … up to 8 s between attempts.
    fn default() -> Self {
        Retry {
            attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl Retry {
    /// The pause before attempt `attempt` (1: the second), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let full =
            (self.backoff * (1u32 << attempt.saturating_sub(1).min(16))).min(self.max_backoff);
        jittered(full)
    }
}

/// A duration drawn uniformly from `[d/2, d]`.
pub fn jittered(d: Duration) -> Duration {
    let unit = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
    d.mul_f64(0.5 + unit / 2.0)
}

/// Opens the object store of `url` (`s3://`, `gs://`, `az://`/`abfs://`, `file://`,
/// `memory://`) with `options` (the keys of each store's builder, as `object_store` names
/// them), its client's own retries off: [`TableStore`] is the one retry layer.
pub fn open_url(
    url: &url::Url,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, Path), object_store::Error> {
    use object_store::ObjectStoreScheme as S;
    let (scheme, path) = S::parse(url)?;
    let path = Path::parse(path)?;
    // No retry in the client: a request that fails is returned to us at once.
    let once = object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    };
    macro_rules! build {
        ($builder:ty) => {{
            let builder = options.iter().fold(
                <$builder>::new().with_url(url.to_string()),
                |b, (k, v)| match k.to_ascii_lowercase().parse() {
                    Ok(key) => b.with_config(key, v),
                    Err(_) => b,
                },
            );
            Arc::new(builder.with_retry(once).build()?) as Arc<dyn ObjectStore>
        }};
    }
    let store = match scheme {
        S::Local => Arc::new(object_store::local::LocalFileSystem::new()) as Arc<dyn ObjectStore>,
        S::Memory => Arc::new(object_store::memory::InMemory::new()),
        S::AmazonS3 => build!(object_store::aws::AmazonS3Builder),
        S::GoogleCloudStorage => build!(object_store::gcp::GoogleCloudStorageBuilder),
        S::MicrosoftAzure => build!(object_store::azure::MicrosoftAzureBuilder),
        _ => {
            return Err(object_store::Error::NotSupported {
                source: format!("{url}: not a table store sluice can write to").into(),
            })
        }
    };
    Ok((store, path))
}

/// What a create-only put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object is new.
    New,
    /// An object was already there. `after_retry`: an earlier attempt of this call failed and
    /// may have landed, so the object may be this call's own.
    AlreadyThere { after_retry: bool },
}

/// Whether an error may go away when the call is repeated.
pub fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::Generic { source, .. } => !permanent_io(source.as_ref()),
        E::JoinError { .. } => true,
        _ => false,
    }
}

/// A local filesystem error wrapped as `Generic` that no retry fixes.
fn permanent_io(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return matches!(
                io.kind(),
                K::PermissionDenied | K::ReadOnlyFilesystem | K::InvalidInput | K::StorageFull
            );
        }
        cur = err.source();
    }
    false
}

/// A table's object store and root.
#[derive(Clone)]
pub struct TableStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    retry: Retry,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableStore({}, {})", self.store, self.root)
    }
}

impl TableStore {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        TableStore {
            store,
            root,
            retry: Retry::default(),
        }
    }

    /// The object store itself (tests wrap it to inject faults).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The same table with another retry policy.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The absolute store path of a path relative to the table root.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(seg);
        }
        p
    }

    /// The path relative to the table root of an absolute store path (`None` outside it).
    pub fn rel(&self, path: &Path) -> Option<String> {
        let parts: Vec<_> = path.prefix_match(&self.root)?.collect();
        Some(
            parts
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<&str>>()
                .join("/"),
        )
    }

    fn err(&self, rel: &str, source: object_store::Error) -> StoreError {
        StoreError {
            path: self.path(rel).to_string(),
            source,
        }
    }

    /// Runs `op` until it succeeds, fails permanently or runs out of attempts. `op` gets the
    /// attempt number (0 first).
    async fn retrying<T, F, Fut>(&self, rel: &str, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt + 1 < self.retry.attempts => {
                    tracing::warn!(path = rel, error = %e, attempt = attempt + 1, "{what} failed; retrying");
                    tokio::time::sleep(self.retry.delay(attempt + 1)).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.err(rel, e)),
            }
        }
    }

    /// Puts `body` at `rel` unless an object is there.
    pub async fn put_new(&self, rel: &str, body: Bytes) -> Result<Created, StoreError> {
        let path = self.path(rel);
        let payload = PutPayload::from(body);
        self.retrying(rel, "create-only put", |attempt| {
            let (path, payload) = (&path, payload.clone());
            async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match self.store.put_opts(path, payload, opts).await {
                    Ok(_) => Ok(Created::New),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyThere {
                        after_retry: attempt > 0,
                    }),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Puts `body` at `rel`, replacing what is there (hints such as `_last_checkpoint` only).
    pub async fn put(&self, rel: &str, body: Bytes) -> Result<(), StoreError> {
        let path = self.path(rel);
        let payload = PutPayload::from(body);
        self.retrying(rel, "put", |_| {
            let (path, payload) = (&path, payload.clone());
            async move { self.store.put(path, payload).await.map(|_| ()) }
        })
        .await
    }

    /// The object at `rel`, or `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(rel);
        self.retrying(rel, "read", |_| {
            let path = &path;
            async move {
                match self.store.get(path).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Bytes `range` of the object at `rel`.
    pub async fn get_range(
        &self,
        rel: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let path = self.path(rel);
        self.retrying(rel, "ranged read", |_| {
            let (path, range) = (&path, range.clone());
            async move { self.store.get_range(path, range).await }
        })
        .await
    }

    /// The object's metadata, or `None` when there is none.
    pub async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(rel);
        self.retrying(rel, "head", |_| {
            let path = &path;
            async move {
                match self.store.head(path).await {
                    Ok(m) => Ok(Some(m)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Deletes the object at `rel`; one already gone is not an error.
    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let path = self.path(rel);
        self.retrying(rel, "delete", |_| {
            let path = &path;
            async move {
                match self.store.delete(path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Every object below `rel_prefix` (the whole table for `""`).
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = self.path(rel_prefix);
        self.retrying(rel_prefix, "list", |_| {
            let prefix = &prefix;
            async move { self.store.list(Some(prefix)).try_collect().await }
        })
        .await
    }

    /// The objects under `rel_prefix` whose paths sort after `rel_offset` (S3's `start-after`:
    /// one request for the tail of a long listing, where the store supports it).
    pub async fn list_after(
        &self,
        rel_prefix: &str,
        rel_offset: &str,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = self.path(rel_prefix);
        let offset = self.path(rel_offset);
        self.retrying(rel_prefix, "list", |_| {
            let (prefix, offset) = (&prefix, &offset);
            async move {
                self.store
                    .list_with_offset(Some(prefix), offset)
                    .try_collect()
                    .await
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn create_only_put_reports_what_it_found_and_paths_stay_under_the_root() {
        let s = TableStore::new(Arc::new(InMemory::new()), Path::from("tables/t"));
        let body = Bytes::from_static(b"x");
        assert_eq!(
            s.put_new("a/b.json", body.clone()).await.unwrap(),
            Created::New
        );
        assert_eq!(
            s.put_new("a/b.json", body).await.unwrap(),
            Created::AlreadyThere { after_retry: false }
        );
        assert_eq!(s.get("a/b.json").await.unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(s.get("a/missing").await.unwrap(), None);
        let listed = s.list("a").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(s.rel(&listed[0].location).as_deref(), Some("a/b.json"));
        s.delete("a/b.json").await.unwrap();
        s.delete("a/b.json").await.unwrap();
        assert_eq!(s.head("a/b.json").await.unwrap(), None);
    }

    #[test]
    fn permission_errors_are_not_retried_network_ones_are() {
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: "no".into(),
        };
        assert!(!is_transient(&denied));
        let io_denied = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert!(!is_transient(&io_denied));
        let reset = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(is_transient(&reset));
        assert!(!is_transient(&object_store::Error::NotFound {
            path: "p".into(),
            source: "gone".into()
        }));
    }
}
