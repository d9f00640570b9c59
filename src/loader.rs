//! The loader loop: consume, decode in chunks, buffer by event-time window, and commit.
//!
//! ```text
//! poll ──► RawChunk (per partition) ──decode thread──► decoded chunks ──commit──► Parquet files
//!                                                                           └────► one manifest entry
//! ```
//!
//! Full chunks are decoded on a thread of their own while the polling thread goes on reading;
//! a commit first waits for every chunk in flight. Each chunk carries its partition's
//! generation: a chunk of a partition revoked, re-assigned or re-positioned meanwhile is
//! dropped when it comes back.
//!
//! A commit writes every buffered window as a Parquet file and every dead record to a
//! dead-letter file, then publishes one manifest entry naming them with each partition's offset
//! range `[from, next)`. A range is accepted only if it starts where the partition's committed
//! range ends (fencing); otherwise that partition's buffers are dropped and it is re-positioned
//! at the committed end. Kafka group offsets are written after the manifest, for lag tools only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::file::properties::WriterProperties;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use crate::buffer::{DecodedChunk, PartitionBuffer, WindowRows};
use crate::config::{BadRecordPolicy, Job, StartOffset};
use crate::decode::{ChunkDecoder, DeadRecord, RawChunk};
use crate::error::{LoadError, ManifestError, Result};
use crate::manifest::{
    DataFile, DeadLetterFile, Entry, EntryKind, Manifest, OffsetRange, Refusal, TableState,
};
use crate::metrics::Metrics;
use crate::source::{self, Assignment, LoaderContext, TopicPartition};
use crate::writer;

/// Records decoded together: up to this many, or this many bytes of payload, whichever first
/// (each partition fills an arena of its own, and a few more are on their way to the decode
/// thread: bytes keep them small whatever the record size).
pub const CHUNK_RECORDS: usize = 8192;
pub const CHUNK_BYTES: usize = 1 << 20;
/// Messages between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const STORE_ATTEMPTS: u32 = 8;
/// Full chunks queued for the decode thread before polling waits for it.
const DECODE_QUEUE: usize = 2;
/// Uploads in flight at once.
const UPLOADS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run until SIGINT/SIGTERM, then commit what is buffered.
    Continuous,
    /// Load up to each partition's end as of the start, commit, exit.
    Once,
    /// Load the offset ranges of a [`BackfillPlan`] through the same commit path.
    Backfill,
}

impl Mode {
    /// Modes that stop at a target offset per partition.
    fn bounded(self) -> bool {
        matches!(self, Mode::Once | Mode::Backfill)
    }
}

/// One partition's range to backfill, half-open; `to: None` is the partition's end now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackfillRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: Option<i64>,
}

/// What `sluice backfill` loads: ranges never loaded (a `Backfill` entry), or with `replace`,
/// loaded ranges re-derived from Kafka and swapped for the files in `removed` in one entry.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackfillPlan {
    pub ranges: Vec<BackfillRange>,
    pub replace: bool,
    pub removed: Vec<String>,
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunStats {
    pub rows: u64,
    pub dead_letters: u64,
    pub files: u64,
    pub bytes: u64,
    pub commits: u64,
    pub fenced: u64,
}

/// An owned partition's uncommitted state.
struct PartBuf {
    /// Start of the uncommitted range; `None` until known (nothing committed, started at a
    /// logical offset).
    from: Option<i64>,
    /// End of the uncommitted range: one past the last record kept (or past the last offset
    /// known to hold no record). Only records kept move it, never a consumer position.
    next: i64,
    /// Records kept in `[from, next)`: each becomes a row or a dead letter.
    polled: u64,
    /// Offsets in `[from, next)` the broker skipped between two records it delivered
    /// (transaction markers, compacted offsets), merged, ascending.
    not_records: Vec<(i64, i64)>,
    raw: RawChunk,
    /// Decoded rows by window.
    buffer: PartitionBuffer,
    dead: Vec<DeadRecord>,
    /// Changes whenever the buffers are dropped: decoded chunks of an older generation are
    /// stale.
    generation: u64,
    /// `--once`: stop at this offset (refined from the first fetch's watermark).
    target: Option<i64>,
    target_refined: bool,
    done: bool,
    /// Offsets of this partition committed by this run (for progress).
    loaded: i64,
    /// The partition started at a logical offset (earliest/latest) and its position is now
    /// known: commit an empty range there so the next run starts at the same place.
    pin: bool,
}

