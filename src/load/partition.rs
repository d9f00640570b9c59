//! An owned partition's uncommitted state: where its range starts ([`Start`]), where a bounded
//! run stops ([`Stop`]), the range's accounting and the rows read for it.

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::Offset;

use crate::record::buffer::PartitionBuffer;
use crate::record::decode::{DeadRecord, RawChunk};
use crate::table::entry::OffsetRange;

/// Where a partition's uncommitted range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Started at a logical offset (earliest/latest) and no record read yet: no range.
    Unknown,
    /// Learned without reading a record (a logical start that turned out to be the end): an
    /// empty range is committed here so the next run starts at the same place.
    Pinned(i64),
    /// The range starts here.
    At(i64),
}

/// Where a bounded run stops reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A continuous run: never.
    Never,
    /// At `target` (exclusive). `planned`: a backfill's planned end, kept as it is; otherwise
    /// a listed end, raised to the first fetch's high watermark (ListOffsets may lag).
    Before {
        target: Option<i64>,
        planned: bool,
        refined: bool,
    },
    /// Reached: records past here are not kept.
    Done { target: Option<i64>, planned: bool },
}

impl Stop {
    pub(crate) fn target(self) -> Option<i64> {
        match self {
            Stop::Never => None,
            Stop::Before { target, .. } | Stop::Done { target, .. } => target,
        }
    }

    pub(crate) fn is_done(self) -> bool {
        matches!(self, Stop::Done { .. })
    }

    fn done(self) -> Stop {
        match self {
            Stop::Never => Stop::Never,
            Stop::Before {
                target, planned, ..
            }
            | Stop::Done { target, planned } => Stop::Done { target, planned },
        }
    }

    /// Reading again after a re-positioning: a listed end is refined again.
    fn again(self) -> Stop {
        match self {
            Stop::Never => Stop::Never,
            Stop::Before {
                target, planned, ..
            }
            | Stop::Done { target, planned } => Stop::Before {
                target,
                planned,
                refined: planned,
            },
        }
    }
}

pub(crate) fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An owned partition's uncommitted state.
pub(crate) struct PartState {
    pub(crate) start: Start,
    /// End of the uncommitted range: one past the last record kept (or past the last offset
    /// known to hold no record). Only records kept move it, never a consumer position.
    pub(crate) next: i64,
    /// Records kept in the range: each becomes a row or a dead letter.
    pub(crate) polled: u64,
    /// Offsets in the range the broker skipped between two records it delivered
    /// (transaction markers, compacted offsets), merged, ascending.
    pub(crate) not_records: Vec<(i64, i64)>,
    pub(crate) raw: RawChunk,
    /// Decoded rows by window.
    pub(crate) buffer: PartitionBuffer,
    pub(crate) dead: Vec<DeadRecord>,
    /// Changes whenever the buffers are dropped: decoded chunks of an older generation are
    /// stale.
    pub(crate) generation: u64,
    pub(crate) stop: Stop,
    /// Offsets of this partition committed by this run (for progress).
    pub(crate) loaded: i64,
    /// The Kafka timestamp of the newest record kept by this run.
    pub(crate) newest_ts: Option<i64>,
}

impl PartState {
    pub(crate) fn new(start: Offset, stop: Stop) -> Self {
        let (start, next) = match start {
            Offset::Offset(o) => (Start::At(o), o),
            _ => (Start::Unknown, 0),
        };
        PartState {
            start,
            next,
            polled: 0,
            not_records: Vec::new(),
            raw: RawChunk::default(),
            buffer: PartitionBuffer::default(),
            dead: Vec::new(),
            generation: next_generation(),
            stop,
            loaded: 0,
            newest_ts: None,
        }
    }

    /// Where the range starts, once known.
    pub(crate) fn from(&self) -> Option<i64> {
        match self.start {
            Start::Unknown => None,
            Start::Pinned(o) | Start::At(o) => Some(o),
        }
    }

    pub(crate) fn has_range(&self) -> bool {
        matches!(self.from(), Some(f) if self.next > f)
    }

    pub(crate) fn needs_commit(&self) -> bool {
        self.has_range() || matches!(self.start, Start::Pinned(_))
    }

    /// Learns where a partition that started at a logical offset stands.
    pub(crate) fn pin_at(&mut self, offset: i64) {
        if self.start == Start::Unknown {
            self.start = Start::Pinned(offset);
            self.next = offset;
        }
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.raw.bytes() + self.buffer.bytes()
    }

    pub(crate) fn buffered_rows(&self) -> usize {
        self.raw.len() + self.buffer.rows()
    }

    /// Moves `next` to `offset`, recording the offsets skipped on the way as not records: the
    /// caller knows the broker holds no record there (it delivered a record at or past
    /// `offset` right after the one before `next`).
    pub(crate) fn skip_to(&mut self, offset: i64) {
        if offset <= self.next {
            return;
        }
        match self.not_records.last_mut() {
            Some(last) if last.1 == self.next => last.1 = offset,
            _ => self.not_records.push((self.next, offset)),
        }
        self.next = offset;
    }

