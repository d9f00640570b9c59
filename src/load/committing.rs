//! The committer thread: one per loader, at most one commit in flight.
//!
//! ```text
//! poll thread                                   committer thread
//!   seal: each partition's range up to a cut,
//!   its rows and dead letters ── Batch ──────►  prepare → write (encode, check rows,
//!   poll on into fresh buffers;                   upload) → publish
//!   at the budget, pause the partitions   ◄──── Finished (published entry, refusals, error)
//!   Finished: count, write group offsets,       settle: checkpoint, Delta log, markers
//!   re-seek refused partitions, resume          (then the next batch)
//! ```
//!
//! The poll thread never waits for the store: group heartbeats, rebalance callbacks and
//! `max.poll.interval.ms` do not depend on how long a commit takes. Fencing is unchanged: a
//! sealed range starts where the partition's committed range ended when it was read, and the
//! fresh buffers behind it start at the sealed range's end, so a refusal of the sealed range
//! re-reads the partition from the committed end (its fresh buffers are dropped with it).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use parquet::file::properties::WriterProperties;

use crate::config::{Job, LateRecords};
use crate::error::{CommitError, LoadError, Result};
use crate::load::runs::Run;
use crate::record::buffer::{PartitionBuffer, WindowRows};
use crate::record::decode::DeadRecord;
use crate::record::encode;
use crate::table::commit::{Committer, Outcome, Proposal};
use crate::table::entry::{
    DataFile, DeadLetterFile, Entry, OffsetRange, Watermark, DEAD_LETTER_DIR,
};
use crate::table::state::Refusal;
use crate::table::upload::encode_data_file;

/// One partition's sealed range: what the poll thread read for it up to the cut.
pub(crate) struct SealedPart {
    pub(crate) range: OffsetRange,
    /// The partition's generation when sealed: an outcome applies to the partition only while
    /// it has not been re-positioned or re-assigned since.
    pub(crate) generation: u64,
    pub(crate) buffer: PartitionBuffer,
    pub(crate) dead: Vec<DeadRecord>,
}

impl SealedPart {
    fn rows(&self) -> u64 {
        self.buffer.windows().map(|(_, w)| w.rows).sum()
    }
}

/// What the poll thread hands the committer thread: sealed ranges (none for an entry of
/// watermarks alone) and the partitions' watermarks.
pub(crate) struct Batch {
    pub(crate) parts: Vec<SealedPart>,
    pub(crate) watermarks: Vec<Watermark>,
    pub(crate) started: Instant,
}

/// What became of a batch.
pub(crate) struct Finished {
    /// The entry published, without the refused partitions.
    pub(crate) entry: Option<Box<Entry>>,
    pub(crate) refused: Vec<Refusal>,
    pub(crate) conflicts: u32,
    /// The commit failed: nothing of the batch was published, or whether it was is unknown
    /// (the log, read again at the next commit, decides; fencing keeps it exactly once).
    pub(crate) error: Option<LoadError>,
    pub(crate) started: Instant,
}

/// A commit handed to the committer thread: which partitions, from where, in which generation.
pub(crate) struct InFlight {
    parts: Vec<(String, i32, i64, u64)>,
}

impl InFlight {
    pub(crate) fn new(parts: Vec<(String, i32, i64, u64)>) -> Self {
        InFlight { parts }
    }

    /// Each sealed partition: topic, partition, where its range starts, its generation.
    pub(crate) fn parts(&self) -> impl Iterator<Item = (&str, i32, i64, u64)> {
        self.parts
            .iter()
            .map(|(t, p, f, g)| (t.as_str(), *p, *f, *g))
    }

    /// Where the sealed range of `topic`/`partition` starts, if the partition is still in the
    /// generation it was sealed in.
    pub(crate) fn sealed_from(&self, topic: &str, partition: i32, generation: u64) -> Option<i64> {
        self.parts
            .iter()
            .find(|(t, p, _, g)| t == topic && *p == partition && *g == generation)
            .map(|(_, _, from, _)| *from)
    }
}

