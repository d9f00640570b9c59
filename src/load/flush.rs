//! The poll thread's side of a commit: seal each partition's range up to a cut and hand the
//! batch to the committer thread ([`crate::load::committing`]); when it comes back, count it,
//! write the group offsets (for lag tools only: they are never read back), re-seek refused
//! partitions and resume paused ones.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::error::{LoadError, Result};
use crate::load::committing::{should_pause, Batch, Finished, InFlight, SealedPart};
use crate::load::run::Loader;
use crate::load::runs::Run;
use crate::record::source::{self, LoaderContext};
use crate::table::entry::{Entry, Watermark};
use crate::table::state::Refusal;

/// Failed commits in a row (each re-reads its partitions and tries again after a pause) before
/// the loader stops with the last error.
const FAILED_COMMITS: u32 = 10;

impl Loader {
    /// Whether a batch may be handed to the committer thread now: none in flight, and no
    /// pause after a failed commit still running.
    pub(crate) fn lane_free(&self) -> bool {
        self.in_flight.is_none() && self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Seals what is buffered and hands it to the committer thread; with nothing to load, an
    /// entry of watermarks when one would close windows (see [`Loader::heartbeat`]).
    pub(crate) fn commit(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        if !self.lane_free() {
            return Ok(());
        }
        let keys: Vec<(String, i32)> = self
            .parts
            .iter()
            .filter(|(_, _, b)| b.needs_commit())
            .map(|(t, p, _)| (t.to_string(), p))
            .collect();
        if keys.is_empty() {
            return self.heartbeat(consumer);
        }
        for (t, p) in &keys {
            self.send_chunk(t, *p)?;
        }
        self.take_decoded(true)?;
        let watermarks = if matches!(self.run, Run::Backfill(_)) {
            Vec::new()
        } else {
            self.watermarks(consumer, false)
        };
        let parts = self.seal(&keys);
        self.hand_over(Batch {
            parts,
            watermarks,
            started: Instant::now(),
        })
    }

    /// Seals the ranges of partitions `keys` (their records all decoded): their rows leave
    /// for the committer thread, and each reads on into fresh buffers from where its sealed
    /// range ends.
    pub(crate) fn seal(&mut self, keys: &[(String, i32)]) -> Vec<SealedPart> {
        let mut parts = Vec::new();
        for (t, p) in keys {
            let Some(b) = self.parts.get_mut(t, *p) else {
                continue;
            };
            let generation = b.generation;
            if let Some((range, buffer, dead)) = b.seal(t, *p) {
                parts.push(SealedPart {
                    range,
                    generation,
                    buffer,
                    dead,
                });
            }
        }
        parts
    }

    /// With nothing to load: an entry of watermarks alone, when an idle partition's would
    /// pass a window's end (so idle partitions hold no window open).
    pub(crate) fn heartbeat(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        if matches!(self.run, Run::Backfill(_))
            || self.parts.iter().next().is_none()
            || !self.lane_free()
        {
            return Ok(());
        }
        let watermarks = self.watermarks(consumer, true);
        if watermarks.is_empty() {
            return Ok(());
        }
        self.hand_over(Batch {
            parts: Vec::new(),
            watermarks,
            started: Instant::now(),
        })
    }

    fn hand_over(&mut self, batch: Batch) -> Result<()> {
        let parts = batch
            .parts
            .iter()
            .map(|p| {
                let r = &p.range;
                (r.topic.clone(), r.partition, r.from, p.generation)
            })
            .collect();
        let lane = self.lane.as_ref().ok_or_else(committer_gone)?;
        lane.batches.send(batch).map_err(|_| committer_gone())?;
        self.in_flight = Some(InFlight::new(parts));
        Ok(())
    }

    /// Takes what became of the commit in flight (with `wait`, waits for it).
    pub(crate) fn take_finished(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        wait: bool,
    ) -> Result<()> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let lane = self.lane.as_ref().ok_or_else(committer_gone)?;
        let finished = if wait {
            lane.done.recv().map_err(|_| committer_gone())?
        } else {
            match lane.done.try_recv() {
                Ok(f) => f,
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                Err(_) => return Err(committer_gone()),
            }
        };
        self.on_finished(consumer, finished)
    }

