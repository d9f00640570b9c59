//! The commit protocol: **prepare → write → publish → settle**, each stage a type that only
//! the one before it can make and that borrows its [`Committer`], none of them touching Kafka.
//!
//! ```text
//! Committer::prepare(kind, proposals, removed)   re-read the log; refuse what cannot fit:
//!   └► Prepared (+ refusals)                     fenced, overlapping, stale, unaccounted ranges
//! Prepared::write(files, dead letters, encode)   encode, check each file's rows against its
//!   └► Written (a Draft: no seq yet)             range, upload under fresh names; publishes
//!                                                nothing (a crash leaves orphans for gc)
//! Written::publish()                             loop: re-read the log (not before the first
//!   └► Outcome::Published { entry } |              put) — our entry in it? published (a lost answer);
//!      Outcome::Refused { refused }                refusals? drop those partitions, delete their
//!                                                  files; else one create-only put of seq + 1:
//!                                                  created → published; taken → jittered pause,
//!                                                  loop (at most MAX_LOST_RACES); error → loop
//!                                                  once: ours, or the error
//! Committer::settle(entry)                       after publishing: checkpoint when due, the
//!                                                Delta log, the markers of closed windows
//! ```
//!
//! Only [`Written::publish`] decides whether an entry of ours landed, and only by reading the
//! log for its `commit_id`: a put that failed, timed out or found its sequence number taken is
//! followed by a re-read, never trusted. The loader, backfills, compaction and table-format
//! writers all publish through here.
//!
//! The table state is an immutable snapshot ([`Committer::snapshot`]) replaced whole when the
//! log is re-read or an entry applied: no lock is held across a request to the store, so a
//! reader (a consumer's rebalance callback) never waits for a commit in flight.
//!
//! Settling (and each prepare) brings the table's Delta log up to the manifest
//! ([`crate::table::delta`]); a failure there is logged and never fails the load, which the
//! manifest alone makes exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

pub use crate::error::CommitError;
use crate::error::ManifestError;
use crate::table::delta::{DeltaError, DeltaLog};
use crate::table::entry::{
    DataFile, DeadLetterFile, Entry, EntryKind, OffsetRange, SchemaDef, Watermark, FORMAT_VERSION,
};
use crate::table::iceberg::{IcebergError, IcebergLog};
use crate::table::manifest::Manifest;
use crate::table::state::{Refusal, TableState};
use crate::table::store::{jittered, Created};
pub use crate::table::upload::Encoded;
use crate::table::upload::{self, Pending};

/// Lost races for the next entry after which a publish gives up ([`CommitError::Contended`]).
pub const MAX_LOST_RACES: u32 = 32;

/// The pause after a lost race: jittered, growing with each race lost (up to about a second),
/// so writers that keep colliding spread out.
fn race_pause(lost: u32) -> Duration {
    jittered(Duration::from_millis(10 << lost.min(6)))
}

/// The `(seq, commit_id)` of each entry a re-read applied.
pub type Applied = Vec<(u64, String)>;

/// A writer's handle on a table: its manifest and the state read from it.
pub struct Committer {
    manifest: Manifest,
    state: Mutex<Arc<TableState>>,
    rt: Arc<tokio::runtime::Runtime>,
    writer: String,
    /// The schema this writer's files have, recorded in the entries where it takes effect.
    schema: Option<SchemaDef>,
    delta: Option<DeltaLog>,
    iceberg: Option<IcebergLog>,
    /// The table's window size: entries record the windows they close.
    window_ms: Option<i64>,
    /// Lost races after which a publish gives up.
    max_races: u32,
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
pub struct Prepared<'c> {
    c: &'c Committer,
    kind: EntryKind,
    ranges: Vec<OffsetRange>,
    removed: Vec<String>,
    watermarks: Vec<Watermark>,
}

