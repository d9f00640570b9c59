//! The loader's side of a commit: drain the decode worker, propose each partition's range,
//! name a file per window, hand them to the [`Committer`](crate::table::commit::Committer),
//! and after the outcome reset the buffers, re-seek refused partitions and write the group
//! offsets (for lag tools only: they are never read back).

use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::BaseConsumer;

use crate::config::LateRecords;
use crate::error::{LoadError, Result};
use crate::load::run::Loader;
use crate::load::Run;
use crate::ops::compact;
use crate::record::buffer::{PartitionBuffer, WindowRows};
use crate::record::encode;
use crate::record::source::{self, LoaderContext};
use crate::table::commit::lock;
use crate::table::commit::{Encoded, Outcome, Proposal};
use crate::table::entry::{
    DataFile, DeadLetterFile, Entry, OffsetRange, Watermark, DEAD_LETTER_DIR,
};
use crate::table::state::Refusal;

impl Loader {
    /// Writes and publishes everything buffered.
    pub(crate) fn commit(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
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
        let started = Instant::now();

        let proposals: Vec<Proposal> = keys
            .iter()
            .filter_map(|(t, p)| {
                let b = self.parts.get(t, *p)?;
                Some(Proposal {
                    range: b.range(t, *p)?,
                    rows: b.buffer.windows().map(|(_, w)| w.rows).sum(),
                    dead_letters: b.dead.len() as u64,
                })
            })
            .collect();
        let removed = match &self.run {
            Run::Backfill(plan) if plan.replace => {
                whole_ranges(plan, &proposals)?;
                plan.removed.clone()
            }
            _ => Vec::new(),
        };
        let (mut prepared, refused) =
            self.committer
                .prepare(self.run.entry_kind(), proposals, removed)?;
        self.note_closed();
        self.refuse(consumer, refused)?;
        if prepared.ranges().is_empty() {
            return Ok(());
        }
        if !matches!(self.run, Run::Backfill(_)) {
            prepared.set_watermarks(self.watermarks(consumer, false));
        }

        // Name every file: names that cannot collide, so a retry or a racing writer never
        // overwrites anything.
        let mut files: Vec<DataFile> = Vec::new();
        let mut planned: Vec<Source<'_>> = Vec::new();
        let mut dead: Vec<(DeadLetterFile, Vec<u8>)> = Vec::new();
        for r in prepared.ranges() {
            let Some(buf) = self.parts.get(&r.topic, r.partition) else {
                continue;
            };
            for (start, w) in buf.buffer.windows() {
                files.push(self.data_file(r, start, w)?);
                planned.push(Source::Window(&buf.buffer, w));
            }
            if let Some(first) = buf.dead.first() {
                let rel = format!(
                    "{DEAD_LETTER_DIR}/{}-{}/{:020}-{}.parquet",
                    r.topic,
                    r.partition,
                    first.offset,
                    uuid::Uuid::new_v4().simple()
                );
                let body =
                    encode::encode_dead_letters(&r.topic, r.partition, &buf.dead, &self.props)
                        .map_err(|source| LoadError::Encode {
                            path: rel.clone(),
                            source,
                        })?;
                let file = DeadLetterFile {
                    path: rel,
                    bytes: 0,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    offsets: buf.dead.iter().map(|d| d.offset).collect(),
                };
                dead.push((file, body));
            }
        }
        // A replace carries the rows of other partitions out of the compacted files it removes.
        if let Run::Backfill(plan) = &self.run {
            let replaced =
                |t: &str, p: i32| plan.ranges.iter().any(|r| r.topic == t && r.partition == p);
            let state = self.committer.state();
            let state = lock(&state);
            for f in state
                .files
                .iter()
                .filter(|f| plan.carried.contains(&f.path))
            {
                if let Some(carried) = compact::carried_file(f, &|t, p| !replaced(t, p)) {
                    files.push(carried);
                    planned.push(Source::Carried(f.clone()));
                }
            }
        }
        let (schema, props) = (&self.job.schema.table, &self.props);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let (store, rt) = (self.committer.manifest().store(), self.committer.runtime());
        let written = prepared.write(&self.committer, files.clone(), dead, |i| {
            let (buf, w) = match &planned[i] {
                Source::Window(buf, w) => (*buf, *w),
                Source::Carried(source) => {
                    return compact::encode_carried(store, &rt, source, &files[i], props)
                }
            };
            let batches = buf.window_batches(w).map_err(|source| LoadError::Arrow {
                context: format!("gathering the rows of {}", paths[i]),
                source,
            })?;
            compact::encode_file(schema, &batches, props, paths[i])
        })?;
        match written.publish(&self.committer)? {
            Outcome::Refused { refused, conflicts } => {
                self.count_conflicts(conflicts);
                self.refuse(consumer, refused)
            }
            Outcome::Published {
                entry,
                refused,
                conflicts,
            } => {
                self.count_conflicts(conflicts);
                self.note_closed();
                self.refuse(consumer, refused)?;
                self.published(consumer, &entry, started);
                Ok(())
            }
        }
    }