    /// Waits for the commit in flight, then commits what is buffered and waits for that too.
    pub(crate) fn drain(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        self.take_finished(consumer, true)?;
        if let Some(t) = self.retry_at.take() {
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
        }
        self.commit(consumer)?;
        self.take_finished(consumer, true)
    }

    /// Pauses every owned partition while a commit is in flight and the budget is reached;
    /// resumes them once it is not.
    pub(crate) fn flow(&mut self, consumer: &BaseConsumer<LoaderContext>) {
        let pause = should_pause(self.in_flight.is_some(), self.buffered(), &self.job.commit);
        if pause == self.paused {
            return;
        }
        let Ok(assigned) = consumer.assignment() else {
            return;
        };
        let done = if pause {
            consumer.pause(&assigned)
        } else {
            consumer.resume(&assigned)
        };
        match done {
            Ok(()) => {
                tracing::debug!(partitions = assigned.count(), pause, "flow");
                self.paused = pause;
                if pause {
                    self.metrics.pauses.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, pause, "could not pause or resume partitions"),
        }
    }

    /// Partitions newly assigned while paused are paused too.
    pub(crate) fn pause_new(
        &self,
        consumer: &BaseConsumer<LoaderContext>,
        parts: &[(String, i32)],
    ) {
        if !self.paused || parts.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (t, p) in parts {
            list.add_partition(t, *p);
        }
        if let Err(e) = consumer.pause(&list) {
            tracing::warn!(error = %e, "could not pause newly assigned partitions");
        }
    }

    fn on_finished(&mut self, consumer: &BaseConsumer<LoaderContext>, f: Finished) -> Result<()> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        self.count_conflicts(f.conflicts);
        self.note_closed();
        if let Some(e) = f.error {
            return self.failed(consumer, &in_flight, e);
        }
        self.failures = 0;
        self.refuse(consumer, &in_flight, f.refused)?;
        if let Some(entry) = f.entry {
            if entry.ranges.is_empty() {
                tracing::debug!(seq = entry.seq, closed_through_ms = ?entry.closed_through_ms, "watermarks");
                if let Some(closed) = entry.closed_through_ms {
                    self.compactor.start(closed);
                }
            } else {
                self.published(consumer, &in_flight, &entry, f.started);
            }
        }
        self.flow(consumer);
        Ok(())
    }

    /// A commit failed (its store did not answer in time, other writers kept taking the next
    /// entry): its partitions are read again from where their sealed ranges started, after a
    /// pause, up to [`FAILED_COMMITS`] times in a row (not once a stop was requested). Whether anything of it landed, the log
    /// says at the next commit (fencing: a range already committed is refused and re-read from
    /// the committed end). Other errors stop the loader.
    fn failed(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        in_flight: &InFlight,
        e: LoadError,
    ) -> Result<()> {
        let retried = matches!(
            e,
            LoadError::Store(_)
                | LoadError::Manifest(crate::error::ManifestError::Store(_))
                | LoadError::Commit(crate::error::CommitError::Contended { .. })
        );
        self.failures += 1;
        // Stopping (SIGTERM) is no time to wait and read again: the error says that what was
        // buffered is not loaded (the next run loads it from the committed end).
        let stopping = self.shutdown.load(Ordering::Relaxed);
        if !retried || stopping || self.failures >= FAILED_COMMITS {
            return Err(e);
        }
        let pause = crate::table::store::jittered(Duration::from_secs(1 << self.failures.min(5)));
        tracing::warn!(error = %e, failures = self.failures, retry_in_ms = pause.as_millis() as u64, "commit failed; reading its partitions again and retrying");
        self.metrics.failed_commits.fetch_add(1, Ordering::Relaxed);
        self.retry_at = Some(Instant::now() + pause);
        let again: Vec<(String, i32, i64)> = in_flight
            .parts()
            .filter(|(t, p, _, g)| self.parts.get(t, *p).is_some_and(|b| b.generation == *g))
            .map(|(t, p, from, _)| (t.to_string(), p, from))
            .collect();
        self.reposition(consumer, &again)?;
        self.flow(consumer);
        Ok(())
    }