/// What an entry will say, before it has a place in the log: no sequence number, no closing,
/// no schema (publish decides those against the log as it then is).
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: EntryKind,
    pub commit_id: String,
    pub committed_at_ms: i64,
    pub ranges: Vec<OffsetRange>,
    pub files: Vec<DataFile>,
    pub dead_letters: Vec<DeadLetterFile>,
    pub removed: Vec<String>,
    pub watermarks: Vec<Watermark>,
}

/// Stage 2: every file of the entry is in storage; nothing is published.
#[derive(Debug)]
pub struct Written<'c> {
    c: &'c Committer,
    draft: Draft,
}

/// Stage 3.
#[derive(Debug)]
pub enum Outcome {
    /// The entry is in the log at `entry.seq`, without the partitions in `refused`. The
    /// caller settles it ([`Committer::settle`]).
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

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Committer({})", self.writer)
    }
}

impl Committer {
    /// Reads the table's state; `writer` names this process in the entries it publishes.
    pub fn open(
        manifest: Manifest,
        rt: Arc<tokio::runtime::Runtime>,
        writer: String,
    ) -> Result<Self, ManifestError> {
        let state = rt.block_on(manifest.load())?;
        Ok(Committer {
            manifest,
            state: Mutex::new(Arc::new(state)),
            rt,
            writer,
            schema: None,
            delta: None,
            iceberg: None,
            window_ms: None,
            max_races: MAX_LOST_RACES,
        })
    }

    /// Records `schema` in the entries where it takes effect, and keeps `delta` (the table's
    /// Delta log) in step with the manifest, starting now.
    pub fn with_table(mut self, schema: SchemaDef, delta: Option<DeltaLog>) -> Self {
        self.schema = Some(schema);
        self.delta = delta;
        self.sync_delta(None);
        self
    }

    /// Keeps `iceberg` (the table's Iceberg metadata) in step with the manifest, starting now.
    pub fn with_iceberg(mut self, iceberg: Option<IcebergLog>) -> Self {
        self.iceberg = iceberg;
        self.sync_iceberg(None);
        self
    }

    /// Windows of `window_ms`: each entry that moves every partition's watermark past a
    /// window's end records that it closes it, and its markers are written after it.
    pub fn with_windows(mut self, window_ms: i64) -> Self {
        self.window_ms = Some(window_ms);
        self.sync_markers();
        self
    }

    /// Gives up a publish after `races` lost races (default [`MAX_LOST_RACES`]).
    pub fn with_max_races(mut self, races: u32) -> Self {
        self.max_races = races.max(1);
        self
    }