    /// Tells the decode thread, the metrics and the late-record rule where windows are
    /// closed through, as the table state last read says.
    pub(crate) fn note_closed(&self) {
        let closed = lock(&self.committer.state()).closed_through_ms;
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
        let state = self.committer.state();
        let state = lock(&state);
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

    /// With nothing to load: an entry of watermarks alone, when an idle partition's would
    /// pass a window's end (so idle partitions hold no window open).
    pub(crate) fn heartbeat(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        if matches!(self.run, Run::Backfill(_)) || self.parts.iter().next().is_none() {
            return Ok(());
        }
        let marks = self.watermarks(consumer, true);
        if marks.is_empty() {
            return Ok(());
        }
        let (mut prepared, _) =
            self.committer
                .prepare(self.run.entry_kind(), Vec::new(), Vec::new())?;
        prepared.set_watermarks(marks);
        let written = prepared.write(&self.committer, Vec::new(), Vec::new(), |_| {
            Ok(Encoded::default())
        })?;
        if let Outcome::Published { entry, .. } = written.publish(&self.committer)? {
            tracing::debug!(seq = entry.seq, closed_through_ms = ?entry.closed_through_ms, "watermarks");
            if let Some(closed) = entry.closed_through_ms {
                self.compact_in_background(closed);
            }
        }
        self.note_closed();
        Ok(())
    }

    /// A data file for the rows of window `start` of range `r`, under a fresh name.
    fn data_file(&self, r: &OffsetRange, start: i64, w: &WindowRows) -> Result<DataFile> {
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
            window_end_ms: start + self.job.window.millis(),
            min_event_ms: w.min_event_ms,
            max_event_ms: w.max_event_ms,
            schema_fingerprint: self.job.schema.fingerprint.clone(),
            stats: None,
            spans: vec![],
            // Under `window.late_records = "load"`, rows of a closed window are a late
            // addition (under the other policies the decode thread took them out).
            late: self.job.closing.late_records == LateRecords::Load
                && start + self.job.window.millis() <= self.closed_through.load(Ordering::Relaxed),
        })
    }

    fn count_conflicts(&self, conflicts: u32) {
        if conflicts > 0 {
            tracing::debug!(conflicts, "lost races for manifest entries; re-read");
            self.metrics
                .conflicts
                .fetch_add(u64::from(conflicts), Ordering::Relaxed);
        }
    }

    /// The buffers of `entry`'s partitions are loaded: start their next ranges, count, and
    /// write the group offsets.
    fn published(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        entry: &Entry,
        started: Instant,
    ) {
        let mut group_offsets = Vec::new();
        for r in &entry.ranges {
            if let Some(buf) = self.parts.get_mut(&r.topic, r.partition) {
                let next = buf.next;
                buf.loaded += r.to - r.from;
                buf.reset_to(next);
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
            self.compact_in_background(closed);
        }
        crate::failpoint::hit("before-group-commit");
        source::commit_group_offsets(consumer, &group_offsets);
    }

    /// Acts on refusals: a fenced partition is read again from the committed end, a range
    /// that does not add up from where it starts (its buffers are dropped). A backfill or
    /// replace that no longer fits is an error.
    fn refuse(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        refused: Vec<Refusal>,
    ) -> Result<()> {
        let mut out: Vec<(String, i32, i64)> = Vec::new();
        for r in refused {
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
                    let Some(from) = self.parts.get(&topic, partition).and_then(|b| b.from())
                    else {
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

/// Where the rows of a file to write come from.
enum Source<'a> {
    /// A window of a partition's buffer.
    Window(&'a PartitionBuffer, &'a WindowRows),
    /// The rows of a removed compacted file that a replace keeps.
    Carried(DataFile),
}

/// A replace swaps every file of its ranges at once: each re-derived range must be whole.
fn whole_ranges(plan: &crate::ops::backfill::Plan, proposals: &[Proposal]) -> Result<()> {
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