impl PartBuf {
    fn new(start: Offset) -> Self {
        let from = match start {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        PartBuf {
            from,
            next: from.unwrap_or(0),
            polled: 0,
            not_records: Vec::new(),
            raw: RawChunk::default(),
            buffer: PartitionBuffer::default(),
            dead: Vec::new(),
            generation: next_generation(),
            target: None,
            target_refined: false,
            done: false,
            loaded: 0,
            pin: false,
        }
    }

    fn has_range(&self) -> bool {
        matches!(self.from, Some(f) if self.next > f)
    }

    fn needs_commit(&self) -> bool {
        self.has_range() || self.pin
    }

    /// Learns where a partition that started at a logical offset stands.
    fn pin_at(&mut self, offset: i64) {
        if self.from.is_none() {
            self.from = Some(offset);
            self.next = offset;
            self.pin = true;
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.raw.bytes() + self.buffer.bytes()
    }

    fn buffered_rows(&self) -> usize {
        self.raw.len() + self.buffer.rows()
    }

    /// Moves `next` to `offset`, recording the offsets skipped on the way as not records: the
    /// caller knows the broker holds no record there (it delivered a record at or past
    /// `offset` right after the one before `next`).
    fn skip_to(&mut self, offset: i64) {
        if offset <= self.next {
            return;
        }
        match self.not_records.last_mut() {
            Some(last) if last.1 == self.next => last.1 = offset,
            _ => self.not_records.push((self.next, offset)),
        }
        self.next = offset;
    }

    /// The uncommitted range with its accounting, if it has one.
    fn range(&self, topic: &str, partition: i32) -> Option<OffsetRange> {
        Some(OffsetRange {
            topic: topic.to_string(),
            partition,
            from: self.from?,
            to: self.next,
            records: Some(self.polled),
            not_records: self.not_records.clone(),
        })
    }

    fn reset_to(&mut self, offset: i64) {
        self.pin = false;
        self.from = Some(offset);
        self.next = offset;
        self.polled = 0;
        self.not_records.clear();
        self.raw.clear();
        self.buffer.clear();
        self.dead.clear();
        self.generation = next_generation();
    }
}

fn decode_thread_gone() -> LoadError {
    LoadError::Runtime(std::io::Error::other("the decode thread stopped"))
}

fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A full chunk on its way to the decode thread, and back.
struct DecodeJob {
    topic: String,
    partition: i32,
    generation: u64,
    raw: RawChunk,
    /// The raw chunk's size when sent (it comes back cleared).
    bytes: usize,
    rows: usize,
    decoded: Option<DecodedChunk>,
}

/// The polling thread's end of the decode thread.
struct Decoding {
    jobs: SyncSender<DecodeJob>,
    done: Receiver<DecodeJob>,
    in_flight: usize,
    in_flight_bytes: usize,
    in_flight_rows: usize,
    /// Cleared arenas back from the decode thread, for the next chunks.
    spare: Vec<RawChunk>,
}

impl Decoding {
    fn new(jobs: SyncSender<DecodeJob>, done: Receiver<DecodeJob>) -> Self {
        Decoding {
            jobs,
            done,
            in_flight: 0,
            in_flight_bytes: 0,
            in_flight_rows: 0,
            spare: Vec::new(),
        }
    }
}

fn decode_thread(
    decoder: ChunkDecoder,
    window: crate::window::WindowSize,
    jobs: Receiver<DecodeJob>,
    done: Sender<DecodeJob>,
) {
    while let Ok(mut job) = jobs.recv() {
        let decoded = decoder.decode(&job.raw, &job.topic, job.partition);
        job.decoded = Some(DecodedChunk::new(decoded, window));
        job.raw.clear();
        if done.send(job).is_err() {
            break;
        }
    }
}

/// Owned partitions, looked up by `&str` topic without allocating.
#[derive(Default)]
struct Partitions {
    topics: Vec<(String, Vec<Option<PartBuf>>)>,
}

impl Partitions {
    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartBuf> {
        let (_, parts) = self.topics.iter_mut().find(|(t, _)| t == topic)?;
        parts.get_mut(usize::try_from(partition).ok()?)?.as_mut()
    }

    fn get(&self, topic: &str, partition: i32) -> Option<&PartBuf> {
        let (_, parts) = self.topics.iter().find(|(t, _)| t == topic)?;
        parts.get(usize::try_from(partition).ok()?)?.as_ref()
    }

    fn insert(&mut self, topic: &str, partition: i32, buf: PartBuf) {
        let i = match self.topics.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push((topic.to_string(), Vec::new()));
                self.topics.len() - 1
            }
        };
        let parts = &mut self.topics[i].1;
        let p = usize::try_from(partition).unwrap_or(0);
        if parts.len() <= p {
            parts.resize_with(p + 1, || None);
        }
        parts[p] = Some(buf);
    }

    fn remove(&mut self, topic: &str, partition: i32) {
        if let Some((_, parts)) = self.topics.iter_mut().find(|(t, _)| t == topic) {
            if let Some(slot) = usize::try_from(partition)
                .ok()
                .and_then(|p| parts.get_mut(p))
            {
                *slot = None;
            }
        }
    }

    fn clear(&mut self) {
        self.topics.clear();
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&str, i32, &mut PartBuf)> {
        self.topics.iter_mut().flat_map(|(t, parts)| {
            let t: &str = t.as_str();
            parts
                .iter_mut()
                .enumerate()
                .filter_map(move |(p, b)| b.as_mut().map(|b| (t, p as i32, b)))
        })
    }

    fn iter(&self) -> impl Iterator<Item = (&str, i32, &PartBuf)> {
        self.topics.iter().flat_map(|(t, parts)| {
            parts
                .iter()
                .enumerate()
                .filter_map(move |(p, b)| b.as_ref().map(|b| (t.as_str(), p as i32, b)))
        })
    }
}

/// A table opened for loading: its store, manifest and current state.
pub struct Table {
    pub manifest: Manifest,
    pub state: Arc<Mutex<TableState>>,
}

pub struct Loader {
    job: Job,
    rt: Arc<tokio::runtime::Runtime>,
    table: Table,
    decoding: Option<Decoding>,
    props: WriterProperties,
    writer_id: String,
    parts: Partitions,
    stats: RunStats,
    shutdown: Arc<AtomicBool>,
    plan: Option<BackfillPlan>,
    mode: Mode,
    metrics: Arc<Metrics>,
    progress: Progress,
}

/// Progress of bounded runs: a line on a terminal, a log line at an interval otherwise.
struct Progress {
    tty: bool,
    started: Instant,
    last: Instant,
    total: Option<i64>,
}

