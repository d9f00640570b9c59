//! The commit protocol: **prepare → write → publish**, each stage a type that only the one
//! before it can make, none of them touching Kafka.
//!
//! ```text
//! Committer::prepare(kind, proposals, removed)   re-read the log; refuse what cannot fit:
//!   └► Prepared (+ refusals)                     fenced, overlapping, stale, unaccounted ranges
//! Prepared::write(files, dead letters, encode)   encode and upload under fresh names;
//!   └► Written                                   publishes nothing (a crash leaves orphans for gc)
//! Written::publish()                             loop: re-read the log (not before the first
//!   └► Outcome::Published { entry } |              put) — our entry in it? published (a lost answer);
//!      Outcome::Refused { refused }                refusals? drop those partitions, delete their
//!                                                  files; else one create-only put of seq + 1:
//!                                                  created → published; already there → loop;
//!                                                  error → loop once: ours, or the error
//! ```
//!
//! Only [`Written::publish`] decides whether an entry of ours landed, and only by reading the
//! log for its `commit_id`: a put that failed, timed out or found its sequence number taken is
//! followed by a re-read, never trusted. The loader, backfills, compaction and table-format
//! writers all publish through here.
//!
//! After each publish (and on open, and before each commit) the committer brings the table's
//! Delta log up to the manifest ([`crate::table::delta`]); a failure there is logged and never
//! fails the load, which the manifest alone makes exactly once.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::error::{LoadError, ManifestError, Result};
use crate::table::delta::{DeltaError, DeltaLog};
use crate::table::entry::{
    DataFile, DeadLetterFile, Entry, EntryKind, OffsetRange, SchemaDef, StatsJson, Watermark,
    FORMAT_VERSION,
};
use crate::table::manifest::Manifest;
use crate::table::state::{Refusal, TableState};
use crate::table::store::Created;
use crate::table::upload::{self, Pending};

/// A writer's handle on a table: its manifest and the state read from it.
pub struct Committer {
    manifest: Manifest,
    state: Arc<Mutex<TableState>>,
    rt: Arc<tokio::runtime::Runtime>,
    writer: String,
    /// The schema this writer's files have, recorded in the entries where it takes effect.
    schema: Option<SchemaDef>,
    delta: Option<Arc<DeltaLog>>,
    /// The table's window size: entries record the windows they close.
    window_ms: Option<i64>,
}

/// A data file's encoded body and the statistics of its rows.
#[derive(Debug, Default)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub stats: Option<StatsJson>,
}

impl From<Vec<u8>> for Encoded {
    fn from(body: Vec<u8>) -> Self {
        Encoded { body, stats: None }
    }
}

/// One partition's range as a writer proposes it, with what its files will hold.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub range: OffsetRange,
    pub rows: u64,
    pub dead_letters: u64,
}

/// Stage 1: ranges that fit on the table as last read.
#[derive(Debug)]
pub struct Prepared {
    kind: EntryKind,
    ranges: Vec<OffsetRange>,
    removed: Vec<String>,
    watermarks: Vec<Watermark>,
}

/// Stage 2: every file of the entry is in storage; nothing is published.
#[derive(Debug)]
pub struct Written {
    entry: Entry,
}

/// Stage 3.
#[derive(Debug)]
pub enum Outcome {
    /// The entry is in the log at `entry.seq`, without the partitions in `refused`.
    Published {
        entry: Box<Entry>,
        refused: Vec<Refusal>,
        conflicts: u32,
    },
    /// Nothing was published: every partition was refused, or a refusal no partition can be
    /// dropped for (an overlapping backfill, a stale replace).
    Refused {
        refused: Vec<Refusal>,
        conflicts: u32,
    },
}