    /// Tells the decode thread, the metrics and the late-record rule where windows are
    /// closed through, as the table state last read says.
    pub(crate) fn note_closed(&self) {
        let closed = self.committer.snapshot().closed_through_ms;
        self.closed_through
            .store(closed.unwrap_or(i64::MIN), Ordering::Relaxed);
        self.metrics
            .closed_through_ms
            .store(closed.unwrap_or(0), Ordering::Relaxed);
    }

    /// Each owned partition's watermark, where it moves past the one recorded (with
    /// `crossing`, only where it passes a window's end): the latest event time buffered
    /// minus the allowed lateness; for a partition caught up whose newest record is older
    /// than the idle timeout, the clock minus the allowed lateness; never later than that.
    fn watermarks(&self, consumer: &BaseConsumer<LoaderContext>, crossing: bool) -> Vec<Watermark> {
        let closing = self.job.closing;
        let lateness = closing.allowed_lateness.as_millis() as i64;
        let idle = closing.idle_timeout.as_millis() as i64;
        let window = self.job.window.millis();
        let now = chrono::Utc::now().timestamp_millis();
        let state = self.committer.snapshot();
        let mut out = Vec::new();
        for (t, p, b) in self.parts.iter() {
            let recorded = state.partition(t, p);
            let recorded_mark = recorded.and_then(|s| s.watermark_ms);
            let newest = match (b.newest_ts, recorded.and_then(|s| s.newest_record_ms)) {
                (Some(a), Some(r)) => Some(a.max(r)),
                (a, r) => a.or(r),
            };
            let high = source::cached_watermarks(consumer, t, p);
            let caught_up = match (high, b.from()) {
                (Some((_, h)), Some(_)) => h <= b.next,
                (Some((l, h)), None) => h <= l,
                (None, _) => false,
            };
            let clock = now - lateness;
            let mark = if caught_up && newest.is_none_or(|n| now - n >= idle) {
                Some(clock)
            } else {
                // Never past the clock: one event stamped in the future must not close every
                // window up to its time (and make all that follows late).
                let latest = b.buffer.windows().map(|(_, w)| w.max_event_ms).max();
                latest.map(|m| (m - lateness).min(clock))
            };
            let Some(mark) = mark else { continue };
            let moves = match recorded_mark {
                None => true,
                Some(r) if crossing => mark.div_euclid(window) > r.div_euclid(window),
                Some(r) => mark > r,
            };
            if moves {
                out.push(Watermark {
                    topic: t.to_string(),
                    partition: p,
                    ms: mark,
                    newest_record_ms: b.newest_ts,
                });
            }
        }
        out
    }

    fn count_conflicts(&self, conflicts: u32) {
        if conflicts > 0 {
            tracing::debug!(conflicts, "lost races for manifest entries; re-read");
            self.metrics
                .conflicts
                .fetch_add(u64::from(conflicts), Ordering::Relaxed);
        }
    }