    /// The state as of the last read: an immutable snapshot (cheap to take, never waits for
    /// a commit in flight).
    pub fn snapshot(&self) -> Arc<TableState> {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `state` the current snapshot unless a newer one is there already (two readers
    /// may refresh at once: entries are immutable, so the later sequence number is the truth).
    fn install(&self, state: TableState) -> Arc<TableState> {
        let mut cur = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.seq > cur.seq {
            *cur = Arc::new(state);
        }
        cur.clone()
    }

    /// Re-reads the log past the current snapshot; returns the new snapshot and the
    /// `(seq, commit_id)` of each entry applied. The state is copied only when the log moved.
    pub fn refresh(&self) -> Result<(Arc<TableState>, Applied), ManifestError> {
        self.refresh_from(self.snapshot())
    }

    /// Re-reads the log past `snap` (not past the current snapshot, which another reader may
    /// have moved on): the entries applied are those after `snap`. A publish looks for its own
    /// entry among them — relative to the state it put on, so an entry of ours that another
    /// reader's refresh already took in is still found.
    fn refresh_from(
        &self,
        snap: Arc<TableState>,
    ) -> Result<(Arc<TableState>, Applied), ManifestError> {
        let mut fresh = Vec::new();
        while let Some(e) = self
            .rt
            .block_on(self.manifest.read_entry(snap.seq + 1 + fresh.len() as u64))?
        {
            fresh.push(e);
        }
        if fresh.is_empty() {
            return Ok((snap, Vec::new()));
        }
        let mut next = (*snap).clone();
        for e in &fresh {
            next.apply(e)?;
        }
        let applied = fresh.into_iter().map(|e| (e.seq, e.commit_id)).collect();
        Ok((self.install(next), applied))
    }

    /// Writes the markers of closed windows that have none yet (after a crash between the
    /// closing entry and its markers); logs a failure (the next commit tries again).
    fn sync_markers(&self) {
        let Some(w) = self.window_ms else { return };
        let s = self.snapshot();
        let Some(closed) = s.closed_through_ms else {
            return;
        };
        let windows: std::collections::BTreeSet<i64> =
            s.files.iter().map(|f| f.window_start_ms).collect();
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
        let head = self.snapshot().seq;
        self.rt.block_on(delta.sync(&self.manifest, head, fresh))
    }

    /// Brings the Iceberg metadata up to the manifest as last read; `fresh` is an entry just
    /// published. Returns the versions written. Errors are the caller's to report.
    pub fn iceberg_sync(&self, fresh: Option<&Entry>) -> std::result::Result<u64, IcebergError> {
        let Some(iceberg) = &self.iceberg else {
            return Ok(0);
        };
        let state = self.snapshot();
        self.rt
            .block_on(iceberg.sync(&self.manifest, &state, fresh))
    }

    /// The Iceberg field ids data files are written with (see [`IcebergLog::field_ids`]).
    pub fn field_ids(&self) -> Option<crate::table::iceberg::FieldIds> {
        self.iceberg.as_ref().and_then(IcebergLog::field_ids)
    }

    /// [`Committer::iceberg_sync`], logging a failure (as for the Delta log).
    fn sync_iceberg(&self, fresh: Option<&Entry>) {
        match self.iceberg_sync(fresh) {
            Ok(_) => {}
            Err(
                e @ (IcebergError::Foreign { .. }
                | IcebergError::Catalog(crate::table::iceberg::catalog::CatalogError::Foreign {
                    ..
                })),
            ) => {
                tracing::error!(error = %e, "Iceberg metadata")
            }
            Err(IcebergError::Stopped(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not bring the Iceberg metadata up to the manifest; trying again at the next commit")
            }
        }
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

    /// Stage 1: re-reads the log and splits `proposals` into the ranges that fit and the
    /// refusals (early fencing: nothing is uploaded for a partition another writer moved past).
    pub fn prepare(
        &self,
        kind: EntryKind,
        proposals: Vec<Proposal>,
        removed: Vec<String>,
    ) -> Result<(Prepared<'_>, Vec<Refusal>), CommitError> {
        let ranges: Vec<OffsetRange> = proposals.iter().map(|p| p.range.clone()).collect();
        let (s, _) = self.refresh()?;
        let mut refused = s.check_ranges(kind, &ranges, &removed);
        // Entries other writers published (and perhaps did not project before they died).
        self.sync_delta(None);
        self.sync_iceberg(None);
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
                c: self,
                kind,
                ranges,
                removed,
                watermarks: Vec::new(),
            },
            refused,
        ))
    }

    /// Stage 4, after an entry of ours was published: a checkpoint when one is due, the Delta
    /// log, and the markers of the windows it closed. Each failure is logged (they are
    /// projections and hints: the next commit or open catches up).
    pub fn settle(&self, entry: &Entry) {
        let s = self.snapshot();
        if s.seq == entry.seq {
            self.rt.block_on(self.manifest.checkpoint_if_due(&s));
        }
        self.sync_delta(Some(entry));
        self.sync_iceberg(Some(entry));
        if entry.closed_through_ms.is_some() {
            crate::failpoint::hit("before-markers");
            self.sync_markers();
        }
    }
}

impl Prepared<'_> {
    /// The ranges that may be written.
    pub fn ranges(&self) -> &[OffsetRange] {
        &self.ranges
    }

    /// Records the partitions' watermarks in the entry.
    pub fn set_watermarks(&mut self, watermarks: Vec<Watermark>) {
        self.watermarks = watermarks;
    }
}

