//! The run loop: poll, keep each record in its partition's state, hand full chunks to the
//! decode worker, and commit when the policy says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::file::properties::WriterProperties;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use crate::config::{Job, StartOffset};
use crate::error::{LoadError, Result};
use crate::load::background::{CompactClosed, Compactor};
use crate::load::committing::{Batch, Finished, InFlight, Worker};
use crate::load::decoding::{decode_thread, Decoding, LateRule, DECODE_QUEUE};
use crate::load::metrics::Metrics;
use crate::load::partition::{PartState, Partitions, Stop};
use crate::load::progress::Progress;
use crate::load::runs::{Run, RunStats, CHUNK_BYTES, CHUNK_RECORDS, KAFKA_TIMEOUT};
use crate::record::decode::ChunkDecoder;
use crate::record::encode;
use crate::record::source::{self, Assignment, LoaderContext, TopicPartition};
use crate::table::commit::Committer;
use crate::table::evolve::Verdict;
use crate::table::manifest::Manifest;

/// Messages between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;

/// The poll thread's ends of the committer thread's channels.
pub(crate) struct Lane {
    pub(crate) batches: std::sync::mpsc::Sender<Batch>,
    pub(crate) done: std::sync::mpsc::Receiver<Finished>,
}

pub struct Loader {
    pub(crate) job: Job,
    pub(crate) committer: Arc<Committer>,
    /// The committer thread, while a run is on.
    pub(crate) lane: Option<Lane>,
    /// The commit handed to the committer thread and not back yet (at most one).
    pub(crate) in_flight: Option<InFlight>,
    /// The owned partitions are paused (a commit in flight, the budget reached).
    pub(crate) paused: bool,
    /// Failed commits in a row, and when the next may start.
    pub(crate) failures: u32,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) decoding: Option<Decoding>,
    pub(crate) props: WriterProperties,
    pub(crate) parts: Partitions,
    pub(crate) stats: RunStats,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) run: Run,
    pub(crate) metrics: Arc<Metrics>,
    progress: Progress,
    /// Windows closed through here (ms; `i64::MIN`: none), for the decode thread.
    pub(crate) closed_through: Arc<std::sync::atomic::AtomicI64>,
    /// The background compaction of closed windows, when one runs.
    pub(crate) compactor: Compactor,
}

