//! Encoding and uploading a commit's files: bodies are encoded on every core, largest first,
//! and each is uploaded as soon as it is encoded (and its rows checked), so only a few encoded
//! bodies are held at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::{CommitError, StoreError};
use crate::table::entry::StatsJson;
use crate::table::store::{Created, TableStore};

/// Uploads in flight at once.
const UPLOADS: usize = 8;

/// A data file's encoded body, the rows it holds (read from the Parquet writer's own
/// metadata) and the statistics of its rows.
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub rows: u64,
    pub stats: Option<StatsJson>,
}

impl Encoded {
    pub fn new(body: Vec<u8>, rows: u64) -> Self {
        Encoded {
            body,
            rows,
            stats: None,
        }
    }
}

/// One data file to write: where, and the rows its range accounts for (which its encoded body
/// must hold; the largest are encoded first).
pub struct Pending<'a> {
    pub rel: &'a str,
    pub rows: u64,
}

/// What an upload returns of one body: its size, and the statistics its encoder kept.
pub type Uploaded = (u64, Option<StatsJson>);

/// Encodes `files[i]` with `encode(i)` on up to one thread per core and uploads each body under
/// its (fresh, never reused) name, once its rows are checked: a body holding other than the rows
/// its range accounts for is refused before it is uploaded. Returns each body's size and
/// statistics, in `files`' order.
pub fn encode_and_upload<F>(
    rt: &tokio::runtime::Runtime,
    store: &TableStore,
    files: &[Pending<'_>],
    encode: F,
) -> Result<Vec<Uploaded>, CommitError>
where
    F: Fn(usize) -> Result<Encoded, CommitError> + Sync,
{
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len());
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].rows));
    let next = AtomicUsize::new(0);
    let sizes: Mutex<Vec<Option<Uploaded>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<(usize, Result<Encoded, CommitError>)>(threads * 2);
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
            spawned.map_err(CommitError::Thread)?;
        }
        drop(tx);
        let bodies = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|x| (Ok::<_, CommitError>(x), rx))
        });
        rt.block_on(bodies.try_for_each_concurrent(UPLOADS, |(i, body)| {
            let sizes = &sizes;
            async move {
                let Encoded { body, rows, stats } = body?;
                if rows != files[i].rows {
                    return Err(CommitError::Rows {
                        path: files[i].rel.to_string(),
                        encoded: rows,
                        expected: files[i].rows,
                    });
                }
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
            size.ok_or_else(|| CommitError::NotEncoded {
                path: f.rel.to_string(),
            })
        })
        .collect()
}

/// A data file's body, rows and statistics: `batches` (all of `schema`) encoded as one Parquet
/// file. The rows are the Parquet writer's own count (what the file holds), not the batches'.
/// With `ids` (a table with Iceberg metadata), the columns carry their Iceberg field ids.
pub fn encode_data_file(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[arrow::array::RecordBatch],
    props: &parquet::file::properties::WriterProperties,
    path: &str,
    ids: Option<&crate::table::iceberg::FieldIds>,
) -> Result<Encoded, CommitError> {
    let with_ids = ids
        .and_then(|ids| crate::table::iceberg::schema::with_field_ids(schema, ids))
        .map(std::sync::Arc::new);
    let schema = with_ids.as_ref().unwrap_or(schema);
    let (body, metadata) = crate::record::encode::encode_with_metadata(schema, batches, props)
        .map_err(|source| CommitError::Encode {
            path: path.to_string(),
            source: Box::new(source),
        })?;
    let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let stats = crate::table::delta::stats::file_stats(batches, &metadata);
    Ok(Encoded {
        body,
        rows,
        stats: StatsJson::try_from(stats).ok(),
    })
}

/// Puts already encoded bodies under fresh names, several at once.
pub async fn upload_all<'a>(
    store: &TableStore,
    bodies: impl IntoIterator<Item = (&'a str, Bytes)>,
) -> Result<(), StoreError> {
    futures::stream::iter(bodies.into_iter().map(Ok::<_, StoreError>))
        .try_for_each_concurrent(UPLOADS, |(rel, body)| put_fresh(store, rel, body))
        .await
}

/// Puts a body under a name no one else uses. "Already there" is only acceptable when an
/// earlier attempt of this put may have landed (its answer was lost), and then only if the
/// object there has this body's size: the name is fresh, so nobody else writes it.
pub async fn put_fresh(store: &TableStore, rel: &str, body: Bytes) -> Result<(), StoreError> {
    let size = body.len() as u64;
    let taken = |why: &str| StoreError {
        path: store.path(rel).to_string(),
        source: object_store::Error::AlreadyExists {
            path: rel.to_string(),
            source: why.to_string().into(),
        },
    };
    match store.put_new(rel, body).await? {
        Created::New => Ok(()),
        Created::AlreadyThere { after_retry: true } => match store.head(rel).await? {
            Some(meta) if meta.size == size => {
                tracing::debug!(path = rel, "an upload whose answer was lost had landed");
                Ok(())
            }
            _ => Err(taken(
                "a fresh file name was taken, not by an earlier attempt of ours",
            )),
        },
        Created::AlreadyThere { after_retry: false } => {
            Err(taken("a fresh file name was already taken"))
        }
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
