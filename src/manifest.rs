//! The manifest: the table's commit log, kept in the table's own storage.
//!
//! ```text
//! <table>/_sluice/log/00000000000000000001.json   entry 1 (one atomic PutMode::Create each)
//! <table>/_sluice/log/00000000000000000002.json   ...
//! <table>/_sluice/checkpoints/00000000000000000100.json   the whole state after entry 100
//! <table>/_sluice/_last_checkpoint                         hint: the newest checkpoint's seq
//! ```
//!
//! Entry `n + 1` can only be written by a writer that has read entry `n`, so the log has no
//! gaps; the state is the newest checkpoint plus the entries after it, read until the first
//! missing sequence number. Publishing is one conditional put: losing the race for a sequence
//! number is a [`ManifestError::Conflict`], after which the writer re-reads and re-plans.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Fenced, ManifestError, Unaccounted};

pub const FORMAT_VERSION: u32 = 1;
const READ_ATTEMPTS: u32 = 6;
pub const LOG_DIR: &str = "_sluice/log";
pub const CHECKPOINT_DIR: &str = "_sluice/checkpoints";
pub const LAST_CHECKPOINT: &str = "_sluice/_last_checkpoint";
/// Where dead-letter files go, below the table root.
pub const DEAD_LETTER_DIR: &str = "_sluice/dead_letters";

/// A committed Parquet data file: rows of one topic-partition in one event-time window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the table root.
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub topic: String,
    pub partition: i32,
    /// Half-open `[first_offset, next_offset)`: the smallest offset in the file and one past
    /// the largest. Files of different windows of one partition interleave; the entry's
    /// [`OffsetRange`] is what is contiguous.
    pub first_offset: i64,
    pub next_offset: i64,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub min_event_ms: i64,
    pub max_event_ms: i64,
    pub schema_fingerprint: String,
}

/// A committed dead-letter file: records of one topic-partition that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterFile {
    pub path: String,
    pub bytes: u64,
    pub topic: String,
    pub partition: i32,
    /// Every offset in the file, ascending.
    pub offsets: Vec<i64>,
}

/// The offsets of one partition an entry accounts for, half-open `[from, to)`: each offset in
/// it is in exactly one data file or dead-letter file of the entry, or is not a record
/// (a transaction marker or a compacted gap), listed in `not_records`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// Records the writer polled in `[from, to)`: rows + dead letters of the entry for this
    /// partition. `None` in entries written before sluice recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Half-open sub-ranges of `[from, to)` the broker returned no record for (transaction
    /// markers, compacted offsets), as seen while polling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_records: Vec<(i64, i64)>,
}

impl OffsetRange {
    /// A range with no accounting (plans, checks of ranges alone).
    pub fn new(topic: &str, partition: i32, from: i64, to: i64) -> Self {
        OffsetRange {
            topic: topic.to_string(),
            partition,
            from,
            to,
            ..Default::default()
        }
    }

    /// How many offsets of the range are recorded as not records.
    pub fn not_record_count(&self) -> u64 {
        self.not_records
            .iter()
            .map(|&(a, b)| (b - a).max(0) as u64)
            .sum()
    }