/// Locks the table state; a writer that panicked holding it left a state that is still whole
/// (every change to it is one `apply`).
pub fn lock(state: &Mutex<TableState>) -> MutexGuard<'_, TableState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Committer {
    /// Reads the table's state; `writer` names this process in the entries it publishes.
    pub fn open(
        manifest: Manifest,
        rt: Arc<tokio::runtime::Runtime>,
        writer: String,
    ) -> Result<Self> {
        let state = rt.block_on(manifest.load())?;
        Ok(Committer {
            manifest,
            state: Arc::new(Mutex::new(state)),
            rt,
            writer,
            schema: None,
            delta: None,
            window_ms: None,
        })
    }

    /// Records `schema` in the entries where it takes effect, and keeps `delta` (the table's
    /// Delta log) in step with the manifest, starting now.
    pub fn with_table(mut self, schema: SchemaDef, delta: Option<DeltaLog>) -> Self {
        self.schema = Some(schema);
        self.delta = delta.map(Arc::new);
        self.sync_delta(None);
        self
    }

    /// Windows of `window_ms`: each entry that moves every partition's watermark past a
    /// window's end records that it closes it, and its markers are written after it.
    pub fn with_windows(mut self, window_ms: i64) -> Self {
        self.window_ms = Some(window_ms);
        self.sync_markers();
        self
    }

    /// Writes the markers of closed windows that have none yet (after a crash between the
    /// closing entry and its markers); logs a failure (the next commit tries again).
    fn sync_markers(&self) {
        let Some(w) = self.window_ms else { return };
        let (closed, windows) = {
            let s = lock(&self.state);
            let Some(closed) = s.closed_through_ms else {
                return;
            };
            let windows: std::collections::BTreeSet<i64> =
                s.files.iter().map(|f| f.window_start_ms).collect();
            (closed, windows)
        };
        let r = self.rt.block_on(crate::table::closed::sync(
            &self.manifest,
            w,
            closed,
            &windows,
        ));
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not write the markers of closed windows; trying again at the next commit");
        }
    }

    /// Brings the Delta log up to the manifest as last read; `fresh` is an entry just
    /// published. Returns the versions written. Errors are the caller's to report.
    pub fn delta_sync(&self, fresh: Option<&Entry>) -> std::result::Result<u64, DeltaError> {
        let Some(delta) = &self.delta else {
            return Ok(0);
        };
        let head = lock(&self.state).seq;
        self.rt.block_on(delta.sync(&self.manifest, head, fresh))
    }

    /// [`Committer::delta_sync`], logging a failure (the load goes on: the manifest is the
    /// truth, and the next commit tries again).
    fn sync_delta(&self, fresh: Option<&Entry>) {
        match self.delta_sync(fresh) {
            Ok(_) => {}
            Err(e @ DeltaError::Foreign { .. }) => tracing::error!(error = %e, "Delta log"),
            Err(DeltaError::Stopped(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not bring the Delta log up to the manifest; trying again at the next commit")
            }
        }
    }

    pub fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.rt.clone()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The state as of the last read (shared: a consumer's rebalance callback reads it too).
    pub fn state(&self) -> Arc<Mutex<TableState>> {
        self.state.clone()
    }

    /// Stage 1: re-reads the log and splits `proposals` into the ranges that fit and the
    /// refusals (early fencing: nothing is uploaded for a partition another writer moved past).
    pub fn prepare(
        &self,
        kind: EntryKind,
        proposals: Vec<Proposal>,
        removed: Vec<String>,
    ) -> Result<(Prepared, Vec<Refusal>)> {
        let ranges: Vec<OffsetRange> = proposals.iter().map(|p| p.range.clone()).collect();
        let mut refused = {
            let mut s = lock(&self.state);
            self.rt.block_on(self.manifest.refresh(&mut s))?;
            s.check_ranges(kind, &ranges, &removed)
        };
        // Entries other writers published (and perhaps did not project before they died).
        self.sync_delta(None);
        refused.extend(proposals.iter().filter_map(|p| {
            p.range
                .unaccounted(p.rows, p.dead_letters)
                .map(Refusal::Unaccounted)
        }));
        let ranges = ranges
            .into_iter()
            .filter(|r| !refused.iter().any(|x| x.names(&r.topic, r.partition)))
            .collect();
        Ok((
            Prepared {
                kind,
                ranges,
                removed,
                watermarks: Vec::new(),
            },
            refused,
        ))
    }
}

impl Prepared {
    /// The ranges that may be written.
    pub fn ranges(&self) -> &[OffsetRange] {
        &self.ranges
    }

    /// Records the partitions' watermarks in the entry.
    pub fn set_watermarks(&mut self, watermarks: Vec<Watermark>) {
        self.watermarks = watermarks;
    }

    /// Stage 2: encodes `files[i]` with `encode(i)`, uploads it and the dead-letter bodies,
    /// and returns the entry to publish. Files must belong to prepared ranges.
    pub fn write<F>(
        self,
        c: &Committer,
        mut files: Vec<DataFile>,
        dead: Vec<(DeadLetterFile, Vec<u8>)>,
        encode: F,
    ) -> Result<Written>
    where
        F: Fn(usize) -> Result<Encoded> + Sync,
    {
        // A file with spans (compacted, or carried over by a replace) moves rows of its
        // sources: publishing checks its lineage against the files removed.
        let unprepared = files
            .iter()
            .filter(|f| f.spans.is_empty())
            .map(|f| (&f.topic, f.partition, &f.path))
            .chain(dead.iter().map(|(d, _)| (&d.topic, d.partition, &d.path)))
            .find(|(t, p, _)| {
                !self
                    .ranges
                    .iter()
                    .any(|r| &r.topic == *t && r.partition == *p)
            });
        if let Some((t, p, path)) = unprepared {
            return Err(LoadError::Refused {
                message: format!("{path}: {t}/{p} has no prepared range"),
            });
        }
        let store = c.manifest.store();
        let pending: Vec<Pending<'_>> = files
            .iter()
            .map(|f| Pending {
                rel: &f.path,
                weight: f.rows,
            })
            .collect();
        let encoded = upload::encode_and_upload(&c.rt, store, &pending, encode)?;
        for (f, (size, stats)) in files.iter_mut().zip(encoded) {
            f.bytes = size;
            f.stats = stats;
        }
        let (mut dead_files, bodies): (Vec<DeadLetterFile>, Vec<Bytes>) =
            dead.into_iter().map(|(d, b)| (d, Bytes::from(b))).unzip();
        for (d, b) in dead_files.iter_mut().zip(&bodies) {
            d.bytes = b.len() as u64;
        }
        let uploads = dead_files.iter().map(|d| d.path.as_str()).zip(bodies);
        c.rt.block_on(upload::upload_all(store, uploads))?;
        crate::failpoint::hit("after-upload");
        Ok(Written {
            entry: Entry {
                format: FORMAT_VERSION,
                seq: 0,
                kind: self.kind,
                commit_id: uuid::Uuid::new_v4().to_string(),
                writer: c.writer.clone(),
                committed_at_ms: chrono::Utc::now().timestamp_millis(),
                ranges: self.ranges,
                files,
                dead_letters: dead_files,
                removed: self.removed,
                schema: None,
                watermarks: self.watermarks,
                closed_through_ms: None,
            },
        })
    }
}

impl Written {
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Stage 3: publishes the entry with one conditional put, re-reading the log after every
    /// put that was not plainly created.
    pub fn publish(self, c: &Committer) -> Result<Outcome> {
        let mut entry = self.entry;
        let (mut refused, mut orphaned, mut conflicts) = (Vec::new(), Vec::new(), 0u32);
        // The answer of a put that did not plainly create the entry.
        let mut unsure: Option<std::result::Result<Created, ManifestError>> = None;
        let mut s = lock(&c.state);
        // No re-read before the first put: nothing of ours can be in the log yet, and the state
        // (read at prepare, or since) either holds the whole log — then `seq + 1` is free — or
        // the create-only put finds the number taken and the loop re-reads.
        let mut first = true;
        let outcome = loop {
            // The one place that decides whether a put of ours landed: the log says so.
            let applied = if first {
                first = false;
                Vec::new()
            } else {
                c.rt.block_on(c.manifest.refresh(&mut s))?
            };
            if let Some((seq, _)) = applied.iter().find(|(_, id)| *id == entry.commit_id) {
                entry.seq = *seq;
                break Outcome::Published {
                    entry: Box::new(entry),
                    refused,
                    conflicts,
                };
            }
            match unsure.take() {
                Some(Err(e)) => {
                    // Not in the log: it failed. Files of partitions dropped meanwhile go now;
                    // the rest stay for a retry of the caller or for gc.
                    drop(s);
                    c.rt.block_on(upload::delete_best_effort(c.manifest.store(), &orphaned));
                    return Err(e.into());
                }
                Some(Ok(_)) => conflicts += 1, // taken by another writer
                None => {}
            }
            let now = s.check(&entry);
            if !now.is_empty() {
                // A replace is all or nothing; so is a refusal no partition can be dropped for.
                let whole = matches!(entry.kind, EntryKind::Replace | EntryKind::Compact)
                    || now.iter().any(|r| !r.is_partition_local());
                if whole {
                    orphaned.extend(entry.files.iter().map(|f| f.path.clone()));
                    orphaned.extend(entry.dead_letters.iter().map(|d| d.path.clone()));
                    refused.extend(now);
                    break Outcome::Refused { refused, conflicts };
                }
                let gone: Vec<(String, i32)> = entry
                    .ranges
                    .iter()
                    .filter(|r| now.iter().any(|x| x.names(&r.topic, r.partition)))
                    .map(|r| (r.topic.clone(), r.partition))
                    .collect();
                orphaned.extend(entry.drop_partitions(&gone));
                refused.extend(now);
                if entry.ranges.is_empty() {
                    break Outcome::Refused { refused, conflicts };
                }
                continue;
            }
            entry.seq = s.seq + 1;
            entry.closed_through_ms = c.window_ms.and_then(|w| s.closing(&entry, w));
            if matches!(entry.kind, EntryKind::Backfill | EntryKind::Replace) {
                // Rows a backfill adds to closed windows are late additions (rows a replace
                // carries over from a compacted file are not added: they moved).
                let closed = s.closed_through_ms.unwrap_or(i64::MIN);
                let added = entry.files.iter_mut().filter(|f| f.spans.is_empty());
                for f in added.filter(|f| f.window_end_ms <= closed) {
                    f.late = true;
                }
            }
            // The schema is recorded where it takes effect: a new table, a changed schema.
            // A compaction writes the schema of the files it merges, not the writer's.
            entry.schema = c
                .schema
                .clone()
                .filter(|mine| s.schema.as_ref() != Some(mine) && entry.kind != EntryKind::Compact);
            crate::failpoint::hit("manifest-put");
            match c.rt.block_on(c.manifest.put_entry(&entry)) {
                Ok(Created::New) => {
                    s.apply(&entry)?;
                    crate::failpoint::hit("after-manifest-put");
                    c.rt.block_on(c.manifest.checkpoint_if_due(&s));
                    break Outcome::Published {
                        entry: Box::new(entry),
                        refused,
                        conflicts,
                    };
                }
                // Already there (another writer's, or a retried put of ours) or an error
                // (landed or not): the next read of the log tells.
                answer => unsure = Some(answer),
            }
        };
        drop(s);
        c.rt.block_on(upload::delete_best_effort(c.manifest.store(), &orphaned));
        if let Outcome::Published { entry, .. } = &outcome {
            c.sync_delta(Some(entry));
            if entry.closed_through_ms.is_some() {
                crate::failpoint::hit("before-markers");
                c.sync_markers();
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