impl Loader {
    pub fn new(
        job: Job,
        rt: Arc<tokio::runtime::Runtime>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Self> {
        let manifest = crate::open_manifest(&job)?;
        Self::with_manifest(job, manifest, rt, shutdown)
    }

    /// A loader over an already opened manifest (tests wrap its store to inject faults).
    pub fn with_manifest(
        job: Job,
        manifest: Manifest,
        rt: Arc<tokio::runtime::Runtime>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let writer = format!(
            "{host}/{}/{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let schema = crate::schema_def(&job)?;
        let delta = crate::open_delta(&job, &manifest)?;
        let iceberg = crate::open_iceberg(&job, &manifest)?;
        let committer = Committer::open(manifest, rt, writer)?;
        let verdict = crate::table::evolve::compare(committer.snapshot().schema.as_ref(), &schema);
        match &verdict {
            Verdict::Same => {}
            Verdict::Unreadable(_) => {
                return Err(LoadError::SchemaUnreadable {
                    diff: verdict.report(),
                })
            }
            Verdict::Incompatible(_) if !job.allow_incompatible_schema => {
                return Err(LoadError::SchemaChange {
                    diff: verdict.report(),
                })
            }
            v => tracing::warn!(
                changes = %v.report(),
                "the job's schema changes the table's: recorded at the next commit (and in the Delta log's metaData)"
            ),
        }
        let committer = committer
            .with_table(schema, delta)
            .with_iceberg(iceberg)
            .with_windows(job.window.millis());
        Ok(Loader {
            props: encode::writer_properties(job.compression, job.row_group_rows),
            job,
            committer: Arc::new(committer),
            lane: None,
            in_flight: None,
            paused: false,
            failures: 0,
            retry_at: None,
            decoding: None,
            parts: Partitions::default(),
            stats: RunStats::default(),
            shutdown,
            run: Run::Continuous,
            metrics: Arc::new(Metrics::default()),
            progress: Progress::new(),
            closed_through: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            compactor: Compactor::default(),
        })
    }

    /// Resolves where partitions start: the manifest's committed end, refreshed now.
    fn resolver(&self) -> Box<source::StartResolver> {
        let committer = self.committer.clone();
        let start = self.job.start_offset;
        // Reads the log's tail into a new snapshot: never waits for a commit in flight.
        Box::new(move |parts: &[TopicPartition]| {
            let (s, _) = committer.refresh()?;
            Ok(parts
                .iter()
                .map(|(t, p)| match s.partition(t, *p).and_then(|ps| ps.end()) {
                    Some(end) => Offset::Offset(end),
                    None => match start {
                        StartOffset::Earliest => Offset::Beginning,
                        StartOffset::Latest => Offset::End,
                    },
                })
                .collect())
        })
    }

    /// A continuous run compacts the windows each commit closes with `compact`, on a thread
    /// of its own.
    pub fn with_compaction(mut self, compact: CompactClosed) -> Self {
        self.compactor = Compactor::new(Some(compact));
        self
    }

    /// The table's manifest.
    pub fn manifest(&self) -> &crate::table::manifest::Manifest {
        self.committer.manifest()
    }

    /// The loader's metrics (served by `run --metrics-addr`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until the run is over (see [`Run`]), committing as it goes; then commits what is
    /// buffered.
    pub fn run(mut self, run: Run) -> Result<RunStats> {
        self.run = run;
        let ctx = LoaderContext::new(self.resolver(), &self.job.brokers);
        let consumer = source::create_consumer(self.job.source(), ctx)?;
        match &self.run {
            Run::Continuous => {
                let topics: Vec<&str> = self.job.topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&topics)
                    .map_err(|source| LoadError::Kafka {
                        context: format!("subscribing to {}", topics.join(", ")),
                        source,
                    })?;
            }
            Run::Once => self.assign_all(&consumer)?,
            Run::Backfill(_) => self.assign_plan(&consumer)?,
        }
        let job = &self.job;
        let decoder = ChunkDecoder::for_format(
            job.schema.clone(),
            job.event_time.clone(),
            job.format,
            job.writers.as_ref(),
            self.shutdown.clone(),
        )
        .map_err(|e| LoadError::Payload(e.0))?;
        let window = self.job.window;
        self.note_closed();
        let late = LateRule {
            closed_through: self.closed_through.clone(),
            policy: self.job.closing.late_records,
        };
        let result = std::thread::scope(|scope| {
            let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
            let (done_tx, done) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("sluice-decode".into())
                .spawn_scoped(scope, move || {
                    decode_thread(decoder, window, late, jobs_rx, done_tx)
                })
                .map_err(LoadError::Runtime)?;
            self.decoding = Some(Decoding::new(jobs, done));
            let (batches, batches_rx) = std::sync::mpsc::channel();
            let (finished_tx, finished) = std::sync::mpsc::channel();
            let worker = Worker {
                committer: self.committer.clone(),
                job: self.job.clone(),
                run: self.run.clone(),
                props: self.props.clone(),
            };
            std::thread::Builder::new()
                .name("sluice-commit".into())
                .spawn_scoped(scope, move || worker.serve(batches_rx, finished_tx))
                .map_err(LoadError::Runtime)?;
            self.lane = Some(Lane {
                batches,
                done: finished,
            });
            let result = loop {
                // Flush what is buffered (also on SIGINT/SIGTERM); not after an error.
                let result = self.consume(&consumer).and_then(|_| self.drain(&consumer));
                // A bounded run whose last commit was fenced reads on from the committed end.
                let unfinished = self.parts.iter().any(|(_, _, b)| !b.stop.is_done());
                if result.is_err()
                    || !self.run.is_bounded()
                    || !unfinished
                    || self.shutdown.load(Ordering::Relaxed)
                {
                    break result;
                }
            };
            // Closing the queues ends the decode and committer threads (a commit in flight
            // after an error finishes first; the log decides what it did).
            self.decoding = None;
            self.lane = None;
            result
        });
        let bounded = self.run.is_bounded();
        if bounded && result.is_ok() {
            self.progress.report(&self.parts, true);
        }
        if !bounded {
            consumer.unsubscribe();
        }
        drop(consumer);
        self.compactor.join();
        self.stats.conflicts = self.metrics.conflicts.load(Ordering::Relaxed);
        self.stats.failed_commits = self.metrics.failed_commits.load(Ordering::Relaxed);
        result.map(|_| self.stats)
    }

    /// `--once`: own every partition, positioned at the manifest's end, with targets taken from
    /// the broker's high watermarks now.
    fn assign_all(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        let parts = source::all_partitions(consumer, &self.job.topics, KAFKA_TIMEOUT)?;
        let starts = (self.resolver())(&parts)?;
        let highs = source::watermarks(consumer, &parts, KAFKA_TIMEOUT)?;
        let mut list = TopicPartitionList::new();
        for ((t, p), o) in parts.iter().zip(&starts) {
            add(&mut list, t, *p, *o)?;
            let stop = Stop::Before {
                target: highs.get(&(t.clone(), *p)).map(|w| w.1),
                planned: false,
                refined: false,
            };
            tracing::debug!(topic = %t, partition = p, start = ?o, listed_end = ?stop.target(), "assigned");
            self.parts.insert(t, *p, PartState::new(*o, stop));
        }
        assign(consumer, &list)?;
        tracing::info!(
            partitions = parts.len(),
            "loading up to the current end of each partition"
        );
        Ok(())
    }

    /// `backfill`: own the plan's partitions, positioned at each range's start.
    fn assign_plan(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        let Run::Backfill(plan) = &self.run else {
            return Ok(());
        };
        let ranges = plan.ranges.clone();
        let open_ended: Vec<TopicPartition> = ranges
            .iter()
            .filter(|r| r.to.is_none())
            .map(|r| (r.topic.clone(), r.partition))
            .collect();
        let highs = source::watermarks(consumer, &open_ended, KAFKA_TIMEOUT)?;
        let mut list = TopicPartitionList::new();
        for r in &ranges {
            add(&mut list, &r.topic, r.partition, Offset::Offset(r.from))?;
            let stop = match r.to {
                Some(to) if to <= r.from => Stop::Done {
                    target: Some(to),
                    planned: true,
                },
                Some(to) => Stop::Before {
                    target: Some(to),
                    planned: true,
                    refined: true,
                },
                None => Stop::Before {
                    target: highs.get(&(r.topic.clone(), r.partition)).map(|w| w.1),
                    planned: false,
                    refined: false,
                },
            };
            let state = PartState::new(Offset::Offset(r.from), stop);
            self.parts.insert(&r.topic, r.partition, state);
        }
        assign(consumer, &list)
    }

    fn consume(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        let bounded = self.run.is_bounded();
        // A replace is one entry: it commits once, at the end.
        let replacing = matches!(&self.run, Run::Backfill(p) if p.replace);
        let mut last_commit = Instant::now();
        let mut since_clock = 0u32;
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                tracing::info!("shutdown requested: committing what is buffered");
                return Ok(());
            }
            let polled = consumer.poll(Duration::from_millis(100));
            consumer.context().watch.check()?;
            let idle = polled.is_none();
            // Rebalance callbacks run inside poll: act on them before on what poll returned.
            for event in consumer.context().take_events() {
                if let Assignment::Assigned(list) = &event {
                    let new: Vec<TopicPartition> = list.iter().map(|(tp, _)| tp.clone()).collect();
                    self.pause_new(consumer, &new);
                }
                self.on_assignment(event)?;
            }
            match polled {
                None => {}
                Some(Ok(msg)) => {
                    since_clock += 1;
                    self.on_message(consumer, &msg)?;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => self.on_eof(consumer, p)?,
                Some(Err(e)) => self.on_kafka_error(consumer, e)?,
            }
            if bounded {
                if idle {
                    self.mark_fetched_ends(consumer);
                }
                if self.parts.iter().all(|(_, _, b)| b.stop.is_done()) {
                    return Ok(());
                }
            }
            if idle || since_clock >= CLOCK_EVERY {
                since_clock = 0;
                self.take_decoded(false)?;
                self.take_finished(consumer, false)?;
                let buffered = self.buffered();
                self.metrics
                    .buffered_bytes
                    .store(buffered.bytes, Ordering::Relaxed);
                if bounded {
                    self.progress.report(&self.parts, false);
                }
                self.flow(consumer);
                if !self.lane_free() {
                    // A commit in flight (or a pause after a failed one): read on.
                } else if !replacing && self.job.commit.due(last_commit.elapsed(), buffered) {
                    self.commit(consumer)?;
                    last_commit = Instant::now();
                } else if !bounded && last_commit.elapsed() >= self.job.commit.interval {
                    // Nothing to load: idle partitions may still close windows.
                    self.heartbeat(consumer)?;
                    last_commit = Instant::now();
                }
            }
        }
    }

