//! The loader's side of a commit: drain the decode worker, propose each partition's range,
//! name a file per window, hand them to the [`Committer`](crate::table::commit::Committer),
//! and after the outcome reset the buffers, re-seek refused partitions and write the group
//! offsets (for lag tools only: they are never read back).

use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::BaseConsumer;

use crate::error::{LoadError, Result};
use crate::load::run::Loader;
use crate::load::Run;
use crate::ops::compact;
use crate::record::buffer::{PartitionBuffer, WindowRows};
use crate::record::encode;
use crate::record::source::{self, LoaderContext};
use crate::table::commit::{Encoded, Outcome, Proposal};
use crate::table::delta::stats::file_stats;
use crate::table::entry::{
    DataFile, DeadLetterFile, Entry, OffsetRange, StatsJson, DEAD_LETTER_DIR,
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
            return Ok(());
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
        let (prepared, refused) =
            self.committer
                .prepare(self.run.entry_kind(), proposals, removed)?;
        self.refuse(consumer, refused)?;
        if prepared.ranges().is_empty() {
            return Ok(());
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
            let state = crate::table::commit::lock(&state);
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
            let body =
                encode::encode(schema, &batches, props).map_err(|source| LoadError::Encode {
                    path: paths[i].to_string(),
                    source,
                })?;
            Ok(Encoded {
                body,
                stats: StatsJson::try_from(file_stats(&batches)).ok(),
            })
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
                self.refuse(consumer, refused)?;
                self.published(consumer, &entry, started);
                Ok(())
            }
        }
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
