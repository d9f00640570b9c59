//! The loader loop: consume, decode in chunks, buffer by event-time window, and commit.
//!
//! ```text
//! poll ──► RawChunk (per partition) ──decode──► window buffers ──commit──► Parquet files
//!                                                                   └────► one manifest entry
//! ```
//!
//! A commit writes every buffered window as a Parquet file and every dead record to a
//! dead-letter file, then publishes one manifest entry naming them with each partition's offset
//! range `[from, next)`. A range is accepted only if it starts where the partition's committed
//! range ends (fencing); otherwise that partition's buffers are dropped and it is re-positioned
//! at the committed end. Kafka group offsets are written after the manifest, for lag tools only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::file::properties::WriterProperties;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use crate::config::{BadRecordPolicy, Job, StartOffset};
use crate::decode::{ChunkDecoder, DeadRecord, RawChunk};
use crate::error::{LoadError, ManifestError, Result};
use crate::manifest::{
    DataFile, DeadLetterFile, Entry, EntryKind, Manifest, OffsetRange, Refusal, TableState,
};
use crate::metrics::Metrics;
use crate::schema::OFFSET_COL;
use crate::source::{self, Assignment, LoaderContext, TopicPartition};
use crate::writer;

/// Records decoded together.
const CHUNK_RECORDS: usize = 8192;
/// Messages between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const STORE_ATTEMPTS: u32 = 8;

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

struct WindowBuf {
    batches: Vec<RecordBatch>,
    rows: u64,
    bytes: usize,
    first_offset: i64,
    next_offset: i64,
    min_event_ms: i64,
    max_event_ms: i64,
}

/// An owned partition's uncommitted state.
struct PartBuf {
    /// Start of the uncommitted range; `None` until known (nothing committed, started at a
    /// logical offset).
    from: Option<i64>,
    /// One past the last offset consumed.
    next: i64,
    raw: RawChunk,
    windows: BTreeMap<i64, WindowBuf>,
    dead: Vec<DeadRecord>,
    decoded_bytes: usize,
    decoded_rows: usize,
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
            raw: RawChunk::default(),
            windows: BTreeMap::new(),
            dead: Vec::new(),
            decoded_bytes: 0,
            decoded_rows: 0,
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
        self.raw.bytes() + self.decoded_bytes
    }

    fn buffered_rows(&self) -> usize {
        self.raw.len() + self.decoded_rows
    }

    fn reset_to(&mut self, offset: i64) {
        self.pin = false;
        self.from = Some(offset);
        self.next = offset;
        self.raw.clear();
        self.windows.clear();
        self.dead.clear();
        self.decoded_bytes = 0;
        self.decoded_rows = 0;
    }
}

/// The rows of one decoded batch that fall in one window.
pub struct WindowPart {
    pub start: i64,
    pub batch: RecordBatch,
    pub first_offset: i64,
    pub next_offset: i64,
    pub min_event_ms: i64,
    pub max_event_ms: i64,
}