    pub(crate) fn buffered(&self) -> crate::config::Buffered {
        let in_flight = self
            .decoding
            .as_ref()
            .map_or((0, 0), |d| (d.in_flight_bytes, d.in_flight_rows));
        let (bytes, rows) = self.parts.iter().fold(in_flight, |(b, r), (_, _, p)| {
            (b + p.buffered_bytes(), r + p.buffered_rows())
        });
        crate::config::Buffered {
            bytes: bytes as u64,
            rows,
            ranges: self.parts.iter().any(|(_, _, p)| p.has_range()),
        }
    }

    fn on_message(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<()> {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let Some(buf) = self.parts.get_mut(topic, partition) else {
            return Ok(()); // not ours (any more)
        };
        if let Some(from) = buf.from().filter(|_| offset < buf.next) {
            // Already kept (librdkafka drops what was fetched before a seek, so this is not
            // expected) — unless the offset was recorded as holding no record.
            if buf
                .not_records
                .iter()
                .any(|&(a, b)| a <= offset && offset < b)
            {
                tracing::error!(topic, partition, offset, "offsets not all accounted for: a record arrived at an offset recorded as not a record; dropping the partition's buffers and re-reading it");
                self.metrics.unaccounted.fetch_add(1, Ordering::Relaxed);
                return self.reposition(consumer, &[(topic.to_string(), partition, from)]);
            }
            return Ok(());
        }
        if buf.stop != Stop::Never {
            // The watermark cached from the fetch response is exact; ListOffsets may lag.
            buf.refine_target(|| {
                source::cached_watermarks(consumer, topic, partition).map(|w| w.1)
            });
            if let Some(t) = buf.stop.target().filter(|&t| offset >= t) {
                // Past the target: not kept, and the range must not cover it. Offsets between
                // the last record kept and the target hold no record (this one came next).
                if buf.from().is_some() && !buf.stop.is_done() {
                    buf.skip_to(t);
                }
                buf.finish();
                return Ok(());
            }
            if buf.stop.is_done() {
                return Ok(());
            }
        }
        buf.keep(offset);
        self.stats.consumed += 1;
        let ts = msg.timestamp().to_millis();
        if let Some(ts) = ts {
            buf.newest_ts = Some(buf.newest_ts.map_or(ts, |n| n.max(ts)));
        }
        buf.raw.push(offset, ts, msg.key(), msg.payload());
        if matches!(buf.stop.target(), Some(t) if buf.next >= t) {
            buf.finish();
        }
        if buf.raw.len() >= CHUNK_RECORDS || buf.raw.bytes() >= CHUNK_BYTES {
            self.send_chunk(topic, partition)?;
        }
        Ok(())
    }

    /// Bounded runs: a partition whose last fetch found nothing past our position is done.
    /// This does not rely on the EOF event, which some brokers never trigger for a consumer
    /// that starts exactly at the end, nor on ListOffsets, which some brokers under-report: a
    /// fetch that had records past `next` would have delivered them.
    fn mark_fetched_ends(&mut self, consumer: &BaseConsumer<LoaderContext>) {
        for (topic, partition, buf) in self.parts.iter_mut() {
            if buf.stop.is_done() {
                continue;
            }
            if let Some((low, high)) = source::cached_watermarks(consumer, topic, partition) {
                let position = if buf.from().is_some() { buf.next } else { low };
                if high <= position {
                    buf.pin_at(high);
                    buf.finish();
                }
            }
        }
    }

    fn on_eof(&mut self, consumer: &BaseConsumer<LoaderContext>, partition: i32) -> Result<()> {
        // The EOF event names only the partition number; the position tells each topic's end.
        let positions = consumer.position().map_err(|source| LoadError::Kafka {
            context: "reading positions".into(),
            source,
        })?;
        let ends: Vec<(String, i64)> = positions
            .elements()
            .iter()
            .filter(|e| e.partition() == partition)
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), o)),
                _ => None,
            })
            .collect();
        drop(positions);
        for (topic, end) in ends {
            if let Some(buf) = self.parts.get_mut(&topic, partition) {
                // Nothing consumed yet: the partition's end is where the next run starts.
                // Otherwise the range grows over the transaction markers (and aborted records)
                // before the position, never over a record read past a bounded run's target.
                buf.pin_at(end);
                buf.reach(end);
                buf.finish();
            }
        }
        // A partition with nothing consumed and no numeric start reached its end too. It is
        // pinned only when its log is empty (low = high): the EOF names no offset, and under
        // read_committed it comes at the last stable offset, below the high watermark while a
        // transaction is open; pinning at the high watermark then would skip that
        // transaction's records once it commits. Otherwise it stays unpinned and the next run
        // starts where this one did (a log of only aborted records is read again, never lost).
        for (topic, p, buf) in self.parts.iter_mut() {
            if p == partition && buf.from().is_none() {
                if let Some((low, high)) = source::cached_watermarks(consumer, topic, p) {
                    if high <= low {
                        buf.pin_at(high);
                    }
                }
                buf.finish();
            }
        }
        Ok(())
    }

    /// A consumer error: a start offset Kafka no longer has (`auto.offset.reset=error`) stops
    /// the run, naming the partition and the offsets it lost; others librdkafka retries.
    fn on_kafka_error(&self, consumer: &BaseConsumer<LoaderContext>, e: KafkaError) -> Result<()> {
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::AutoOffsetReset) {
            tracing::warn!(error = %e, "kafka error (librdkafka retries)");
            return Ok(());
        }
        // The error names no partition: find the one whose position Kafka no longer has. Its
        // loss, as the table sees it, starts where its uncommitted range does (the run stops
        // here and commits nothing).
        for (topic, partition, buf) in self.parts.iter() {
            let Some(from) = buf.from() else {
                continue;
            };
            let part = [(topic.to_string(), partition)];
            let marks = source::watermarks(consumer, &part, KAFKA_TIMEOUT)?;
            if let Some(&(low, _)) = marks.get(&part[0]).filter(|w| buf.next < w.0) {
                return Err(LoadError::RetentionGap {
                    topic: topic.to_string(),
                    partition,
                    from,
                    to: low,
                });
            }
        }
        Err(LoadError::Kafka {
            context: "a partition's committed end is no longer in Kafka (retention gap)".into(),
            source: e,
        })
    }

    pub(crate) fn on_assignment(&mut self, event: Assignment) -> Result<()> {
        match event {
            Assignment::Assigned(list) => {
                for ((t, p), o) in list {
                    self.parts.insert(&t, p, PartState::new(o, Stop::Never));
                }
            }
            Assignment::Lost => self.parts.clear(),
            Assignment::Revoked(list) => {
                for (t, p) in list {
                    self.parts.remove(&t, p);
                    self.metrics.forget_partition(&t, p);
                }
            }
            Assignment::Failed(reason) => return Err(LoadError::Rebalance { reason }),
        }
        Ok(())
    }

    /// Hands a partition's raw chunk to the decode worker (waiting while its queue is full).
    pub(crate) fn send_chunk(&mut self, topic: &str, partition: i32) -> Result<()> {
        self.take_decoded(false)?;
        let (Some(decoding), Some(part)) =
            (self.decoding.as_mut(), self.parts.get_mut(topic, partition))
        else {
            return Ok(());
        };
        decoding.send(topic, partition, part, &self.metrics)
    }

    /// Takes decoded chunks into their partitions' buffers (with `wait`, every one in flight).
    pub(crate) fn take_decoded(&mut self, wait: bool) -> Result<()> {
        match self.decoding.as_mut() {
            Some(d) => d.take(
                &mut self.parts,
                wait,
                self.job.bad_records,
                self.job.closing.late_records,
            ),
            None => Ok(()),
        }
    }

    /// Drops the buffers of partitions and positions them at the given offsets.
    pub(crate) fn reposition(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        list: &[(String, i32, i64)],
    ) -> Result<()> {
        for (topic, partition, at) in list {
            let (topic, partition, at) = (topic.as_str(), *partition, *at);
            let Some(buf) = self.parts.get_mut(topic, partition) else {
                continue;
            };
            // A scheduled run chases the end again; a backfill keeps its planned end.
            buf.read_again_from(at);
            if let Err(source) = consumer.seek(topic, partition, Offset::Offset(at), KAFKA_TIMEOUT)
            {
                // A zombie whose partition was already taken away: let it go (the pending
                // revoke will confirm). Still owned: consuming on from the old position
                // would leave a gap, so stop.
                let owned = consumer.assignment().map(|a| {
                    a.elements()
                        .iter()
                        .any(|e| e.topic() == topic && e.partition() == partition)
                });
                if matches!(owned, Ok(false)) {
                    tracing::warn!(topic, partition, "no longer assigned; dropping it");
                    self.parts.remove(topic, partition);
                } else {
                    return Err(LoadError::Kafka {
                        context: format!("seeking {topic}/{partition} to {at}"),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

fn add(list: &mut TopicPartitionList, topic: &str, partition: i32, at: Offset) -> Result<()> {
    list.add_partition_offset(topic, partition, at)
        .map_err(|source| LoadError::Kafka {
            context: format!("assigning {topic}/{partition}"),
            source,
        })
}

fn assign(consumer: &BaseConsumer<LoaderContext>, list: &TopicPartitionList) -> Result<()> {
    consumer.assign(list).map_err(|source| LoadError::Kafka {
        context: "assigning partitions".into(),
        source,
    })
}