    /// The accounting invariant: the range's length is its records plus its non-records, and
    /// its records are the `rows` and `dead_letters` the entry holds for it. `None` when it
    /// holds (or, for old entries without `records`, when rows and dead letters do not
    /// exceed the range).
    pub fn unaccounted(&self, rows: u64, dead_letters: u64) -> Option<Unaccounted> {
        let len = (self.to - self.from).max(0) as u64;
        let not_records = self.not_record_count();
        let kept = rows + dead_letters;
        let holds = match self.records {
            Some(records) => records == kept && len == records + not_records,
            None => kept + not_records <= len,
        };
        (!holds).then(|| Unaccounted {
            topic: self.topic.clone(),
            partition: self.partition,
            from: self.from,
            to: self.to,
            records: self.records,
            rows,
            dead_letters,
            not_records,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// New offsets, each range starting where the partition's committed range ends.
    Append,
    /// Offsets never loaded (history, a gap): each range overlaps nothing committed.
    Backfill,
    /// Offsets already loaded, re-derived from Kafka: each range lies inside the committed
    /// ranges, and the entry removes every file that held them (`removed`) in the same step.
    Replace,
}

/// One manifest entry: a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub format: u32,
    pub seq: u64,
    pub kind: EntryKind,
    /// Unique per commit attempt: tells a writer whether an entry it finds is its own (a put
    /// that succeeded although its answer was lost).
    pub commit_id: String,
    pub writer: String,
    pub committed_at_ms: i64,
    pub ranges: Vec<OffsetRange>,
    pub files: Vec<DataFile>,
    pub dead_letters: Vec<DeadLetterFile>,
    /// Paths of data and dead-letter files this entry takes out of the table (`Replace`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl Entry {
    /// Rows and dead letters the entry holds for a partition.
    pub fn kept(&self, topic: &str, partition: i32) -> (u64, u64) {
        let rows = self
            .files
            .iter()
            .filter(|f| f.topic == topic && f.partition == partition)
            .map(|f| f.rows)
            .sum();
        let dead = self
            .dead_letters
            .iter()
            .filter(|d| d.topic == topic && d.partition == partition)
            .map(|d| d.offsets.len() as u64)
            .sum();
        (rows, dead)
    }

    /// The ranges whose offsets the entry's files, dead letters and non-records do not add
    /// up to (see [`OffsetRange::unaccounted`]).
    pub fn unaccounted(&self) -> Vec<Unaccounted> {
        self.ranges
            .iter()
            .filter_map(|r| {
                let (rows, dead) = self.kept(&r.topic, r.partition);
                r.unaccounted(rows, dead)
            })
            .collect()
    }
}

/// Why an entry cannot be published on top of the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An append that does not start at the committed end.
    Fenced(Fenced),
    /// A backfill range overlapping committed offsets `[from, to)`.
    Overlap {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
    },
    /// A replace range not entirely committed, or a file to remove that is no longer live.
    Stale { message: String },
    /// A range whose offsets are not all rows, dead letters or recorded non-records.
    Unaccounted(Unaccounted),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Fenced(x) => write!(
                f,
                "{}/{}: range starts at {} but the committed range ends at {:?}",
                x.topic, x.partition, x.from, x.committed_end
            ),
            Refusal::Overlap { topic, partition, from, to } => write!(
                f,
                "{topic}/{partition}: offsets [{from}, {to}) are already loaded (use --replace to re-derive them)"
            ),
            Refusal::Stale { message } => f.write_str(message),
            Refusal::Unaccounted(u) => u.fmt(f),
        }
    }
}

/// What the manifest says about one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// Committed offset ranges, sorted, disjoint and merged when adjacent.
    pub ranges: Vec<(i64, i64)>,
    pub rows: u64,
    pub dead_letters: u64,
    pub files: u64,
    pub last_commit_ms: i64,
}

impl PartitionState {
    /// Where the next appended range must start: the end of the committed ranges.
    pub fn end(&self) -> Option<i64> {
        self.ranges.last().map(|r| r.1)
    }

    fn add_range(&mut self, from: i64, to: i64) {
        let pos = self.ranges.partition_point(|r| r.0 < from);
        self.ranges.insert(pos, (from, to));
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
                _ => merged.push(r),
            }
        }
        self.ranges = merged;
    }
}

/// The table's state after entry `seq`: a checkpoint is exactly this, serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    pub format: u32,
    pub seq: u64,
    pub partitions: Vec<PartitionState>,
    pub files: Vec<DataFile>,
    pub dead_letters: Vec<DeadLetterFile>,
    #[serde(skip)]
    index: BTreeMap<(String, i32), usize>,
    /// The checkpoint this state was loaded from (`None`: replayed from the first entry).
    #[serde(skip)]
    pub loaded_from_checkpoint: Option<u64>,
}