impl<'c> Prepared<'c> {
    /// Stage 2: encodes `files[i]` with `encode(i)`, checks that the encoded file holds the
    /// rows `files[i]` accounts for, uploads it and the dead-letter bodies, and returns the
    /// draft to publish. Files must belong to prepared ranges.
    pub fn write<F>(
        self,
        mut files: Vec<DataFile>,
        dead: Vec<(DeadLetterFile, Vec<u8>)>,
        encode: F,
    ) -> Result<Written<'c>, CommitError>
    where
        F: Fn(usize) -> Result<Encoded, CommitError> + Sync,
    {
        let c = self.c;
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
            return Err(CommitError::Unprepared {
                path: path.clone(),
                topic: t.clone(),
                partition: p,
            });
        }
        let store = c.manifest.store();
        let pending: Vec<Pending<'_>> = files
            .iter()
            .map(|f| Pending {
                rel: &f.path,
                rows: f.rows,
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
            c,
            draft: Draft {
                kind: self.kind,
                commit_id: uuid::Uuid::new_v4().to_string(),
                committed_at_ms: chrono::Utc::now().timestamp_millis(),
                ranges: self.ranges,
                files,
                dead_letters: dead_files,
                removed: self.removed,
                watermarks: self.watermarks,
            },
        })
    }
}

impl Draft {
    /// The entry this draft is as entry `state.seq + 1`: the windows it closes, its rows of
    /// closed windows marked late where it adds them by backfill, and the writer's schema
    /// where it changes the table's.
    fn on(&self, state: &TableState, c: &Committer) -> Entry {
        let mut entry = Entry {
            format: FORMAT_VERSION,
            seq: state.seq + 1,
            kind: self.kind,
            commit_id: self.commit_id.clone(),
            writer: c.writer.clone(),
            committed_at_ms: self.committed_at_ms,
            ranges: self.ranges.clone(),
            files: self.files.clone(),
            dead_letters: self.dead_letters.clone(),
            removed: self.removed.clone(),
            schema: None,
            watermarks: self.watermarks.clone(),
            closed_through_ms: None,
        };
        entry.closed_through_ms = c.window_ms.and_then(|w| state.closing(&entry, w));
        if matches!(entry.kind, EntryKind::Backfill | EntryKind::Replace) {
            // Rows a backfill adds to closed windows are late additions (rows a replace
            // carries over from a compacted file are not added: they moved).
            let closed = state.closed_through_ms.unwrap_or(i64::MIN);
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
            .filter(|mine| state.schema.as_ref() != Some(mine) && entry.kind != EntryKind::Compact);
        entry
    }

    /// Takes the partitions in `gone` out of the draft; returns the paths of their files.
    fn drop_partitions(&mut self, gone: &[(String, i32)]) -> Vec<String> {
        let is_gone = |t: &str, p: i32| gone.iter().any(|(gt, gp)| gt == t && *gp == p);
        let mut paths = Vec::new();
        self.files.retain(|f| {
            let keep = !f.partitions().iter().any(|(t, p)| is_gone(t, *p));
            if !keep {
                paths.push(f.path.clone());
            }
            keep
        });
        self.dead_letters.retain(|d| {
            let keep = !is_gone(&d.topic, d.partition);
            if !keep {
                paths.push(d.path.clone());
            }
            keep
        });
        self.ranges.retain(|r| !is_gone(&r.topic, r.partition));
        paths
    }

    fn paths(&self) -> impl Iterator<Item = String> + '_ {
        let files = self.files.iter().map(|f| f.path.clone());
        files.chain(self.dead_letters.iter().map(|d| d.path.clone()))
    }
}

