//! The decode worker: full raw chunks go to a thread of their own while the polling thread
//! reads on; decoded chunks come back and join their partition's buffer.
//!
//! Each chunk carries its partition's generation: a chunk of a partition revoked, re-assigned
//! or re-positioned meanwhile is dropped when it comes back. A commit first waits for every
//! chunk in flight.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;

use crate::config::{BadRecordPolicy, LateRecords};
use crate::error::{LoadError, Result};
use crate::load::metrics::Metrics;
use crate::load::partition::{PartState, Partitions};
use crate::record::buffer::DecodedChunk;
use crate::record::decode::{ChunkDecoder, DeadRecord, RawChunk};
use crate::record::window::WindowSize;

/// Full chunks queued for the decode thread before polling waits for it.
pub(crate) const DECODE_QUEUE: usize = 2;

/// A full chunk on its way to the decode thread, and back.
pub(crate) struct DecodeJob {
    topic: String,
    partition: i32,
    generation: u64,
    raw: RawChunk,
    /// The raw chunk's size when sent (it comes back cleared).
    bytes: usize,
    rows: usize,
    decoded: Option<Result<DecodedChunk, LoadError>>,
    /// Rows of closed windows taken out (see [`LateRule`]).
    late: Vec<DeadRecord>,
}

/// What the decode thread does with rows of closed windows.
#[derive(Clone)]
pub(crate) struct LateRule {
    /// Windows are closed through here (ms; `i64::MIN`: none), as of the last commit.
    pub(crate) closed_through: Arc<AtomicI64>,
    pub(crate) policy: LateRecords,
}

impl DecodeJob {
    /// Decodes the job's chunk (what the decode thread does with it). Under `dead_letter` or
    /// `fail`, rows of closed windows are taken out as late records.
    pub(crate) fn decode(&mut self, decoder: &ChunkDecoder, window: WindowSize, late: &LateRule) {
        let mut decoded = decoder.decode(&self.raw, &self.topic, self.partition);
        if let Some(reason) = decoded.interrupted.take() {
            self.decoded = Some(Err(LoadError::SchemaRegistry {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: self.raw.first_offset().unwrap_or_default(),
                reason,
            }));
            self.raw.clear();
            return;
        }
        let closed = late.closed_through.load(Ordering::Relaxed);
        if late.policy != LateRecords::Load && closed != i64::MIN {
            match decoded.take_late(&self.raw, closed) {
                Ok(l) => self.late = l,
                Err(source) => {
                    self.decoded = Some(Err(self.arrow_error(source)));
                    self.raw.clear();
                    return;
                }
            }
        }
        self.decoded = Some(DecodedChunk::new(decoded, window).map_err(|e| self.arrow_error(e)));
        self.raw.clear();
    }

    fn arrow_error(&self, source: arrow::error::ArrowError) -> LoadError {
        LoadError::Arrow {
            context: format!(
                "grouping decoded rows of {}/{} by window",
                self.topic, self.partition
            ),
            source,
        }
    }
}

fn gone() -> LoadError {
    LoadError::Runtime(std::io::Error::other("the decode thread stopped"))
}

/// The body of the decode thread: until the queue closes.
pub(crate) fn decode_thread(
    decoder: ChunkDecoder,
    window: WindowSize,
    late: LateRule,
    jobs: Receiver<DecodeJob>,
    done: Sender<DecodeJob>,
) {
    while let Ok(mut job) = jobs.recv() {
        job.decode(&decoder, window, &late);
        if done.send(job).is_err() {
            break;
        }
    }
}

/// The polling thread's end of the decode thread.
pub(crate) struct Decoding {
    jobs: SyncSender<DecodeJob>,
    done: Receiver<DecodeJob>,
    pub(crate) in_flight: usize,
    pub(crate) in_flight_bytes: usize,
    pub(crate) in_flight_rows: usize,
    /// Cleared arenas back from the decode thread, for the next chunks.
    spare: Vec<RawChunk>,
}

impl Decoding {
    pub(crate) fn new(jobs: SyncSender<DecodeJob>, done: Receiver<DecodeJob>) -> Self {
        Decoding {
            jobs,
            done,
            in_flight: 0,
            in_flight_bytes: 0,
            in_flight_rows: 0,
            spare: Vec::new(),
        }
    }

    /// Hands a partition's raw chunk to the decode thread (waiting while its queue is full).
    pub(crate) fn send(
        &mut self,
        topic: &str,
        partition: i32,
        part: &mut PartState,
        metrics: &Metrics,
    ) -> Result<()> {
        if part.raw.is_empty() {
            return Ok(());
        }
        let raw = std::mem::replace(&mut part.raw, self.spare.pop().unwrap_or_default());
        metrics
            .events_consumed
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        metrics
            .bytes_consumed
            .fetch_add(raw.bytes() as u64, Ordering::Relaxed);
        self.in_flight += 1;
        self.in_flight_bytes += raw.bytes();
        self.in_flight_rows += raw.len();
        let job = DecodeJob {
            topic: topic.to_string(),
            partition,
            generation: part.generation,
            bytes: raw.bytes(),
            rows: raw.len(),
            raw,
            decoded: None,
            late: Vec::new(),
        };
        self.jobs.send(job).map_err(|_| gone())
    }

    /// Takes decoded chunks into their partitions' buffers: those ready, or with `wait`, every
    /// chunk in flight. Chunks of partitions no longer owned, or re-positioned, are dropped.
    pub(crate) fn take(
        &mut self,
        parts: &mut Partitions,
        wait: bool,
        policy: BadRecordPolicy,
        late_policy: LateRecords,
    ) -> Result<()> {
        while self.in_flight > 0 {
            let job = if wait {
                self.done.recv().map_err(|_| gone())?
            } else {
                match self.done.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => return Err(gone()),
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
                late,
            } = job;
            self.in_flight -= 1;
            self.in_flight_bytes -= bytes;
            self.in_flight_rows -= rows;
            self.spare.push(raw);
            let Some(chunk) = decoded else { continue };
            let mut chunk = chunk?;
            let Some(part) = parts.get_mut(&topic, partition) else {
                continue; // revoked meanwhile
            };
            if part.generation != generation {
                continue; // dropped or re-positioned meanwhile
            }
            if let Some(d) = late.first() {
                if late_policy == LateRecords::Fail {
                    return Err(LoadError::LateRecord {
                        topic,
                        partition,
                        offset: d.offset,
                        reason: d.error.clone(),
                    });
                }
                chunk.dead.extend(late);
                chunk.dead.sort_by_key(|d| d.offset);
            }
            if let (BadRecordPolicy::Fail, Some(d)) = (policy, chunk.dead.first()) {
                return Err(LoadError::BadRecord {
                    topic,
                    partition,
                    offset: d.offset,
                    reason: d.error.clone(),
                });
            }
            let dead = part.buffer.push(chunk);
            part.dead.extend(dead);
        }
        Ok(())
    }
}