impl TableState {
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.index
            .get(&(topic.to_string(), partition))
            .map(|&i| &self.partitions[i])
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> &mut PartitionState {
        let key = (topic.to_string(), partition);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.partitions.push(PartitionState {
                    topic: topic.to_string(),
                    partition,
                    ..Default::default()
                });
                let i = self.partitions.len() - 1;
                self.index.insert(key, i);
                i
            }
        };
        &mut self.partitions[i]
    }

    fn reindex(&mut self) {
        self.index = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.topic.clone(), p.partition), i))
            .collect();
    }

    /// Fencing: an appended range must start exactly where the partition's committed range
    /// ends (anywhere, when nothing is committed yet). Returns the ranges that break it.
    pub fn check_append(&self, ranges: &[OffsetRange]) -> Vec<Fenced> {
        ranges
            .iter()
            .filter_map(|r| {
                let end = self.partition(&r.topic, r.partition).and_then(|p| p.end());
                match end {
                    Some(e) if e != r.from => Some(Fenced {
                        topic: r.topic.clone(),
                        partition: r.partition,
                        from: r.from,
                        committed_end: Some(e),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// The committed offsets of a partition that fall inside `[from, to)`.
    pub fn overlaps(&self, topic: &str, partition: i32, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.partition(topic, partition)
            .map(|p| {
                p.ranges
                    .iter()
                    .filter(|&&(a, b)| a < b && a < to && from < b)
                    .map(|&(a, b)| (a.max(from), b.min(to)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks that `e` can be published on top of this state: its ranges fit (see
    /// [`TableState::check_ranges`]) and each is accounted for by the entry's files.
    pub fn check(&self, e: &Entry) -> Vec<Refusal> {
        let mut out = self.check_ranges(e.kind, &e.ranges, &e.removed);
        out.extend(e.unaccounted().into_iter().map(Refusal::Unaccounted));
        out
    }

    /// Checks that ranges of an entry of `kind` (removing `removed`) fit on top of this state.
    pub fn check_ranges(
        &self,
        kind: EntryKind,
        ranges: &[OffsetRange],
        removed: &[String],
    ) -> Vec<Refusal> {
        match kind {
            EntryKind::Append => self
                .check_append(ranges)
                .into_iter()
                .map(Refusal::Fenced)
                .collect(),
            EntryKind::Backfill => ranges
                .iter()
                .flat_map(|r| {
                    self.overlaps(&r.topic, r.partition, r.from, r.to)
                        .into_iter()
                        .map(move |(from, to)| Refusal::Overlap {
                            topic: r.topic.clone(),
                            partition: r.partition,
                            from,
                            to,
                        })
                })
                .collect(),
            EntryKind::Replace => {
                let mut out = Vec::new();
                for r in ranges {
                    let covered: i64 = self
                        .overlaps(&r.topic, r.partition, r.from, r.to)
                        .iter()
                        .map(|(a, b)| b - a)
                        .sum();
                    if covered != r.to - r.from {
                        out.push(Refusal::Stale {
                            message: format!(
                                "{}/{}: [{}, {}) is not entirely loaded, so it cannot be replaced",
                                r.topic, r.partition, r.from, r.to
                            ),
                        });
                    }
                }
                let live: std::collections::HashSet<&str> = self
                    .files
                    .iter()
                    .map(|f| f.path.as_str())
                    .chain(self.dead_letters.iter().map(|d| d.path.as_str()))
                    .collect();
                for path in removed {
                    if !live.contains(path.as_str()) {
                        out.push(Refusal::Stale {
                            message: format!("{path} was already removed by another entry"),
                        });
                    }
                }
                out
            }
        }
    }

    /// Applies the next entry.
    pub fn apply(&mut self, e: &Entry) -> Result<(), ManifestError> {
        if e.seq != self.seq + 1 {
            return Err(ManifestError::Corrupt {
                path: entry_rel(e.seq),
                message: format!("expected entry {}, found entry {}", self.seq + 1, e.seq),
            });
        }
        if !e.removed.is_empty() {
            let removed: std::collections::HashSet<&str> =
                e.removed.iter().map(String::as_str).collect();
            let mut gone_files = Vec::new();
            self.files.retain(|f| {
                let keep = !removed.contains(f.path.as_str());
                if !keep {
                    gone_files.push((f.topic.clone(), f.partition, f.rows));
                }
                keep
            });
            let mut gone_dead = Vec::new();
            self.dead_letters.retain(|d| {
                let keep = !removed.contains(d.path.as_str());
                if !keep {
                    gone_dead.push((d.topic.clone(), d.partition, d.offsets.len() as u64));
                }
                keep
            });
            for (t, p, rows) in gone_files {
                let ps = self.partition_mut(&t, p);
                ps.rows = ps.rows.saturating_sub(rows);
                ps.files = ps.files.saturating_sub(1);
            }
            for (t, p, n) in gone_dead {
                let ps = self.partition_mut(&t, p);
                ps.dead_letters = ps.dead_letters.saturating_sub(n);
            }
        }
        for r in &e.ranges {
            let p = self.partition_mut(&r.topic, r.partition);
            p.add_range(r.from, r.to);
            p.last_commit_ms = e.committed_at_ms;
        }
        for f in &e.files {
            let p = self.partition_mut(&f.topic, f.partition);
            p.rows += f.rows;
            p.files += 1;
        }
        for d in &e.dead_letters {
            let p = self.partition_mut(&d.topic, d.partition);
            p.dead_letters += d.offsets.len() as u64;
        }
        self.files.extend(e.files.iter().cloned());
        self.dead_letters.extend(e.dead_letters.iter().cloned());
        self.seq = e.seq;
        self.format = FORMAT_VERSION;
        Ok(())
    }
}

fn entry_rel(seq: u64) -> String {
    format!("{LOG_DIR}/{seq:020}.json")
}

fn checkpoint_rel(seq: u64) -> String {
    format!("{CHECKPOINT_DIR}/{seq:020}.json")
}

#[derive(Serialize, Deserialize)]
struct LastCheckpoint {
    seq: u64,
}

/// Access to a table's manifest in its object store.
#[derive(Clone)]
pub struct Manifest {
    store: Arc<dyn ObjectStore>,
    root: Path,
    checkpoint_every: u64,
}

impl Manifest {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, checkpoint_every: u64) -> Self {
        Self {
            store,
            root,
            checkpoint_every: checkpoint_every.max(1),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The absolute store path of a path relative to the table root.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(seg);
        }
        p
    }

    fn store_err(&self, rel: &str, source: object_store::Error) -> ManifestError {
        ManifestError::Store {
            path: self.path(rel).to_string(),
            source,
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        rel: &str,
    ) -> Result<Option<T>, ManifestError> {
        // Reads are idempotent: retry transient store errors with backoff.
        let mut attempt = 0u32;
        let bytes = loop {
            let got = match self.store.get(&self.path(rel)).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            match got {
                Ok(b) => break b,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) if attempt + 1 < READ_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(path = rel, error = %e, attempt, "manifest read failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(6)))
                        .await;
                }
                Err(e) => return Err(self.store_err(rel, e)),
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ManifestError::Corrupt {
                path: self.path(rel).to_string(),
                message: e.to_string(),
            })
    }

    pub async fn read_entry(&self, seq: u64) -> Result<Option<Entry>, ManifestError> {
        self.get_json(&entry_rel(seq)).await
    }

    /// The current state: the newest checkpoint, then every entry after it.
    pub async fn load(&self) -> Result<TableState, ManifestError> {
        let mut state = self.latest_checkpoint().await?.unwrap_or_default();
        state.reindex();
        state.loaded_from_checkpoint = (state.seq > 0).then_some(state.seq);
        self.refresh(&mut state).await?;
        Ok(state)
    }

    /// Reads the checkpoint written after entry `seq`, if there is one.
    pub async fn read_checkpoint(&self, seq: u64) -> Result<Option<TableState>, ManifestError> {
        let mut s: Option<TableState> = self.get_json(&checkpoint_rel(seq)).await?;
        if let Some(s) = s.as_mut() {
            s.reindex();
        }
        Ok(s)
    }

    /// The sequence numbers of every checkpoint, ascending.
    pub async fn list_checkpoints(&self) -> Result<Vec<u64>, ManifestError> {
        use futures::TryStreamExt;
        let prefix = self.path(CHECKPOINT_DIR);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_err(CHECKPOINT_DIR, e))?;
        let mut seqs: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn latest_checkpoint(&self) -> Result<Option<TableState>, ManifestError> {
        if let Some(hint) = self.get_json::<LastCheckpoint>(LAST_CHECKPOINT).await? {
            if let Some(s) = self
                .get_json::<TableState>(&checkpoint_rel(hint.seq))
                .await?
            {
                return Ok(Some(s));
            }
        }
        // No usable hint: list the checkpoints and take the newest.
        match self.list_checkpoints().await?.last() {
            Some(&seq) => self.get_json(&checkpoint_rel(seq)).await,
            None => Ok(None),
        }
    }

    /// Applies every entry after `state.seq`, up to the newest; returns the `(seq, commit_id)`
    /// of each entry applied.
    pub async fn refresh(
        &self,
        state: &mut TableState,
    ) -> Result<Vec<(u64, String)>, ManifestError> {
        let mut applied = Vec::new();
        while let Some(e) = self.read_entry(state.seq + 1).await? {
            state.apply(&e)?;
            applied.push((e.seq, e.commit_id));
        }
        Ok(applied)
    }

    /// Publishes `entry` as the entry after `state.seq`: one conditional put. On success the
    /// entry is applied to `state`. `Conflict` means another writer took that number: refresh
    /// and plan again.
    pub async fn try_commit(
        &self,
        state: &mut TableState,
        entry: &mut Entry,
    ) -> Result<(), ManifestError> {
        entry.seq = state.seq + 1;
        entry.format = FORMAT_VERSION;
        let rel = entry_rel(entry.seq);
        let body = serde_json::to_vec(&entry).map_err(|e| ManifestError::Corrupt {
            path: rel.clone(),
            message: e.to_string(),
        })?;
        crate::failpoint::hit("manifest-put");
        let put = self
            .store
            .put_opts(
                &self.path(&rel),
                PutPayload::from(body),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match put {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Ours after all (an earlier attempt whose answer was lost)?
                match self.read_entry(entry.seq).await? {
                    Some(found) if found.commit_id == entry.commit_id => {}
                    _ => return Err(ManifestError::Conflict { seq: entry.seq }),
                }
            }
            Err(e) => {
                // The put may have landed although the answer was lost: look before failing.
                if let Ok(Some(found)) = self.read_entry(entry.seq).await {
                    if found.commit_id != entry.commit_id {
                        return Err(ManifestError::Conflict { seq: entry.seq });
                    }
                } else {
                    return Err(self.store_err(&rel, e));
                }
            }
        }
        state.apply(entry)?;
        crate::failpoint::hit("after-manifest-put");
        if state.seq.is_multiple_of(self.checkpoint_every) {
            // Advisory: a failed checkpoint only makes the next load read more entries.
            if let Err(e) = self.write_checkpoint(state).await {
                tracing::warn!(error = %e, seq = state.seq, "could not write checkpoint");
            }
        }
        Ok(())
    }

    pub async fn write_checkpoint(&self, state: &TableState) -> Result<(), ManifestError> {
        let rel = checkpoint_rel(state.seq);
        let body = serde_json::to_vec(state).map_err(|e| ManifestError::Corrupt {
            path: rel.clone(),
            message: e.to_string(),
        })?;
        let put = self
            .store
            .put_opts(
                &self.path(&rel),
                PutPayload::from(body),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match put {
            // The same seq always has the same state: another writer's copy is as good.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(self.store_err(&rel, e)),
        }
        let hint = serde_json::to_vec(&LastCheckpoint { seq: state.seq }).unwrap_or_default();
        self.store
            .put(&self.path(LAST_CHECKPOINT), PutPayload::from(hint))
            .await
            .map_err(|e| self.store_err(LAST_CHECKPOINT, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn a_range_adds_up_only_when_its_offsets_are_rows_dead_letters_or_non_records() {
        let r = |records: Option<u64>, not_records: Vec<(i64, i64)>| OffsetRange {
            records,
            not_records,
            ..OffsetRange::new("t", 0, 100, 200)
        };
        // 90 rows + 5 dead letters + 5 non-records = 100 offsets.
        assert_eq!(
            r(Some(95), vec![(120, 122), (199, 200), (150, 152)]).unaccounted(90, 5),
            None
        );
        // The range ran past what was kept (the bug of issue 9): 453 offsets in no file.
        let u = r(Some(95), vec![]).unaccounted(90, 5).unwrap();
        assert_eq!(
            (u.rows, u.dead_letters, u.not_records, u.records),
            (90, 5, 0, Some(95))
        );
        assert!(u.to_string().contains("[100, 200) has 100 offsets"), "{u}");
        // Records polled but not all written (a chunk lost between poll and file).
        assert!(r(Some(100), vec![]).unaccounted(99, 0).is_some());
        // Old entries (no count): only a range holding more than it spans is caught.
        assert_eq!(r(None, vec![]).unaccounted(60, 0), None);
        assert!(r(None, vec![]).unaccounted(101, 0).is_some());
        // The check is part of every entry check.
        let mut e = entry(&[("t", 0, 0, 10)]);
        e.ranges[0].records = Some(10);
        let s = TableState::default();
        assert!(matches!(s.check(&e)[..], [Refusal::Unaccounted(_)]));
        e.ranges[0].records = Some(0);
        e.ranges[0].not_records = vec![(0, 10)];
        assert!(s.check(&e).is_empty());
    }

    #[test]
    fn entries_without_accounting_still_read() {
        let old = r#"{"format":1,"seq":1,"kind":"append","commit_id":"c","writer":"w",
            "committed_at_ms":0,"ranges":[{"topic":"t","partition":0,"from":0,"to":5}],
            "files":[],"dead_letters":[]}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(
            (e.ranges[0].records, e.ranges[0].not_records.len()),
            (None, 0)
        );
        let back = serde_json::to_string(&e.ranges[0]).unwrap();
        assert!(!back.contains("records"), "{back}");
    }

    fn entry(ranges: &[(&str, i32, i64, i64)]) -> Entry {
        Entry {
            format: FORMAT_VERSION,
            seq: 0,
            kind: EntryKind::Append,
            commit_id: uuid::Uuid::new_v4().to_string(),
            writer: "test".into(),
            committed_at_ms: 1,
            ranges: ranges
                .iter()
                .map(|(t, p, f, to)| OffsetRange::new(t, *p, *f, *to))
                .collect(),
            files: vec![],
            dead_letters: vec![],
            removed: vec![],
        }
    }

    fn manifest(every: u64) -> Manifest {
        Manifest::new(Arc::new(InMemory::new()), Path::from("tables/t"), every)
    }

    #[tokio::test]
    async fn commits_then_reloads_through_checkpoints() {
        let m = manifest(3);
        let mut s = m.load().await.unwrap();
        assert_eq!(s.seq, 0);
        for i in 0..10 {
            let mut e = entry(&[("a", 0, i * 10, i * 10 + 10)]);
            m.try_commit(&mut s, &mut e).await.unwrap();
        }
        assert_eq!(s.seq, 10);
        assert_eq!(s.partition("a", 0).unwrap().ranges, vec![(0, 100)]);
        let again = m.load().await.unwrap();
        assert_eq!(again.seq, 10);
        assert_eq!(again.partition("a", 0).unwrap().ranges, vec![(0, 100)]);
        // The checkpoint at 9 was used: removing entries up to 9 changes nothing.
        for seq in 1..=9 {
            m.store.delete(&m.path(&entry_rel(seq))).await.unwrap();
        }
        assert_eq!(
            m.load().await.unwrap().partition("a", 0).unwrap().ranges,
            vec![(0, 100)]
        );
    }

    #[tokio::test]
    async fn a_stale_writer_conflicts_and_is_fenced() {
        let m = manifest(100);
        let mut a = m.load().await.unwrap();
        let mut b = m.load().await.unwrap();
        m.try_commit(&mut a, &mut entry(&[("t", 1, 0, 50)]))
            .await
            .unwrap();
        let err = m
            .try_commit(&mut b, &mut entry(&[("t", 1, 0, 40)]))
            .await
            .unwrap_err();
        assert!(matches!(err, ManifestError::Conflict { seq: 1 }));
        m.refresh(&mut b).await.unwrap();
        let fenced = b.check_append(&entry(&[("t", 1, 0, 40)]).ranges);
        assert_eq!(fenced.len(), 1);
        assert_eq!(fenced[0].committed_end, Some(50));
        assert!(b
            .check_append(&entry(&[("t", 1, 50, 60), ("t", 2, 7, 9)]).ranges)
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racers_for_one_seq_have_exactly_one_winner() {
        let m = manifest(100);
        // Every racer read the same state first: all aim for entry 1.
        let mut states = Vec::new();
        for _ in 0..16 {
            states.push(m.load().await.unwrap());
        }
        let mut handles = Vec::new();
        for (i, mut s) in states.into_iter().enumerate() {
            let m = m.clone();
            let i = i as i32;
            handles.push(tokio::spawn(async move {
                let mut e = entry(&[("t", i, 0, 1)]);
                m.try_commit(&mut s, &mut e).await.is_ok()
            }));
        }
        let mut wins = 0;
        for h in handles {
            wins += h.await.unwrap() as usize;
        }
        assert_eq!(wins, 1);
        assert_eq!(m.load().await.unwrap().seq, 1);
    }

    #[test]
    fn ranges_merge() {
        let mut p = PartitionState::default();
        p.add_range(10, 20);
        p.add_range(0, 5);
        p.add_range(5, 10);
        p.add_range(30, 40);
        assert_eq!(p.ranges, vec![(0, 20), (30, 40)]);
        assert_eq!(p.end(), Some(40));
    }
}