/// What the committer thread needs of the job and the run.
pub(crate) struct Worker {
    pub(crate) committer: Arc<Committer>,
    pub(crate) job: Job,
    pub(crate) run: Run,
    pub(crate) props: WriterProperties,
}

impl Worker {
    /// The body of the committer thread: until the batch channel closes. After sending what
    /// became of a batch, it settles the entry (checkpoint, Delta log, markers) before taking
    /// the next one.
    pub(crate) fn serve(&self, batches: Receiver<Batch>, done: Sender<Finished>) {
        while let Ok(batch) = batches.recv() {
            let finished = self.commit(batch);
            let settle = finished.entry.clone();
            if done.send(finished).is_err() {
                break;
            }
            if let Some(entry) = settle {
                self.committer.settle(&entry);
            }
        }
    }

    /// Prepares, writes and publishes one batch.
    pub(crate) fn commit(&self, batch: Batch) -> Finished {
        let started = batch.started;
        match self.try_commit(batch) {
            Ok((entry, refused, conflicts)) => Finished {
                entry,
                refused,
                conflicts,
                error: None,
                started,
            },
            Err(e) => Finished {
                entry: None,
                refused: Vec::new(),
                conflicts: 0,
                error: Some(e),
                started,
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_commit(&self, batch: Batch) -> Result<(Option<Box<Entry>>, Vec<Refusal>, u32)> {
        let c = &*self.committer;
        let proposals: Vec<Proposal> = batch
            .parts
            .iter()
            .map(|p| Proposal {
                range: p.range.clone(),
                rows: p.rows(),
                dead_letters: p.dead.len() as u64,
            })
            .collect();
        let removed = match &self.run {
            Run::Backfill(plan) if plan.replace => {
                whole_ranges(plan, &proposals)?;
                plan.removed.clone()
            }
            _ => Vec::new(),
        };
        let heartbeat = batch.parts.is_empty();
        let (mut prepared, mut refused) = c.prepare(self.run.entry_kind(), proposals, removed)?;
        if prepared.ranges().is_empty() && !heartbeat {
            return Ok((None, refused, 0));
        }
        prepared.set_watermarks(batch.watermarks);
        // Windows closed as of the log just read: rows of those loaded under
        // `late_records = "load"` are late additions.
        let closed = c.snapshot().closed_through_ms.unwrap_or(i64::MIN);

        // Name every file: names that cannot collide, so a retry or a racing writer never
        // overwrites anything.
        let mut files: Vec<DataFile> = Vec::new();
        let mut sources: Vec<Source<'_>> = Vec::new();
        let mut dead: Vec<(DeadLetterFile, Vec<u8>)> = Vec::new();
        for r in prepared.ranges() {
            let Some(part) = batch
                .parts
                .iter()
                .find(|p| p.range.topic == r.topic && p.range.partition == r.partition)
            else {
                continue;
            };
            for (start, w) in part.buffer.windows() {
                files.push(self.data_file(r, start, w, closed)?);
                sources.push(Source::Window(&part.buffer, w));
            }
            if let Some(first) = part.dead.first() {
                let rel = format!(
                    "{DEAD_LETTER_DIR}/{}-{}/{:020}-{}.parquet",
                    r.topic,
                    r.partition,
                    first.offset,
                    uuid::Uuid::new_v4().simple()
                );
                let body =
                    encode::encode_dead_letters(&r.topic, r.partition, &part.dead, &self.props)
                        .map_err(|source| LoadError::Encode {
                            path: rel.clone(),
                            source,
                        })?;
                let file = DeadLetterFile {
                    path: rel,
                    bytes: 0,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    offsets: part.dead.iter().map(|d| d.offset).collect(),
                };
                dead.push((file, body));
            }
        }
        // A replace carries the rows of other partitions out of the compacted files it removes.
        if let Run::Backfill(plan) = &self.run {
            let replaced =
                |t: &str, p: i32| plan.ranges.iter().any(|r| r.topic == t && r.partition == p);
            let state = c.snapshot();
            for f in state
                .files
                .iter()
                .filter(|f| plan.carried.contains(&f.path))
            {
                if let Some(carried) = crate::table::files::carried_file(f, &|t, p| !replaced(t, p))
                {
                    files.push(carried);
                    sources.push(Source::Carried(f.clone()));
                }
            }
        }
        let (schema, props) = (&self.job.schema.table, &self.props);
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let (store, rt) = (c.manifest().store(), c.runtime());
        let carried_files = files.clone();
        let ids = c.field_ids();
        let ids = ids.as_ref();
        let written = prepared.write(files, dead, |i| match &sources[i] {
            Source::Carried(source) => crate::table::files::encode_carried(
                store,
                &rt,
                source,
                &carried_files[i],
                props,
                ids,
            ),
            Source::Window(buf, w) => {
                let batches = buf
                    .window_batches(w)
                    .map_err(|source| CommitError::Encode {
                        path: paths[i].clone(),
                        source: Box::new(source),
                    })?;
                encode_data_file(schema, &batches, props, &paths[i], ids)
            }
        })?;
        match written.publish()? {
            Outcome::Refused {
                refused: more,
                conflicts,
            } => {
                refused.extend(more);
                Ok((None, refused, conflicts))
            }
            Outcome::Published {
                entry,
                refused: more,
                conflicts,
            } => {
                refused.extend(more);
                Ok((Some(entry), refused, conflicts))
            }
        }
    }

    /// A data file for the rows of window `start` of range `r`, under a fresh name.
    fn data_file(
        &self,
        r: &OffsetRange,
        start: i64,
        w: &WindowRows,
        closed: i64,
    ) -> Result<DataFile> {
        let window = self.job.window.millis();
        let dir = self
            .job
            .layout
            .path(start)
            .ok_or_else(|| LoadError::Refused {
                message: format!(
                    "{}/{}: window start {start} ms is outside the calendar's range",
                    r.topic, r.partition
                ),
            })?;
        Ok(DataFile {
            path: format!(
                "{dir}/part-{}-{}-{:020}-{}.parquet",
                r.topic,
                r.partition,
                w.first_offset,
                uuid::Uuid::new_v4().simple()
            ),
            bytes: 0,
            rows: w.rows,
            topic: r.topic.clone(),
            partition: r.partition,
            first_offset: w.first_offset,
            next_offset: w.next_offset,
            window_start_ms: start,
            window_end_ms: start + window,
            min_event_ms: w.min_event_ms,
            max_event_ms: w.max_event_ms,
            schema_fingerprint: self.job.schema.fingerprint.clone(),
            stats: None,
            spans: vec![],
            // Under `window.late_records = "load"`, rows of a closed window are a late
            // addition (under the other policies the decode thread took them out).
            late: self.job.closing.late_records == LateRecords::Load && start + window <= closed,
        })
    }
}

/// Where the rows of a file to write come from.
enum Source<'a> {
    /// A window of a sealed partition's buffer.
    Window(&'a PartitionBuffer, &'a WindowRows),
    /// The rows of a removed compacted file that a replace keeps.
    Carried(DataFile),
}

/// A replace swaps every file of its ranges at once: each re-derived range must be whole.
fn whole_ranges(plan: &crate::load::runs::Plan, proposals: &[Proposal]) -> Result<()> {
    for want in &plan.ranges {
        let got = proposals
            .iter()
            .map(|p| &p.range)
            .find(|r| r.topic == want.topic && r.partition == want.partition);
        let whole = got.is_some_and(|r| r.from == want.from && Some(r.to) == want.to);
        if !whole {
            return Err(LoadError::Refused {
                message: format!(
                    "{}/{}: Kafka returned {:?}, not the whole range [{}, {:?}); nothing replaced",
                    want.topic,
                    want.partition,
                    got.map(|r| (r.from, r.to)),
                    want.from,
                    want.to
                ),
            });
        }
    }
    Ok(())
}

/// Whether the poll thread pauses its partitions: while a commit is in flight and what it
/// holds has reached the budget (it would otherwise read on without bound). It resumes when
/// the commit is done.
pub(crate) fn should_pause(
    in_flight: bool,
    buffered: crate::config::Buffered,
    policy: &crate::config::CommitPolicy,
) -> bool {
    in_flight && (buffered.bytes >= policy.max_buffered_bytes || buffered.rows >= policy.max_rows)
}