    /// The sealed ranges of `entry`'s partitions are loaded: count them, and write the group
    /// offsets of the partitions still owned in the generation they were sealed in.
    fn published(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        in_flight: &InFlight,
        entry: &Entry,
        started: Instant,
    ) {
        let mut group_offsets = Vec::new();
        for r in &entry.ranges {
            let Some(buf) = self.parts.get_mut(&r.topic, r.partition) else {
                continue;
            };
            if in_flight
                .sealed_from(&r.topic, r.partition, buf.generation)
                .is_some()
            {
                buf.loaded += r.to - r.from;
                group_offsets.push(((r.topic.clone(), r.partition), r.to));
            }
        }
        let rows: u64 = entry.files.iter().map(|f| f.rows).sum();
        let dead: u64 = entry
            .dead_letters
            .iter()
            .map(|d| d.offsets.len() as u64)
            .sum();
        let files = (entry.files.len() + entry.dead_letters.len()) as u64;
        let bytes: u64 = entry.files.iter().map(|f| f.bytes).sum::<u64>()
            + entry.dead_letters.iter().map(|d| d.bytes).sum::<u64>();
        self.stats.rows += rows;
        self.stats.dead_letters += dead;
        self.stats.files += files;
        self.stats.bytes += bytes;
        self.stats.commits += 1;
        let m = &self.metrics;
        m.rows_loaded.fetch_add(rows, Ordering::Relaxed);
        m.dead_letters.fetch_add(dead, Ordering::Relaxed);
        m.files.fetch_add(files, Ordering::Relaxed);
        m.file_bytes.fetch_add(bytes, Ordering::Relaxed);
        m.commits.fetch_add(1, Ordering::Relaxed);
        let late: u64 = entry.files.iter().filter(|f| f.late).map(|f| f.rows).sum();
        m.late_rows.fetch_add(late, Ordering::Relaxed);
        if let Ok(mut marks) = m.watermarks.lock() {
            for w in &entry.watermarks {
                marks.insert((w.topic.clone(), w.partition), w.ms);
            }
        }
        m.observe_commit(started.elapsed());
        for r in &entry.ranges {
            let high = source::cached_watermarks(consumer, &r.topic, r.partition).map(|w| w.1);
            let lag = high.map(|h| (h - r.to).max(0)).unwrap_or(0);
            m.set_partition(&r.topic, r.partition, r.to, lag);
        }
        tracing::info!(
            seq = entry.seq,
            rows,
            dead_letters = dead,
            files,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        if let Some(closed) = entry.closed_through_ms {
            self.compactor.start(closed);
        }
        crate::failpoint::hit("before-group-commit");
        source::commit_group_offsets(consumer, &group_offsets);
    }

    /// Acts on refusals: a fenced partition is read again from the committed end, a range
    /// that does not add up from where it starts (its buffers are dropped). A backfill or
    /// replace that no longer fits is an error.
    /// Only partitions still in the generation they were sealed in are re-positioned (one
    /// revoked, re-assigned or re-read meanwhile already starts where the log says).
    fn refuse(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        in_flight: &InFlight,
        refused: Vec<Refusal>,
    ) -> Result<()> {
        let mut out: Vec<(String, i32, i64)> = Vec::new();
        for r in refused {
            let sealed_from = r.partition().and_then(|(t, p)| {
                let generation = self.parts.get(t, p)?.generation;
                in_flight.sealed_from(t, p, generation)
            });
            if r.is_partition_local() && sealed_from.is_none() {
                continue;
            }
            match r {
                Refusal::Fenced(f) => {
                    let Some(end) = f.committed_end else { continue };
                    tracing::warn!(
                        topic = %f.topic,
                        partition = f.partition,
                        from = f.from,
                        committed_end = end,
                        "fenced: another writer committed this partition; dropping buffers and re-seeking"
                    );
                    self.stats.fenced += 1;
                    self.metrics.fenced.fetch_add(1, Ordering::Relaxed);
                    out.push((f.topic, f.partition, end));
                }
                Refusal::Unaccounted(u) => {
                    tracing::error!(
                        topic = %u.topic,
                        partition = u.partition,
                        from = u.from,
                        to = u.to,
                        records = ?u.records,
                        rows = u.rows,
                        dead_letters = u.dead_letters,
                        not_records = u.not_records,
                        reposition = u.from,
                        "refusing to publish a range whose offsets are not all accounted for; dropping its buffers and re-reading it (a bug: please report)"
                    );
                    self.metrics.unaccounted.fetch_add(1, Ordering::Relaxed);
                    // Fenced too: the committed end is where to read again.
                    if !out
                        .iter()
                        .any(|(t, p, _)| *t == u.topic && *p == u.partition)
                    {
                        out.push((u.topic, u.partition, u.from));
                    }
                }
                Refusal::Late {
                    topic,
                    partition,
                    window_start_ms,
                } => {
                    // Another writer closed the window after these rows were decoded: read
                    // the partition again, now knowing it is closed.
                    let Some(from) = sealed_from else {
                        continue;
                    };
                    tracing::info!(topic = %topic, partition, window_start_ms, "rows of a window closed meanwhile; reading the partition again");
                    if !out.iter().any(|(t, p, _)| *t == topic && *p == partition) {
                        out.push((topic, partition, from));
                    }
                }
                other => {
                    return Err(LoadError::Refused {
                        message: other.to_string(),
                    })
                }
            }
        }
        self.reposition(consumer, &out)
    }
}

fn committer_gone() -> LoadError {
    LoadError::Runtime(std::io::Error::other("the committer thread stopped"))
}