impl Written<'_> {
    /// What will be published.
    pub fn draft(&self) -> &Draft {
        &self.draft
    }

    /// Stage 3: publishes the draft with one conditional put, re-reading the log after every
    /// put that was not plainly created. Only the put and the decision happen here (the
    /// caller settles the entry).
    pub fn publish(self) -> Result<Outcome, CommitError> {
        let (c, mut draft) = (self.c, self.draft);
        let (mut refused, mut orphaned, mut conflicts) = (Vec::new(), Vec::new(), 0u32);
        // The answer of a put that did not plainly create the entry.
        let mut unsure: Option<Result<Created, ManifestError>> = None;
        // No re-read before the first put: nothing of ours can be in the log yet, and the
        // snapshot (read at prepare, or since) either holds the whole log — then `seq + 1` is
        // free — or the create-only put finds the number taken and the loop re-reads.
        let mut s = c.snapshot();
        let mut first = true;
        let outcome = loop {
            // The one place that decides whether a put of ours landed: the log says so.
            if !first {
                let (now, applied) = match c.refresh_from(s.clone()) {
                    Ok(x) => x,
                    Err(e) => {
                        // Unknown whether the put landed: the files stay (a retry or gc).
                        return Err(e.into());
                    }
                };
                s = now;
                if let Some((seq, _)) = applied.iter().find(|(_, id)| *id == draft.commit_id) {
                    let entry = c.read_published(*seq)?;
                    break Outcome::Published {
                        entry: Box::new(entry),
                        refused,
                        conflicts,
                    };
                }
            }
            first = false;
            match unsure.take() {
                Some(Err(e)) => {
                    // Not in the log: it failed. Files of partitions dropped meanwhile go now;
                    // the rest stay for a retry of the caller or for gc.
                    c.rt.block_on(upload::delete_best_effort(c.manifest.store(), &orphaned));
                    return Err(e.into());
                }
                Some(Ok(_)) => {
                    // Taken by another writer.
                    conflicts += 1;
                    if conflicts >= c.max_races {
                        orphaned.extend(draft.paths());
                        c.rt.block_on(upload::delete_best_effort(c.manifest.store(), &orphaned));
                        return Err(CommitError::Contended { races: conflicts });
                    }
                    std::thread::sleep(race_pause(conflicts));
                    first = false;
                    // Re-read before deciding again (the pause let others publish).
                    let (now, _) = c.refresh_from(s.clone())?;
                    s = now;
                }
                None => {}
            }
            let entry = draft.on(&s, c);
            let now = s.check(&entry);
            if !now.is_empty() {
                // A replace is all or nothing; so is a refusal no partition can be dropped for.
                let whole = matches!(entry.kind, EntryKind::Replace | EntryKind::Compact)
                    || now.iter().any(|r| !r.is_partition_local());
                if whole {
                    orphaned.extend(draft.paths());
                    refused.extend(now);
                    break Outcome::Refused { refused, conflicts };
                }
                let gone: Vec<(String, i32)> = draft
                    .ranges
                    .iter()
                    .filter(|r| now.iter().any(|x| x.names(&r.topic, r.partition)))
                    .map(|r| (r.topic.clone(), r.partition))
                    .collect();
                orphaned.extend(draft.drop_partitions(&gone));
                refused.extend(now);
                if draft.ranges.is_empty() {
                    break Outcome::Refused { refused, conflicts };
                }
                continue;
            }
            crate::failpoint::hit("manifest-put");
            match c.rt.block_on(c.manifest.put_entry(&entry)) {
                Ok(Created::New) => {
                    let mut next = (*s).clone();
                    next.apply(&entry)?;
                    c.install(next);
                    crate::failpoint::hit("after-manifest-put");
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
        c.rt.block_on(upload::delete_best_effort(c.manifest.store(), &orphaned));
        Ok(outcome)
    }
}

impl Committer {
    /// Entry `seq` as published (found by its commit id after a lost answer).
    fn read_published(&self, seq: u64) -> Result<Entry, CommitError> {
        match self.rt.block_on(self.manifest.read_entry(seq))? {
            Some(e) => Ok(e),
            None => Err(ManifestError::Corrupt {
                path: Entry::rel(seq),
                message: "an entry read a moment ago is gone".into(),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests;