    /// Keeps the record at `offset` (its payload is pushed by the caller).
    pub(crate) fn keep(&mut self, offset: i64) {
        match self.start {
            Start::Unknown => {
                self.start = Start::At(offset);
                self.next = offset;
            }
            Start::Pinned(o) => self.start = Start::At(o),
            Start::At(_) => {}
        }
        self.skip_to(offset);
        self.polled += 1;
        self.next = offset + 1;
    }

    /// The consumer's position is `position`: one past the last record or transaction marker
    /// it delivered (librdkafka moves it past markers, and past the aborted records before an
    /// abort marker; a seek resets it). While every record delivered since the range started
    /// was kept (the run has not stopped reading this partition), the offsets from `next` up to
    /// there hold no committed record, and are recorded as not records — so a partition whose
    /// last offsets are a transaction's marker is loaded to its end, not to one short of it.
    /// Never past a bounded run's target.
    pub(crate) fn reach(&mut self, position: i64) {
        if self.from().is_none() || self.stop.is_done() {
            return;
        }
        let to = self.stop.target().map_or(position, |t| position.min(t));
        self.skip_to(to);
    }

    /// A bounded run's target, raised once to `high` (the first fetch's high watermark).
    pub(crate) fn refine_target(&mut self, high: impl FnOnce() -> Option<i64>) {
        if let Stop::Before {
            target,
            planned: false,
            refined: false,
        } = self.stop
        {
            let target = match high() {
                Some(h) => Some(target.unwrap_or(0).max(h)),
                None => target,
            };
            self.stop = Stop::Before {
                target,
                planned: false,
                refined: true,
            };
        }
    }

    /// Records that the run reached its stop for this partition.
    pub(crate) fn finish(&mut self) {
        self.stop = self.stop.done();
    }

    /// The uncommitted range with its accounting, if it has one.
    pub(crate) fn range(&self, topic: &str, partition: i32) -> Option<OffsetRange> {
        Some(OffsetRange {
            records: Some(self.polled),
            not_records: self.not_records.clone(),
            ..OffsetRange::new(topic, partition, self.from()?, self.next)
        })
    }

    /// Seals the uncommitted range for a commit: takes its rows and dead letters and starts a
    /// fresh range where it ends (the generation stays: the fresh range continues the sealed
    /// one, and is dropped with it if the commit is refused). The raw chunk must be empty
    /// (sent to the decode thread and taken back).
    pub(crate) fn seal(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Option<(OffsetRange, PartitionBuffer, Vec<DeadRecord>)> {
        let range = self.range(topic, partition)?;
        debug_assert!(self.raw.is_empty(), "sealed with records not yet decoded");
        let buffer = std::mem::take(&mut self.buffer);
        let dead = std::mem::take(&mut self.dead);
        self.start = Start::At(self.next);
        self.polled = 0;
        self.not_records.clear();
        Some((range, buffer, dead))
    }

    /// Drops the buffers and starts a new range at `offset`, reading on to the same stop.
    pub(crate) fn reset_to(&mut self, offset: i64) {
        self.start = Start::At(offset);
        self.next = offset;
        self.polled = 0;
        self.not_records.clear();
        self.raw.clear();
        self.buffer.clear();
        self.dead.clear();
        self.generation = next_generation();
    }

    /// Re-positioned to read a range again: also un-finishes a bounded run.
    pub(crate) fn read_again_from(&mut self, offset: i64) {
        self.reset_to(offset);
        self.stop = self.stop.again();
    }
}

/// Owned partitions, looked up by `&str` topic without allocating.
#[derive(Default)]
pub(crate) struct Partitions {
    topics: Vec<(String, Vec<Option<PartState>>)>,
}

fn slot(partition: i32) -> Option<usize> {
    usize::try_from(partition).ok()
}

impl Partitions {
    pub(crate) fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartState> {
        let (_, parts) = self.topics.iter_mut().find(|(t, _)| t == topic)?;
        parts.get_mut(slot(partition)?)?.as_mut()
    }

    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<&PartState> {
        let (_, parts) = self.topics.iter().find(|(t, _)| t == topic)?;
        parts.get(slot(partition)?)?.as_ref()
    }