fn lock(state: &Mutex<TableState>) -> std::sync::MutexGuard<'_, TableState> {
    match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
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
        let state = rt.block_on(manifest.load())?;
        let props = writer::writer_properties(job.compression, job.row_group_rows);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let writer_id = format!(
            "{host}/{}/{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Ok(Loader {
            job,
            rt,
            table: Table {
                manifest,
                state: Arc::new(Mutex::new(state)),
            },
            decoding: None,
            props,
            writer_id,
            parts: Partitions::default(),
            stats: RunStats::default(),
            shutdown,
            plan: None,
            mode: Mode::Continuous,
            metrics: Arc::new(Metrics::default()),
            progress: Progress {
                tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                started: Instant::now(),
                last: Instant::now(),
                total: None,
            },
        })
    }

    /// Resolves where partitions start: the manifest's committed end, refreshed now.
    fn resolver(&self) -> Box<source::StartResolver> {
        let manifest = self.table.manifest.clone();
        let state = self.table.state.clone();
        let rt = self.rt.clone();
        let start = self.job.start_offset;
        Box::new(move |parts: &[TopicPartition]| {
            let mut s = lock(&state);
            rt.block_on(manifest.refresh(&mut s))?;
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

    /// The loader's metrics (served by `run --metrics-addr`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Loads the ranges of `plan` (see [`BackfillPlan`]) and exits.
    pub fn backfill(mut self, plan: BackfillPlan) -> Result<RunStats> {
        self.plan = Some(plan);
        self.run(Mode::Backfill)
    }

    pub fn run(mut self, mode: Mode) -> Result<RunStats> {
        self.mode = mode;
        let ctx = LoaderContext::new(self.resolver());
        let consumer = source::create_consumer(&self.job, ctx)?;
        match mode {
            Mode::Continuous => {
                let topics: Vec<&str> = self.job.topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&topics)
                    .map_err(|source| LoadError::Kafka {
                        context: format!("subscribing to {}", topics.join(", ")),
                        source,
                    })?;
            }
            Mode::Once => self.assign_all(&consumer)?,
            Mode::Backfill => self.assign_plan(&consumer)?,
        }
        let decoder = ChunkDecoder::new(self.job.schema.clone(), self.job.event_time.clone());
        let window = self.job.window;
        let result = std::thread::scope(|scope| {
            let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
            let (done_tx, done) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("sluice-decode".into())
                .spawn_scoped(scope, move || {
                    decode_thread(decoder, window, jobs_rx, done_tx)
                })
                .map_err(LoadError::Runtime)?;
            self.decoding = Some(Decoding::new(jobs, done));
            let result = self.consume(&consumer, mode);
            // Flush what is buffered (also on SIGINT/SIGTERM); not after an error.
            let result = result.and_then(|_| self.commit(&consumer));
            // Closing the queue ends the decode thread.
            self.decoding = None;
            result
        });
        if mode.bounded() && result.is_ok() {
            self.report_progress(true);
        }
        if mode == Mode::Continuous {
            consumer.unsubscribe();
        }
        drop(consumer);
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
            list.add_partition_offset(t, *p, *o)
                .map_err(|source| LoadError::Kafka {
                    context: format!("assigning {t}/{p}"),
                    source,
                })?;
            let mut buf = PartBuf::new(*o);
            buf.target = highs.get(&(t.clone(), *p)).map(|w| w.1);
            tracing::debug!(topic = %t, partition = p, start = ?o, listed_end = ?buf.target, "assigned");
            self.parts.insert(t, *p, buf);
        }
        consumer.assign(&list).map_err(|source| LoadError::Kafka {
            context: "assigning partitions".into(),
            source,
        })?;
        tracing::info!(
            partitions = parts.len(),
            "loading up to the current end of each partition"
        );
        Ok(())
    }

    /// `backfill`: own the plan's partitions, positioned at each range's start.
    fn assign_plan(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
        let ranges = self
            .plan
            .as_ref()
            .map(|p| p.ranges.clone())
            .unwrap_or_default();
        let open_ended: Vec<TopicPartition> = ranges
            .iter()
            .filter(|r| r.to.is_none())
            .map(|r| (r.topic.clone(), r.partition))
            .collect();
        let highs = source::watermarks(consumer, &open_ended, KAFKA_TIMEOUT)?;
        let mut list = TopicPartitionList::new();
        for r in &ranges {
            list.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.from))
                .map_err(|source| LoadError::Kafka {
                    context: format!("assigning {}/{}", r.topic, r.partition),
                    source,
                })?;
            let mut buf = PartBuf::new(Offset::Offset(r.from));
            match r.to {
                Some(to) => {
                    buf.target = Some(to);
                    buf.target_refined = true;
                    buf.done = to <= r.from;
                }
                None => buf.target = highs.get(&(r.topic.clone(), r.partition)).map(|w| w.1),
            }
            self.parts.insert(&r.topic, r.partition, buf);
        }
        consumer.assign(&list).map_err(|source| LoadError::Kafka {
            context: "assigning partitions".into(),
            source,
        })?;
        Ok(())
    }

    fn consume(&mut self, consumer: &BaseConsumer<LoaderContext>, mode: Mode) -> Result<()> {
        let interval = Duration::from_millis(self.job.commit_interval_ms as u64);
        let mut last_commit = Instant::now();
        let mut since_clock = 0u32;
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                tracing::info!("shutdown requested: committing what is buffered");
                return Ok(());
            }
            let polled = consumer.poll(Duration::from_millis(100));
            let idle = polled.is_none();
            // Rebalance callbacks run inside poll: act on them before on what poll returned.
            for event in consumer.context().take_events() {
                self.on_assignment(event)?;
            }
            match polled {
                None => {}
                Some(Ok(msg)) => {
                    since_clock += 1;
                    self.on_message(consumer, &msg, mode)?;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => self.on_eof(consumer, p)?,
                Some(Err(e)) => self.on_kafka_error(e)?,
            }
            if mode.bounded() {
                if idle {
                    self.mark_fetched_ends(consumer);
                }
                if self.parts.iter().all(|(_, _, b)| b.done) {
                    return Ok(());
                }
            }
            if idle || since_clock >= CLOCK_EVERY {
                since_clock = 0;
                self.take_decoded(false)?;
                let (bytes, rows) = self.buffered();
                self.metrics
                    .buffered_bytes
                    .store(bytes as u64, Ordering::Relaxed);
                if mode.bounded() {
                    self.report_progress(false);
                }
                let due = last_commit.elapsed() >= interval && (bytes > 0 || self.any_range());
                let full = bytes as u64 >= self.job.max_buffered_bytes || rows >= self.job.max_rows;
                // A replace is one entry: it commits once, at the end.
                let replacing = self.plan.as_ref().is_some_and(|p| p.replace);
                if (due || full) && !replacing {
                    self.commit(consumer)?;
                    last_commit = Instant::now();
                }
            }
        }
    }

    /// Offsets done of the total, events/s and ETA: on a terminal a line redrawn every 200 ms,
    /// otherwise a log line every 10 s.
    fn report_progress(&mut self, last: bool) {
        let every = if self.progress.tty { 200 } else { 10_000 };
        if !last && self.progress.last.elapsed() < Duration::from_millis(every) {
            return;
        }
        self.progress.last = Instant::now();
        let mut done = 0i64;
        let mut total = 0i64;
        for (_, _, b) in self.parts.iter() {
            let start = b.from.unwrap_or(b.next);
            done += b.next - start + b.loaded;
            total += b
                .target
                .map(|t| (t - start).max(b.next - start))
                .unwrap_or(b.next - start)
                + b.loaded;
        }
        // Totals only grow as targets are refined; keep the largest seen.
        let total = self.progress.total.unwrap_or(0).max(total);
        self.progress.total = Some(total);
        let secs = self.progress.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            (total - done).max(0) as f64 / rate
        } else {
            f64::INFINITY
        };
        let pct = if total > 0 {
            100.0 * done as f64 / total as f64
        } else {
            100.0
        };
        if self.progress.tty {
            let width = 30;
            let filled = ((pct / 100.0) * width as f64) as usize;
            eprint!(
                "\r[{}{}] {done}/{total} offsets ({pct:.1}%), {rate:.0} events/s, ETA {eta:.0}s   ",
                "#".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width))
            );
            if last {
                eprintln!();
            }
        } else {
            tracing::info!(
                done,
                total,
                events_per_s = rate as u64,
                eta_s = eta.min(1e9) as u64,
                "progress"
            );
        }
    }

    fn buffered(&self) -> (usize, usize) {
        let in_flight = self
            .decoding
            .as_ref()
            .map_or((0, 0), |d| (d.in_flight_bytes, d.in_flight_rows));
        self.parts.iter().fold(in_flight, |(b, r), (_, _, p)| {
            (b + p.buffered_bytes(), r + p.buffered_rows())
        })
    }

    fn any_range(&self) -> bool {
        self.parts.iter().any(|(_, _, p)| p.has_range())
    }

    fn on_message(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        mode: Mode,
    ) -> Result<()> {
        let topic = msg.topic();
        let partition = msg.partition();
        let offset = msg.offset();
        let Some(buf) = self.parts.get_mut(topic, partition) else {
            return Ok(()); // not ours (any more)
        };
        if offset < buf.next && buf.from.is_some() {
            // Already kept (librdkafka drops what was fetched before a seek, so this is not
            // expected) — unless the offset was recorded as holding no record.
            if buf
                .not_records
                .iter()
                .any(|&(a, b)| a <= offset && offset < b)
            {
                let at = buf.from.unwrap_or(offset);
                tracing::error!(topic, partition, offset, "offsets not all accounted for: a record arrived at an offset recorded as not a record; dropping the partition's buffers and re-reading it");
                self.metrics.unaccounted.fetch_add(1, Ordering::Relaxed);
                return self.reposition(consumer, &[(topic.to_string(), partition, at)]);
            }
            return Ok(());
        }
        if mode.bounded() {
            if !buf.target_refined {
                buf.target_refined = true;
                // The watermark cached from the fetch response is exact; ListOffsets may lag.
                if let Some((_, high)) = source::cached_watermarks(consumer, topic, partition) {
                    buf.target = Some(buf.target.unwrap_or(0).max(high));
                }
            }
            if let Some(t) = buf.target.filter(|&t| offset >= t) {
                // Past the target: not kept, and the range must not cover it. Offsets between
                // the last record kept and the target hold no record (this one came next).
                if buf.from.is_some() && !buf.done {
                    buf.skip_to(t);
                }
                buf.done = true;
                return Ok(());
            }
            if buf.done {
                return Ok(());
            }
        }
        match buf.from {
            None => {
                buf.from = Some(offset);
                buf.next = offset;
            }
            Some(_) => buf.skip_to(offset),
        }
        let ts = msg.timestamp().to_millis();
        buf.raw.push(offset, ts, msg.key(), msg.payload());
        buf.polled += 1;
        buf.next = offset + 1;
        if mode.bounded() && matches!(buf.target, Some(t) if buf.next >= t) {
            buf.done = true;
        }
        if buf.raw.len() >= CHUNK_RECORDS || buf.raw.bytes() >= CHUNK_BYTES {
            self.send_chunk(topic, partition)?;
        }
        Ok(())
    }

    /// `--once`: a partition whose last fetch found nothing past our position is done. This
    /// does not rely on the EOF event, which some brokers never trigger for a consumer that
    /// starts exactly at the end, nor on ListOffsets, which some brokers under-report: a fetch
    /// that had records past `next` would have delivered them.
    fn mark_fetched_ends(&mut self, consumer: &BaseConsumer<LoaderContext>) {
        for (topic, partition, buf) in self.parts.iter_mut() {
            if buf.done {
                continue;
            }
            if let Some((low, high)) = source::cached_watermarks(consumer, topic, partition) {
                let position = if buf.from.is_some() { buf.next } else { low };
                if high <= position {
                    buf.pin_at(high);
                    buf.done = true;
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
                // Nothing consumed yet: the partition's end is where the next run starts. A
                // range never grows to the position: records may have been read past the
                // target and not kept, and a transaction marker past the last record is
                // recorded by the entry that loads the next record.
                buf.pin_at(end);
                buf.done = true;
            }
        }
        // A partition with nothing consumed and no numeric start reached its end too: at EOF
        // its position is the high watermark of the fetch that said so.
        for (topic, p, buf) in self.parts.iter_mut() {
            if p == partition && buf.from.is_none() {
                if let Some((_, high)) = source::cached_watermarks(consumer, topic, p) {
                    buf.pin_at(high);
                }
                buf.done = true;
            }
        }
        Ok(())
    }

    fn on_kafka_error(&mut self, e: KafkaError) -> Result<()> {
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) {
            return Err(LoadError::Kafka {
                context: "the committed end of a partition is no longer in Kafka (retention gap); \
                          those offsets cannot be loaded"
                    .into(),
                source: e,
            });
        }
        tracing::warn!(error = %e, "kafka error (librdkafka retries)");
        Ok(())
    }

    fn on_assignment(&mut self, event: Assignment) -> Result<()> {
        match event {
            Assignment::Assigned(list) => {
                for ((t, p), o) in list {
                    self.parts.insert(&t, p, PartBuf::new(o));
                }
            }
            Assignment::Revoked(list) if list.is_empty() => self.parts.clear(),
            Assignment::Revoked(list) => {
                for (t, p) in list {
                    self.parts.remove(&t, p);
                    self.metrics.forget_partition(&t, p);
                }
            }
            Assignment::Failed(reason) => {
                return Err(LoadError::Manifest(ManifestError::Corrupt {
                    path: self.table.manifest.path("_sluice").to_string(),
                    message: format!("cannot position assigned partitions: {reason}"),
                }))
            }
        }
        Ok(())
    }

    /// Hands a partition's raw chunk to the decode thread (waiting while its queue is full).
    fn send_chunk(&mut self, topic: &str, partition: i32) -> Result<()> {
        self.take_decoded(false)?;
        let Some(buf) = self.parts.get_mut(topic, partition) else {
            return Ok(());
        };
        let Some(decoding) = self.decoding.as_mut() else {
            return Err(decode_thread_gone());
        };
        if buf.raw.is_empty() {
            return Ok(());
        }
        let raw = std::mem::replace(&mut buf.raw, decoding.spare.pop().unwrap_or_default());
        self.metrics
            .events_consumed
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        self.metrics
            .bytes_consumed
            .fetch_add(raw.bytes() as u64, Ordering::Relaxed);
        decoding.in_flight += 1;
        decoding.in_flight_bytes += raw.bytes();
        decoding.in_flight_rows += raw.len();
        let job = DecodeJob {
            topic: topic.to_string(),
            partition,
            generation: buf.generation,
            bytes: raw.bytes(),
            rows: raw.len(),
            raw,
            decoded: None,
        };
        decoding.jobs.send(job).map_err(|_| decode_thread_gone())
    }

    /// Takes decoded chunks into their partitions' buffers: those ready, or with `wait`, every
    /// chunk in flight.
    fn take_decoded(&mut self, wait: bool) -> Result<()> {
        loop {
            let Some(decoding) = self.decoding.as_mut() else {
                return Ok(());
            };
            if decoding.in_flight == 0 {
                return Ok(());
            }
            let job = if wait {
                decoding.done.recv().map_err(|_| decode_thread_gone())?
            } else {
                match decoding.done.try_recv() {
                    Ok(job) => job,
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        return Err(decode_thread_gone())
                    }
                }
            };
            let DecodeJob {
                topic,
                partition,
                generation,
                raw,
                bytes,
                rows,
                decoded,
            } = job;
            decoding.in_flight -= 1;
            decoding.in_flight_bytes -= bytes;
            decoding.in_flight_rows -= rows;
            decoding.spare.push(raw);
            let Some(chunk) = decoded else { continue };
            let Some(buf) = self.parts.get_mut(&topic, partition) else {
                continue; // revoked meanwhile
            };
            if buf.generation != generation {
                continue; // dropped or re-positioned meanwhile
            }
            if let (BadRecordPolicy::Fail, Some(d)) = (self.job.bad_records, chunk.dead.first()) {
                return Err(LoadError::BadRecord {
                    topic,
                    partition,
                    offset: d.offset,
                    reason: d.error.clone(),
                });
            }
            let dead = buf.buffer.push(chunk);
            buf.dead.extend(dead);
        }
    }

    /// Writes and publishes everything buffered.
    fn commit(&mut self, consumer: &BaseConsumer<LoaderContext>) -> Result<()> {
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

        // Fence early: do not upload files for partitions another writer has moved past, nor
        // for ranges whose records the buffers do not all hold.
        let ranges: Vec<OffsetRange> = keys
            .iter()
            .filter_map(|(t, p)| self.parts.get(t, *p)?.range(t, *p))
            .collect();
        let (kind, removed) = match (&self.plan, self.mode) {
            (Some(plan), Mode::Backfill) if plan.replace => {
                // Every file of the range goes at once: each re-derived range must be whole.
                for want in &plan.ranges {
                    let got = ranges
                        .iter()
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
                (EntryKind::Replace, plan.removed.clone())
            }
            (Some(_), Mode::Backfill) => (EntryKind::Backfill, Vec::new()),
            _ => (EntryKind::Append, Vec::new()),
        };
        let mut refusals = {
            let mut s = lock(&self.table.state);
            self.rt.block_on(self.table.manifest.refresh(&mut s))?;
            s.check_ranges(kind, &ranges, &removed)
        };
        refusals.extend(ranges.iter().filter_map(|r| {
            let buf = self.parts.get(&r.topic, r.partition)?;
            // What the files will hold: each window's rows.
            let rows = buf.buffer.windows().map(|(_, w)| w.rows).sum();
            r.unaccounted(rows, buf.dead.len() as u64)
                .map(Refusal::Unaccounted)
        }));
        let dropped = self.repositions(refusals)?;
        self.reposition(consumer, &dropped)?;
        let ranges: Vec<OffsetRange> = ranges
            .into_iter()
            .filter(|r| {
                !dropped
                    .iter()
                    .any(|(t, p, _)| *t == r.topic && *p == r.partition)
            })
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }

        // Write the files: names that cannot collide, so a retry or a racing writer never
        // overwrites anything.
        let mut files: Vec<DataFile> = Vec::new();
        let mut dead_files: Vec<DeadLetterFile> = Vec::new();
        let mut dead_uploads: Vec<(String, Vec<u8>)> = Vec::new();
        let window_ms = self.job.window.millis();
        let mut planned: Vec<(&PartitionBuffer, &WindowRows)> = Vec::new();
        for r in &ranges {
            let Some(buf) = self.parts.get(&r.topic, r.partition) else {
                continue;
            };
            for (start, w) in buf.buffer.windows() {
                let rel = format!(
                    "{}/part-{}-{}-{:020}-{}.parquet",
                    self.job.layout.path(start),
                    r.topic,
                    r.partition,
                    w.first_offset,
                    uuid::Uuid::new_v4().simple()
                );
                files.push(DataFile {
                    path: rel,
                    bytes: 0,
                    rows: w.rows,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    first_offset: w.first_offset,
                    next_offset: w.next_offset,
                    window_start_ms: start,
                    window_end_ms: start + window_ms,
                    min_event_ms: w.min_event_ms,
                    max_event_ms: w.max_event_ms,
                    schema_fingerprint: self.job.schema.fingerprint.clone(),
                });
                planned.push((&buf.buffer, w));
            }
            if !buf.dead.is_empty() {
                let rel = format!(
                    "{}/{}-{}/{:020}-{}.parquet",
                    crate::manifest::DEAD_LETTER_DIR,
                    r.topic,
                    r.partition,
                    buf.dead[0].offset,
                    uuid::Uuid::new_v4().simple()
                );
                let body =
                    writer::encode_dead_letters(&r.topic, r.partition, &buf.dead, &self.props)
                        .map_err(|source| LoadError::Encode {
                            path: rel.clone(),
                            source,
                        })?;
                dead_files.push(DeadLetterFile {
                    path: rel.clone(),
                    bytes: body.len() as u64,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    offsets: buf.dead.iter().map(|d| d.offset).collect(),
                });
                dead_uploads.push((rel, body));
            }
        }
        let sizes = self.write_files(&files, &planned)?;
        for (f, size) in files.iter_mut().zip(sizes) {
            f.bytes = size;
        }
        let upload_bytes: u64 = files.iter().map(|f| f.bytes).sum::<u64>()
            + dead_files.iter().map(|f| f.bytes).sum::<u64>();
        self.upload(dead_uploads)?;
        crate::failpoint::hit("after-upload");

        // Publish: one conditional put; on a lost race re-read, re-fence and retry.
        let mut entry = Entry {
            format: crate::manifest::FORMAT_VERSION,
            seq: 0,
            kind,
            commit_id: uuid::Uuid::new_v4().to_string(),
            writer: self.writer_id.clone(),
            committed_at_ms: chrono::Utc::now().timestamp_millis(),
            ranges,
            files,
            dead_letters: dead_files,
            removed,
        };
        let mut attempt = 0u32;
        let mut orphaned: Vec<String> = Vec::new();
        let committed = loop {
            let mut s = lock(&self.table.state);
            let outcome = self.rt.block_on(async {
                let applied = self.table.manifest.refresh(&mut s).await?;
                // An earlier attempt of ours landed although its answer was lost.
                if let Some((seq, _)) = applied.iter().find(|(_, id)| *id == entry.commit_id) {
                    entry.seq = *seq;
                    return Ok(None);
                }
                let refusals = s.check(&entry);
                if !refusals.is_empty() {
                    return Ok::<_, ManifestError>(Some(refusals));
                }
                self.table.manifest.try_commit(&mut s, &mut entry).await?;
                Ok(None)
            });
            drop(s);
            match outcome {
                Ok(None) => break true,
                Ok(Some(refusals)) => {
                    let dropped = self.repositions(refusals)?;
                    // Another writer committed some partitions first, or a range does not add
                    // up: drop those partitions from the entry.
                    for (topic, partition, _) in &dropped {
                        let gone = |t: &str, p: i32| t == topic && p == *partition;
                        orphaned.extend(
                            entry
                                .files
                                .iter()
                                .filter(|x| gone(&x.topic, x.partition))
                                .map(|x| x.path.clone()),
                        );
                        orphaned.extend(
                            entry
                                .dead_letters
                                .iter()
                                .filter(|x| gone(&x.topic, x.partition))
                                .map(|x| x.path.clone()),
                        );
                        entry.files.retain(|x| !gone(&x.topic, x.partition));
                        entry.dead_letters.retain(|x| !gone(&x.topic, x.partition));
                        entry.ranges.retain(|x| !gone(&x.topic, x.partition));
                    }
                    self.reposition(consumer, &dropped)?;
                    if entry.ranges.is_empty() {
                        break false;
                    }
                }
                Err(ManifestError::Conflict { seq }) => {
                    self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(seq, "lost the race for a manifest entry; re-reading");
                }
                Err(ManifestError::Store { path, source }) if attempt + 1 < STORE_ATTEMPTS => {
                    attempt += 1;
                    let backoff = Duration::from_millis(100 * (1 << attempt.min(6)));
                    tracing::warn!(%path, error = %source, attempt, "manifest write failed; retrying");
                    std::thread::sleep(backoff);
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.delete_best_effort(orphaned);
        if !committed {
            return Ok(());
        }

        // Committed: the buffers are loaded.
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
        self.stats.rows += rows;
        self.stats.dead_letters += dead;
        self.stats.files += (entry.files.len() + entry.dead_letters.len()) as u64;
        self.stats.bytes += upload_bytes;
        self.stats.commits += 1;
        let m = &self.metrics;
        m.rows_loaded.fetch_add(rows, Ordering::Relaxed);
        m.dead_letters.fetch_add(dead, Ordering::Relaxed);
        m.files.fetch_add(
            (entry.files.len() + entry.dead_letters.len()) as u64,
            Ordering::Relaxed,
        );
        m.file_bytes.fetch_add(upload_bytes, Ordering::Relaxed);
        m.commits.fetch_add(1, Ordering::Relaxed);
        m.observe_commit(started.elapsed());
        for r in &entry.ranges {
            let high = source::cached_watermarks(consumer, &r.topic, r.partition).map(|w| w.1);
            m.set_partition(
                &r.topic,
                r.partition,
                r.to,
                high.map(|h| (h - r.to).max(0)).unwrap_or(0),
            );
        }
        tracing::info!(
            seq = entry.seq,
            rows,
            dead_letters = dead,
            files = entry.files.len(),
            bytes = upload_bytes,
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        crate::failpoint::hit("before-group-commit");
        source::commit_group_offsets(consumer, &group_offsets);
        Ok(())
    }

    /// Where to re-position the partitions `refusals` drop: a fenced append at the committed
    /// end; a range that does not add up where it starts (its buffers are dropped and it is
    /// read again). A backfill or replace that no longer fits is an error.
    fn repositions(&mut self, refusals: Vec<Refusal>) -> Result<Vec<(String, i32, i64)>> {
        let mut out: Vec<(String, i32, i64)> = Vec::new();
        for r in refusals {
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
                    let at = u.from;
                    tracing::error!(
                        topic = %u.topic,
                        partition = u.partition,
                        from = u.from,
                        to = u.to,
                        records = ?u.records,
                        rows = u.rows,
                        dead_letters = u.dead_letters,
                        not_records = u.not_records,
                        reposition = at,
                        "refusing to publish a range whose offsets are not all accounted for; dropping its buffers and re-reading it (a bug: please report)"
                    );
                    self.metrics.unaccounted.fetch_add(1, Ordering::Relaxed);
                    // Fenced too: the committed end is where to read again.
                    if !out
                        .iter()
                        .any(|(t, p, _)| *t == u.topic && *p == u.partition)
                    {
                        out.push((u.topic, u.partition, at));
                    }
                }
                other => {
                    return Err(LoadError::Refused {
                        message: other.to_string(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Drops the buffers of partitions and positions them at the given offsets.
    fn reposition(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        list: &[(String, i32, i64)],
    ) -> Result<()> {
        for (topic, partition, at) in list {
            let (topic, partition, at) = (topic.as_str(), *partition, *at);
            let Some(buf) = self.parts.get_mut(topic, partition) else {
                continue;
            };
            buf.reset_to(at);
            buf.done = false;
            // A scheduled run chases the end again; a backfill keeps its planned end.
            if self.mode != Mode::Backfill {
                buf.target_refined = false;
            }
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

    /// Encodes each window's file on every core and uploads each body as soon as it is
    /// encoded, so at most a few encoded files are held at once; returns each file's size.
    fn write_files(
        &self,
        files: &[DataFile],
        planned: &[(&PartitionBuffer, &WindowRows)],
    ) -> Result<Vec<u64>> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(planned.len());
        // Largest first, handed out one at a time: cores finish together.
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(planned[i].1.rows));
        let next = AtomicUsize::new(0);
        let sizes: Mutex<Vec<Option<u64>>> = Mutex::new(vec![None; planned.len()]);
        let (schema, props) = (&self.job.schema.table, &self.props);
        std::thread::scope(|scope| {
            let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Result<Vec<u8>>)>(threads * 2);
            for _ in 0..threads {
                let (tx, order, next) = (tx.clone(), &order, &next);
                let encoder = std::thread::Builder::new().name("sluice-encode".into());
                let spawned = encoder.spawn_scoped(scope, move || loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    let (buf, w) = planned[i];
                    let path = &files[i].path;
                    let body = buf
                        .window_batches(w)
                        .map_err(|source| LoadError::Arrow {
                            context: format!("gathering the rows of {path}"),
                            source,
                        })
                        .and_then(|batches| {
                            writer::encode(schema, &batches, props).map_err(|source| {
                                LoadError::Encode {
                                    path: path.clone(),
                                    source,
                                }
                            })
                        });
                    // The receiver is gone after an error: stop.
                    if tx.blocking_send((i, body)).is_err() {
                        break;
                    }
                });
                spawned.map_err(LoadError::Runtime)?;
            }
            drop(tx);
            let bodies = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (Ok::<_, LoadError>(x), rx))
            });
            self.rt
                .block_on(bodies.try_for_each_concurrent(UPLOADS, |(i, body)| {
                    let sizes = &sizes;
                    async move {
                        let body = body?;
                        let size = body.len() as u64;
                        self.put_new(&files[i].path, body).await?;
                        if let Ok(mut s) = sizes.lock() {
                            s[i] = Some(size);
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
                        f.path
                    )))
                })
            })
            .collect()
    }

    /// Puts a new object under a name no one else uses, retrying transient failures.
    async fn put_new(&self, rel: &str, body: Vec<u8>) -> Result<()> {
        let manifest = &self.table.manifest;
        let path = manifest.path(rel);
        let payload = PutPayload::from(bytes::Bytes::from(body));
        let mut attempt = 0u32;
        loop {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match manifest
                .store()
                .put_opts(&path, payload.clone(), opts)
                .await
            {
                Ok(_) => return Ok(()),
                // A retried put whose first attempt landed: the name is ours alone.
                Err(object_store::Error::AlreadyExists { .. }) if attempt > 0 => return Ok(()),
                Err(e) if attempt + 1 < STORE_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(path = %path, error = %e, attempt, "upload failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * (1 << attempt.min(6)))).await;
                }
                Err(source) => {
                    return Err(LoadError::Store {
                        path: path.to_string(),
                        source,
                    })
                }
            }
        }
    }

    fn upload(&self, uploads: Vec<(String, Vec<u8>)>) -> Result<()> {
        let results: Vec<Result<()>> = self.rt.block_on(
            futures::stream::iter(
                uploads
                    .into_iter()
                    .map(|(rel, body)| async move { self.put_new(&rel, body).await }),
            )
            .buffer_unordered(UPLOADS)
            .collect(),
        );
        results.into_iter().collect()
    }

    fn delete_best_effort(&self, rels: Vec<String>) {
        if rels.is_empty() {
            return;
        }
        let manifest = &self.table.manifest;
        self.rt.block_on(async {
            for rel in rels {
                if let Err(e) = manifest.store().delete(&manifest.path(&rel)).await {
                    tracing::debug!(path = %rel, error = %e, "could not delete an uncommitted file (gc will)");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loader on an in-memory table with its decode thread's channels in the test's hands.
    fn loader() -> (Loader, Receiver<DecodeJob>, Sender<DecodeJob>) {
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/payment.avsc");
        let text = format!(
            "[source]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n\
             [schema]\nfile = \"{schema}\"\n[event_time]\nfield = \"created_at\"\n\
             [storage]\nurl = \"memory://\"\n"
        );
        let job = Job::parse(std::path::Path::new("/job.toml"), &text, &|_| None).unwrap();
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        let mut l = Loader::new(job, rt, Arc::new(AtomicBool::new(false))).unwrap();
        let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        l.decoding = Some(Decoding::new(jobs, done));
        (l, jobs_rx, done_tx)
    }

    fn fill(l: &mut Loader, from: i64, n: i64) {
        let buf = l.parts.get_mut("t", 0).unwrap();
        crate::generate::generate(
            &crate::generate::GenSpec {
                count: n as u64,
                first_id: from as u64,
                ..Default::default()
            },
            |r| {
                let o = buf.next;
                buf.raw.push(o, None, None, Some(&r.payload));
                buf.next = o + 1;
            },
        );
    }

    /// Decodes what the loader sent, as the decode thread would.
    fn decode_sent(l: &Loader, jobs: &Receiver<DecodeJob>, done: &Sender<DecodeJob>) {
        let decoder = ChunkDecoder::new(l.job.schema.clone(), l.job.event_time.clone());
        while let Ok(mut job) = jobs.try_recv() {
            let decoded = decoder.decode(&job.raw, &job.topic, job.partition);
            job.decoded = Some(DecodedChunk::new(decoded, l.job.window));
            job.raw.clear();
            done.send(job).unwrap();
        }
    }

    #[test]
    fn a_range_ends_at_the_last_record_kept_and_records_what_was_skipped() {
        let mut b = PartBuf::new(Offset::Offset(100));
        let keep = |b: &mut PartBuf, o: i64| {
            b.skip_to(o);
            b.polled += 1;
            b.next = o + 1;
        };
        keep(&mut b, 100);
        keep(&mut b, 101);
        // 102 and 103 hold no record (a transaction marker, a compacted offset).
        keep(&mut b, 104);
        keep(&mut b, 105);
        // A record past a scheduled run's target of 110 proves 106..110 hold none.
        b.skip_to(110);
        b.skip_to(108); // never backwards
        let r = b.range("t", 0).unwrap();
        assert_eq!((r.from, r.to, r.records), (100, 110, Some(4)));
        assert_eq!(r.not_records, vec![(102, 104), (106, 110)]);
        assert_eq!(r.unaccounted(3, 1), None);
        assert!(
            r.unaccounted(3, 0).is_some(),
            "a record lost between poll and file"
        );
        b.reset_to(110);
        let r = b.range("t", 0).unwrap();
        assert_eq!(
            (r.from, r.to, r.records, r.not_records.len()),
            (110, 110, Some(0), 0)
        );
        // Nothing known yet (a logical start): no range.
        assert!(PartBuf::new(Offset::End).range("t", 0).is_none());
    }

    #[test]
    fn a_chunk_decoded_across_a_repositioning_is_dropped() {
        let (mut l, jobs, done) = loader();
        l.parts.insert("t", 0, PartBuf::new(Offset::Offset(0)));
        fill(&mut l, 0, 100);
        l.send_chunk("t", 0).unwrap();
        assert_eq!(l.buffered().1, 100, "in flight counts as buffered");
        // Fenced meanwhile: re-positioned at 40, where another writer's range ended.
        l.parts.get_mut("t", 0).unwrap().reset_to(40);
        decode_sent(&l, &jobs, &done);
        l.take_decoded(true).unwrap();
        let buf = l.parts.get("t", 0).unwrap();
        assert_eq!(buf.buffer.rows(), 0, "rows read before the re-positioning");
        assert_eq!((buf.from, buf.next), (Some(40), 40));
        assert_eq!(l.buffered(), (0, 0));

        // Read again from 40: these are kept.
        fill(&mut l, 40, 60);
        l.send_chunk("t", 0).unwrap();
        decode_sent(&l, &jobs, &done);
        l.take_decoded(true).unwrap();
        let buf = l.parts.get("t", 0).unwrap();
        assert_eq!(buf.buffer.rows(), 60);
        let first = buf.buffer.windows().map(|(_, w)| w.first_offset).min();
        assert_eq!(first, Some(40));
    }

    #[test]
    fn a_chunk_of_a_revoked_then_reassigned_partition_is_dropped() {
        let (mut l, jobs, done) = loader();
        l.parts.insert("t", 0, PartBuf::new(Offset::Offset(0)));
        fill(&mut l, 0, 50);
        l.send_chunk("t", 0).unwrap();
        l.on_assignment(Assignment::Revoked(vec![("t".into(), 0)]))
            .unwrap();
        l.on_assignment(Assignment::Assigned(vec![(
            ("t".into(), 0),
            Offset::Offset(0),
        )]))
        .unwrap();
        decode_sent(&l, &jobs, &done);
        l.take_decoded(true).unwrap();
        assert_eq!(l.parts.get("t", 0).unwrap().buffer.rows(), 0);
        assert_eq!(l.decoding.as_ref().unwrap().in_flight, 0);
    }
}
