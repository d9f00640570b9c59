//! Encoding and uploading a commit's files: bodies are encoded on every core, largest first,
//! and each is uploaded as soon as it is encoded, so only a few encoded bodies are held at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::{LoadError, Result, StoreError};
use crate::table::commit::Encoded;
use crate::table::entry::StatsJson;
use crate::table::store::{Created, TableStore};

/// Uploads in flight at once.
const UPLOADS: usize = 8;

/// One object to write: where, and how big it is expected to be (to schedule the largest first).
pub struct Pending<'a> {
    pub rel: &'a str,
    pub weight: u64,
}

/// What an upload returns of one body: its size, and the statistics its encoder kept.
pub type Uploaded = (u64, Option<StatsJson>);

/// Encodes `files[i]` with `encode(i)` on up to one thread per core and uploads each body under
/// its (fresh, never reused) name. Returns each body's size and statistics, in `files`' order.
pub fn encode_and_upload<F>(
    rt: &tokio::runtime::Runtime,
    store: &TableStore,
    files: &[Pending<'_>],
    encode: F,
) -> Result<Vec<Uploaded>>
where
    F: Fn(usize) -> Result<Encoded> + Sync,
{
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len());
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].weight));
    let next = AtomicUsize::new(0);
    let sizes: Mutex<Vec<Option<Uploaded>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Result<Encoded>)>(threads * 2);
        for _ in 0..threads {
            let (tx, order, next, encode) = (tx.clone(), &order, &next, &encode);
            let encoder = std::thread::Builder::new().name("sluice-encode".into());
            let spawned = encoder.spawn_scoped(scope, move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                // The receiver is gone after an error: stop.
                if tx.blocking_send((i, encode(i))).is_err() {
                    break;
                }
            });
            spawned.map_err(LoadError::Runtime)?;
        }
        drop(tx);
        let bodies = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|x| (Ok::<_, LoadError>(x), rx))
        });
        rt.block_on(bodies.try_for_each_concurrent(UPLOADS, |(i, body)| {
            let sizes = &sizes;
            async move {
                let Encoded { body, stats } = body?;
                let size = body.len() as u64;
                put_fresh(store, files[i].rel, Bytes::from(body)).await?;
                if let Ok(mut s) = sizes.lock() {
                    s[i] = Some((size, stats));
                }
                Ok(())
            }
        }))
    })?;
    // Every file must have been written: an encoder that died would leave one out.
    sizes
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(files)
        .map(|(size, f)| {
            size.ok_or_else(|| {
                LoadError::Runtime(std::io::Error::other(format!(
                    "{} was not encoded (an encoder thread stopped)",
                    f.rel
                )))
            })
        })
        .collect()
}

/// Puts already encoded bodies under fresh names, several at once.
pub async fn upload_all<'a>(
    store: &TableStore,
    bodies: impl IntoIterator<Item = (&'a str, Bytes)>,
) -> Result<()> {
    futures::stream::iter(bodies.into_iter().map(Ok::<_, LoadError>))
        .try_for_each_concurrent(UPLOADS, |(rel, body)| put_fresh(store, rel, body))
        .await
}

/// Puts a body under a name no one else uses: already there is only acceptable when an
/// earlier attempt of this put may have landed.
pub async fn put_fresh(store: &TableStore, rel: &str, body: Bytes) -> Result<()> {
    match store.put_new(rel, body).await? {
        Created::New | Created::AlreadyThere { after_retry: true } => Ok(()),
        Created::AlreadyThere { after_retry: false } => Err(LoadError::Store(StoreError {
            path: store.path(rel).to_string(),
            source: object_store::Error::AlreadyExists {
                path: rel.to_string(),
                source: "a fresh file name was already taken".into(),
            },
        })),
    }
}

/// Deletes files no entry names (a refused partition's uploads); gc catches what this misses.
pub async fn delete_best_effort(store: &TableStore, rels: &[String]) {
    for rel in rels {
        if let Err(e) = store.delete(rel).await {
            tracing::debug!(path = %rel, error = %e, "could not delete an unpublished file (gc will)");
        }
    }
}