    /// Owns a partition. Kafka partitions are never negative: one that is is not taken.
    pub(crate) fn insert(&mut self, topic: &str, partition: i32, state: PartState) -> bool {
        let Some(p) = slot(partition) else {
            tracing::error!(topic, partition, "a negative partition number: ignored");
            return false;
        };
        let i = match self.topics.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push((topic.to_string(), Vec::new()));
                self.topics.len() - 1
            }
        };
        let parts = &mut self.topics[i].1;
        if parts.len() <= p {
            parts.resize_with(p + 1, || None);
        }
        parts[p] = Some(state);
        true
    }

    pub(crate) fn remove(&mut self, topic: &str, partition: i32) {
        if let Some((_, parts)) = self.topics.iter_mut().find(|(t, _)| t == topic) {
            if let Some(s) = slot(partition).and_then(|p| parts.get_mut(p)) {
                *s = None;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.topics.clear();
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, i32, &mut PartState)> {
        self.topics.iter_mut().flat_map(|(t, parts)| {
            let t: &str = t.as_str();
            parts
                .iter_mut()
                .enumerate()
                .filter_map(move |(p, b)| b.as_mut().map(|b| (t, p as i32, b)))
        })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, i32, &PartState)> {
        self.topics.iter().flat_map(|(t, parts)| {
            parts
                .iter()
                .enumerate()
                .filter_map(move |(p, b)| b.as_ref().map(|b| (t.as_str(), p as i32, b)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_ends_at_the_last_record_kept_and_records_what_was_skipped() {
        let mut b = PartState::new(Offset::Offset(100), Stop::Never);
        b.keep(100);
        b.keep(101);
        // 102 and 103 hold no record (a transaction marker, a compacted offset).
        b.keep(104);
        b.keep(105);
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
        assert!(PartState::new(Offset::End, Stop::Never)
            .range("t", 0)
            .is_none());
    }

    #[test]
    fn the_end_of_a_partition_covers_trailing_markers_but_never_a_record_not_kept() {
        // Continuous: records up to 9, a commit marker at 10; the position at the end is 11.
        let mut b = PartState::new(Offset::Offset(0), Stop::Never);
        (0..10).for_each(|o| b.keep(o));
        b.reach(11);
        b.reach(7); // never backwards
        let r = b.range("t", 0).unwrap();
        assert_eq!(
            (r.to, r.records, r.not_records.clone()),
            (11, Some(10), vec![(10, 11)])
        );
        assert_eq!(r.unaccounted(10, 0), None);

        // Bounded: never past the target, and nothing once a record past it was read.
        let stop = Stop::Before {
            target: Some(5),
            planned: true,
            refined: true,
        };
        let mut b = PartState::new(Offset::Offset(0), stop);
        (0..3).for_each(|o| b.keep(o));
        b.reach(9);
        assert_eq!(b.range("t", 0).unwrap().to, 5);
        let mut b = PartState::new(Offset::Offset(0), stop);
        (0..3).for_each(|o| b.keep(o));
        b.finish(); // a record past the target was read and not kept
        b.reach(9);
        assert_eq!(b.range("t", 0).unwrap().to, 3);

        // Nothing read yet from a logical start: no range to grow.
        let mut b = PartState::new(Offset::Beginning, Stop::Never);
        b.reach(9);
        assert!(b.range("t", 0).is_none());
    }

    #[test]
    fn a_logical_start_is_pinned_then_read_from_there() {
        let mut b = PartState::new(Offset::Beginning, Stop::Never);
        assert!(!b.needs_commit());
        b.pin_at(40);
        assert!(b.needs_commit() && !b.has_range());
        b.pin_at(50); // already known: no change
        b.keep(42);
        let r = b.range("t", 0).unwrap();
        assert_eq!(
            (r.from, r.to, r.not_records.clone()),
            (40, 43, vec![(40, 42)])
        );
    }

    #[test]
    fn a_listed_target_is_refined_once_and_again_after_re_positioning_a_planned_one_never() {
        let listed = Stop::Before {
            target: Some(10),
            planned: false,
            refined: false,
        };
        let mut b = PartState::new(Offset::Offset(0), listed);
        b.refine_target(|| Some(15));
        b.refine_target(|| Some(99));
        assert_eq!(b.stop.target(), Some(15));
        b.finish();
        assert!(b.stop.is_done());
        b.read_again_from(5);
        assert!(!b.stop.is_done());
        b.refine_target(|| Some(20));
        assert_eq!(b.stop.target(), Some(20));

        let planned = Stop::Before {
            target: Some(10),
            planned: true,
            refined: true,
        };
        let mut b = PartState::new(Offset::Offset(0), planned);
        b.refine_target(|| Some(15));
        b.finish();
        b.read_again_from(3);
        b.refine_target(|| Some(15));
        assert_eq!(b.stop.target(), Some(10));
    }

    #[test]
    fn a_negative_partition_is_not_owned() {
        let mut parts = Partitions::default();
        assert!(!parts.insert("t", -1, PartState::new(Offset::Offset(0), Stop::Never)));
        assert!(parts.get("t", 0).is_none());
        assert!(parts.insert("t", 2, PartState::new(Offset::Offset(0), Stop::Never)));
        assert_eq!(parts.iter().map(|(_, p, _)| p).collect::<Vec<_>>(), vec![2]);
    }
}