/// Splits a decoded batch (rows in offset order, with `event_ms` per row) by event-time window.
pub fn split_by_window(
    batch: &RecordBatch,
    event_ms: &[i64],
    window: crate::window::WindowSize,
) -> Result<Vec<WindowPart>> {
    let offsets = batch
        .column_by_name(OFFSET_COL)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .map(|a| a.values().clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (start, rows) in crate::window::group_by_window(window, event_ms) {
        let part = if rows.len() == batch.num_rows() {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(rows.clone())).map_err(|source| {
                LoadError::Arrow {
                    context: "splitting a batch by window".into(),
                    source,
                }
            })?
        };
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for &r in &rows {
            let t = event_ms[r as usize];
            lo = lo.min(t);
            hi = hi.max(t);
        }
        out.push(WindowPart {
            start,
            batch: part,
            first_offset: offsets[rows[0] as usize],
            next_offset: offsets[rows[rows.len() - 1] as usize] + 1,
            min_event_ms: lo,
            max_event_ms: hi,
        });
    }
    Ok(out)
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
    decoder: ChunkDecoder,
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
        let decoder = ChunkDecoder::new(job.schema.clone(), job.event_time.clone());
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
            decoder,
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
        let result = self.consume(&consumer, mode);
        // Flush what is buffered (also on SIGINT/SIGTERM); not after an error.
        let result = result.and_then(|_| self.commit(&consumer));
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
            match polled {
                None => {}
                Some(Ok(msg)) => {
                    since_clock += 1;
                    self.on_message(consumer, &msg, mode)?;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => self.on_eof(consumer, p)?,
                Some(Err(e)) => self.on_kafka_error(e)?,
            }
            for event in consumer.context().take_events() {
                self.on_assignment(event)?;
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
        self.parts.iter().fold((0, 0), |(b, r), (_, _, p)| {
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
            return Ok(()); // stale: from before a seek
        }
        if mode.bounded() {
            if !buf.target_refined {
                buf.target_refined = true;
                // The watermark cached from the fetch response is exact; ListOffsets may lag.
                if let Some((_, high)) = source::cached_watermarks(consumer, topic, partition) {
                    buf.target = Some(buf.target.unwrap_or(0).max(high));
                }
            }
            if buf.done || matches!(buf.target, Some(t) if offset >= t) {
                buf.done = true;
                return Ok(());
            }
        }
        if buf.from.is_none() {
            buf.from = Some(offset);
        }
        let ts = msg.timestamp().to_millis();
        buf.raw.push(offset, ts, msg.key(), msg.payload());
        buf.next = offset + 1;
        if mode.bounded() && matches!(buf.target, Some(t) if buf.next >= t) {
            buf.done = true;
        }
        if buf.raw.len() >= CHUNK_RECORDS {
            self.decode_partition(topic.to_string(), partition)?;
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
                buf.pin_at(end);
                // Past the last record there may be transaction markers: the range covers them.
                if end > buf.next {
                    buf.next = end;
                }
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

    /// Decodes a partition's raw chunk into its window buffers.
    fn decode_partition(&mut self, topic: String, partition: i32) -> Result<()> {
        let policy = self.job.bad_records;
        let window = self.job.window;
        let Some(buf) = self.parts.get_mut(&topic, partition) else {
            return Ok(());
        };
        if buf.raw.is_empty() {
            return Ok(());
        }
        let decoded = self.decoder.decode(&buf.raw, &topic, partition);
        self.metrics
            .events_consumed
            .fetch_add(buf.raw.len() as u64, Ordering::Relaxed);
        self.metrics
            .bytes_consumed
            .fetch_add(buf.raw.bytes() as u64, Ordering::Relaxed);
        buf.raw.clear();
        if let (BadRecordPolicy::Fail, Some(d)) = (policy, decoded.dead.first()) {
            return Err(LoadError::BadRecord {
                topic,
                partition,
                offset: d.offset,
                reason: d.error.clone(),
            });
        }
        buf.decoded_rows += decoded.dead.len();
        buf.dead.extend(decoded.dead);
        let Some(batch) = decoded.batch else {
            return Ok(());
        };
        for part in split_by_window(&batch, &decoded.event_ms, window)? {
            let bytes = part.batch.get_array_memory_size();
            let rows = part.batch.num_rows();
            let w = buf.windows.entry(part.start).or_insert_with(|| WindowBuf {
                batches: Vec::new(),
                rows: 0,
                bytes: 0,
                first_offset: part.first_offset,
                next_offset: part.next_offset,
                min_event_ms: part.min_event_ms,
                max_event_ms: part.max_event_ms,
            });
            w.rows += rows as u64;
            w.bytes += bytes;
            w.first_offset = w.first_offset.min(part.first_offset);
            w.next_offset = w.next_offset.max(part.next_offset);
            w.min_event_ms = w.min_event_ms.min(part.min_event_ms);
            w.max_event_ms = w.max_event_ms.max(part.max_event_ms);
            w.batches.push(part.batch);
            buf.decoded_bytes += bytes;
            buf.decoded_rows += rows;
        }
        Ok(())
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
            self.decode_partition(t.clone(), *p)?;
        }
        let started = Instant::now();

        // Fence early: do not upload files for partitions another writer has moved past.
        let ranges: Vec<OffsetRange> = keys
            .iter()
            .filter_map(|(t, p)| {
                let b = self.parts.get(t, *p)?;
                Some(OffsetRange {
                    topic: t.clone(),
                    partition: *p,
                    from: b.from?,
                    to: b.next,
                })
            })
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
        let fenced = {
            let mut s = lock(&self.table.state);
            self.rt.block_on(self.table.manifest.refresh(&mut s))?;
            self.refusals(&s, kind, &ranges, &removed)?
        };
        self.refence(consumer, &fenced)?;
        let ranges: Vec<OffsetRange> = ranges
            .into_iter()
            .filter(|r| {
                !fenced
                    .iter()
                    .any(|f| f.topic == r.topic && f.partition == r.partition)
            })
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }

        // Write the files: names that cannot collide, so a retry or a racing writer never
        // overwrites anything.
        let mut uploads: Vec<(String, Vec<u8>)> = Vec::new();
        let mut files: Vec<DataFile> = Vec::new();
        let mut dead_files: Vec<DeadLetterFile> = Vec::new();
        let window_ms = self.job.window.millis();
        // Encode every window's file, on all cores (each file on one).
        let mut planned: Vec<(String, DataFile, &[RecordBatch])> = Vec::new();
        for r in &ranges {
            let Some(buf) = self.parts.get(&r.topic, r.partition) else {
                continue;
            };
            for (start, w) in &buf.windows {
                let rel = format!(
                    "{}/part-{}-{}-{:020}-{}.parquet",
                    self.job.layout.path(*start),
                    r.topic,
                    r.partition,
                    w.first_offset,
                    uuid::Uuid::new_v4().simple()
                );
                let meta = DataFile {
                    path: rel.clone(),
                    bytes: 0,
                    rows: w.rows,
                    topic: r.topic.clone(),
                    partition: r.partition,
                    first_offset: w.first_offset,
                    next_offset: w.next_offset,
                    window_start_ms: *start,
                    window_end_ms: start + window_ms,
                    min_event_ms: w.min_event_ms,
                    max_event_ms: w.max_event_ms,
                    schema_fingerprint: self.job.schema.fingerprint.clone(),
                };
                planned.push((rel, meta, &w.batches));
            }
        }
        let inputs: Vec<&[RecordBatch]> = planned.iter().map(|p| p.2).collect();
        let bodies = writer::encode_all(&self.job.schema.table, &inputs, &self.props);
        for ((rel, mut meta, _), body) in planned.into_iter().zip(bodies) {
            let body = body.map_err(|source| LoadError::Encode {
                path: rel.clone(),
                source,
            })?;
            meta.bytes = body.len() as u64;
            files.push(meta);
            uploads.push((rel, body));
        }
        for r in &ranges {
            let Some(buf) = self.parts.get(&r.topic, r.partition) else {
                continue;
            };
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
                uploads.push((rel, body));
            }
        }
        let upload_bytes: u64 = uploads.iter().map(|(_, b)| b.len() as u64).sum();
        self.upload(uploads)?;
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
                    let fenced = self.only_fenced(refusals)?;
                    // Another writer committed some partitions first: drop those from the entry.
                    for f in &fenced {
                        let gone = |t: &str, p: i32| t == f.topic && p == f.partition;
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
                    self.refence(consumer, &fenced)?;
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

    /// The refusals of `ranges` on top of `s`: fenced appends are returned (the caller drops
    /// and re-seeks them); a backfill or replace that no longer fits is an error.
    fn refusals(
        &self,
        s: &TableState,
        kind: EntryKind,
        ranges: &[OffsetRange],
        removed: &[String],
    ) -> Result<Vec<crate::error::Fenced>> {
        let probe = Entry {
            format: crate::manifest::FORMAT_VERSION,
            seq: 0,
            kind,
            commit_id: String::new(),
            writer: String::new(),
            committed_at_ms: 0,
            ranges: ranges.to_vec(),
            files: Vec::new(),
            dead_letters: Vec::new(),
            removed: removed.to_vec(),
        };
        self.only_fenced(s.check(&probe))
    }

    fn only_fenced(&self, refusals: Vec<Refusal>) -> Result<Vec<crate::error::Fenced>> {
        let mut fenced = Vec::new();
        for r in refusals {
            match r {
                Refusal::Fenced(f) => fenced.push(f),
                other => {
                    return Err(LoadError::Refused {
                        message: other.to_string(),
                    })
                }
            }
        }
        Ok(fenced)
    }

    /// Drops the buffers of fenced partitions and positions them at the committed end.
    fn refence(
        &mut self,
        consumer: &BaseConsumer<LoaderContext>,
        fenced: &[crate::error::Fenced],
    ) -> Result<()> {
        for f in fenced {
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
            if let Some(buf) = self.parts.get_mut(&f.topic, f.partition) {
                buf.reset_to(end);
                buf.done = false;
                buf.target_refined = false;
                if let Err(source) =
                    consumer.seek(&f.topic, f.partition, Offset::Offset(end), KAFKA_TIMEOUT)
                {
                    // A zombie whose partition was already taken away: let it go (the pending
                    // revoke will confirm). Still owned: consuming on from the old position
                    // would leave a gap, so stop.
                    let owned = consumer.assignment().map(|a| {
                        a.elements()
                            .iter()
                            .any(|e| e.topic() == f.topic && e.partition() == f.partition)
                    });
                    if matches!(owned, Ok(false)) {
                        tracing::warn!(topic = %f.topic, partition = f.partition, "no longer assigned; dropping it");
                        self.parts.remove(&f.topic, f.partition);
                    } else {
                        return Err(LoadError::Kafka {
                            context: format!("seeking {}/{} to {end}", f.topic, f.partition),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn upload(&self, uploads: Vec<(String, Vec<u8>)>) -> Result<()> {
        let manifest = &self.table.manifest;
        let results: Vec<Result<()>> = self.rt.block_on(
            futures::stream::iter(uploads.into_iter().map(|(rel, body)| async move {
                let path = manifest.path(&rel);
                let payload = PutPayload::from(bytes::Bytes::from(body));
                let mut attempt = 0u32;
                loop {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    match manifest.store().put_opts(&path, payload.clone(), opts).await {
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
            }))
            .buffer_unordered(8)
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
