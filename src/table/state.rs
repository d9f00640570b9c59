//! The table's state: what the entries published so far add up to, and the checks an entry
//! must pass to be published on top of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Fenced, ManifestError, Unaccounted};
use crate::table::entry::{
    DataFile, DeadLetterFile, Entry, EntryKind, OffsetRange, SchemaDef, Span, FORMAT_VERSION,
};

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
    /// Rows of a partition the entry has no range for would appear or vanish: the files it
    /// adds do not hold exactly the rows of the files it removes, outside its ranges.
    Lineage { message: String },
    /// An append adding rows to a window already closed, without marking them late: the
    /// partition is read again (its late rows then follow `window.late_records`).
    Late {
        topic: String,
        partition: i32,
        window_start_ms: i64,
    },
}

impl Refusal {
    /// The partition refused, when the refusal concerns one partition alone.
    pub fn partition(&self) -> Option<(&str, i32)> {
        match self {
            Refusal::Fenced(f) => Some((&f.topic, f.partition)),
            Refusal::Overlap {
                topic, partition, ..
            } => Some((topic, *partition)),
            Refusal::Unaccounted(u) => Some((&u.topic, u.partition)),
            Refusal::Late {
                topic, partition, ..
            } => Some((topic, *partition)),
            Refusal::Stale { .. } | Refusal::Lineage { .. } => None,
        }
    }

    /// Whether the refusal names this partition.
    pub fn names(&self, topic: &str, partition: i32) -> bool {
        self.partition() == Some((topic, partition))
    }

    /// Whether the rest of the entry may still be published without this partition: yes for
    /// a fenced or unaccounted range (that partition is read again), no for an overlapping
    /// backfill or a stale replace (the operator's plan no longer holds).
    pub fn is_partition_local(&self) -> bool {
        matches!(
            self,
            Refusal::Fenced(_) | Refusal::Unaccounted(_) | Refusal::Late { .. }
        )
    }
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
            Refusal::Stale { message } | Refusal::Lineage { message } => f.write_str(message),
            Refusal::Unaccounted(u) => u.fmt(f),
            Refusal::Late {
                topic,
                partition,
                window_start_ms,
            } => write!(
                f,
                "{topic}/{partition}: rows for the window starting at {window_start_ms} ms, which is closed"
            ),
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
    /// Windows ending at or before this get no more rows of the partition (see
    /// [`crate::table::entry::Watermark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// The Kafka timestamp of the newest record loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_record_ms: Option<i64>,
    /// Rows added to closed windows (late additions), ever.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_rows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// The schema in force: the last one an entry recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaDef>,
    /// Every window ending at or before this is closed (the last entry that closed windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_through_ms: Option<i64>,
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

    pub(crate) fn reindex(&mut self) {
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
        out.extend(self.check_lineage(e));
        out.extend(self.check_late(e));
        out
    }

    /// An append's rows for closed windows must be marked late (they were loaded knowing the
    /// window was closed, under `window.late_records = "load"`).
    pub fn check_late(&self, e: &Entry) -> Vec<Refusal> {
        let Some(closed) = self.closed_through_ms else {
            return Vec::new();
        };
        if e.kind != EntryKind::Append {
            return Vec::new();
        }
        let mut out: Vec<Refusal> = Vec::new();
        for f in &e.files {
            if f.late || f.window_end_ms > closed {
                continue;
            }
            if !out.iter().any(|r| r.names(&f.topic, f.partition)) {
                out.push(Refusal::Late {
                    topic: f.topic.clone(),
                    partition: f.partition,
                    window_start_ms: f.window_start_ms,
                });
            }
        }
        out
    }

    /// Where windows would be closed through once `e` is applied, when `e` moves it: every
    /// partition's watermark (the entry's, or the one recorded) is at or past the returned
    /// window boundary. A partition with no watermark yet holds every window open.
    pub fn closing(&self, e: &Entry, window_ms: i64) -> Option<i64> {
        if window_ms <= 0 {
            return None;
        }
        let mut low: Option<i64> = None;
        let entry_mark = |t: &str, p: i32| {
            e.watermarks
                .iter()
                .filter(|w| w.topic == t && w.partition == p)
                .map(|w| w.ms)
                .max()
        };
        let ranged = e.ranges.iter().map(|r| (r.topic.as_str(), r.partition));
        let known = self
            .partitions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition))
            .chain(ranged)
            .chain(e.watermarks.iter().map(|w| (w.topic.as_str(), w.partition)));
        for (t, p) in known {
            let recorded = self.partition(t, p).and_then(|s| s.watermark_ms);
            let mark = match (recorded, entry_mark(t, p)) {
                (Some(a), Some(b)) => a.max(b),
                (a, b) => a.or(b)?,
            };
            low = Some(low.map_or(mark, |l: i64| l.min(mark)));
        }
        let through = low?.div_euclid(window_ms) * window_ms;
        (self.closed_through_ms.is_none_or(|c| through > c)).then_some(through)
    }

    /// Outside its ranges an entry moves rows, never makes or loses them: the spans of the
    /// files it adds that are not inside its ranges are exactly the spans of the live files it
    /// removes that are not inside its ranges (compaction; the rows a replace carries over).
    pub fn check_lineage(&self, e: &Entry) -> Option<Refusal> {
        use std::collections::{HashMap, HashSet};
        // A span is the entry's to account for when it lies inside one of its ranges; any
        // other span must move whole from a removed file to an added one.
        let inside = |topic: &str, partition: i32, first: i64, next: i64| {
            e.ranges.iter().any(|r| {
                r.topic == topic && r.partition == partition && r.from <= first && next <= r.to
            })
        };
        let mut balance: HashMap<Span, i64> = HashMap::new();
        if !e.removed.is_empty() {
            let removed: HashSet<&str> = e.removed.iter().map(String::as_str).collect();
            for f in self
                .files
                .iter()
                .filter(|f| removed.contains(f.path.as_str()))
            {
                for s in f.lineage().iter() {
                    if !inside(&s.topic, s.partition, s.first, s.next) {
                        *balance.entry(s.clone()).or_default() += 1;
                    }
                }
            }
        }
        for f in &e.files {
            // A loader's file inside a range: the common case, checked without a copy.
            if f.spans.is_empty() && inside(&f.topic, f.partition, f.first_offset, f.next_offset) {
                continue;
            }
            for s in f.lineage().iter() {
                if !inside(&s.topic, s.partition, s.first, s.next) {
                    *balance.entry(s.clone()).or_default() -= 1;
                }
            }
        }
        let mut wrong: Vec<(&Span, i64)> = balance
            .iter()
            .filter(|(_, &n)| n != 0)
            .map(|(s, &n)| (s, n))
            .collect();
        wrong.sort();
        let (s, n) = wrong.first()?;
        Some(Refusal::Lineage {
            message: format!(
                "{}/{}: the rows of [{}, {}) ({} rows) would be {} ({} such spans in all); an entry may add rows only in its ranges",
                s.topic,
                s.partition,
                s.first,
                s.next,
                s.rows,
                if *n > 0 { "lost" } else { "added outside the entry's ranges" },
                wrong.len()
            ),
        })
    }

    /// Refusals for paths to remove that are no longer live.
    fn stale_removals(&self, removed: &[String]) -> Vec<Refusal> {
        let live: std::collections::HashSet<&str> = self
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(self.dead_letters.iter().map(|d| d.path.as_str()))
            .collect();
        removed
            .iter()
            .filter(|path| !live.contains(path.as_str()))
            .map(|path| Refusal::Stale {
                message: format!("{path} was already removed by another entry"),
            })
            .collect()
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
                out.extend(self.stale_removals(removed));
                out
            }
            EntryKind::Compact => {
                let mut out = self.stale_removals(removed);
                if let Some(r) = ranges.first() {
                    out.push(Refusal::Stale {
                        message: format!(
                            "{}/{}: a compaction loads no offsets, yet it has the range [{}, {})",
                            r.topic, r.partition, r.from, r.to
                        ),
                    });
                }
                out
            }
        }
    }

    /// Applies the next entry.
    pub fn apply(&mut self, e: &Entry) -> Result<(), ManifestError> {
        if e.seq != self.seq + 1 {
            return Err(ManifestError::Corrupt {
                path: Entry::rel(e.seq),
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
                    gone_files.extend(
                        f.partitions()
                            .into_iter()
                            .map(|(t, p)| (f.rows_of(&t, p), t, p)),
                    );
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
            for (rows, t, p) in gone_files {
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
        for w in &e.watermarks {
            let p = self.partition_mut(&w.topic, w.partition);
            p.watermark_ms = Some(p.watermark_ms.map_or(w.ms, |m| m.max(w.ms)));
            if let Some(n) = w.newest_record_ms {
                p.newest_record_ms = Some(p.newest_record_ms.map_or(n, |m| m.max(n)));
            }
        }
        if let Some(c) = e.closed_through_ms {
            self.closed_through_ms = Some(self.closed_through_ms.map_or(c, |m| m.max(c)));
        }
        for f in &e.files {
            if f.spans.is_empty() {
                // A loader's file: one partition (no copy of its lineage). Only such files
                // add rows, so only they can be late additions.
                let ps = self.partition_mut(&f.topic, f.partition);
                ps.rows += f.rows;
                ps.files += 1;
                if f.late {
                    ps.late_rows += f.rows;
                }
                continue;
            }
            for (t, p) in f.partitions() {
                let rows = f.rows_of(&t, p);
                let ps = self.partition_mut(&t, p);
                ps.rows += rows;
                ps.files += 1;
            }
        }
        for d in &e.dead_letters {
            let p = self.partition_mut(&d.topic, d.partition);
            p.dead_letters += d.offsets.len() as u64;
        }
        // The state keeps no statistics: they are the entry's, for its Delta version, and a
        // table's live files can number hundreds of thousands.
        self.files.extend(e.files.iter().map(|f| DataFile {
            stats: None,
            ..f.clone()
        }));
        self.dead_letters.extend(e.dead_letters.iter().cloned());
        if let Some(schema) = &e.schema {
            self.schema = Some(schema.clone());
        }
        self.seq = e.seq;
        self.format = FORMAT_VERSION;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::entry::test_entry as entry;

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
    fn a_compaction_moves_rows_and_never_makes_or_loses_them() {
        use crate::table::entry::test_file;
        let mut s = TableState::default();
        let mut e = entry(&[("t", 0, 0, 10), ("t", 1, 0, 10)]);
        e.seq = 1;
        e.files = e.ranges.iter().map(|r| test_file(r, "w")).collect();
        s.apply(&e).unwrap();
        let merged_spans: Vec<Span> = e
            .files
            .iter()
            .flat_map(|f| f.lineage().into_owned())
            .collect();
        let compact = |spans: Vec<Span>| Entry {
            kind: EntryKind::Compact,
            ranges: vec![],
            removed: e.files.iter().map(|f| f.path.clone()).collect(),
            files: vec![DataFile {
                path: "w/part-compact.parquet".into(),
                rows: spans.iter().map(|s| s.rows).sum(),
                spans,
                ..e.files[0].clone()
            }],
            seq: 2,
            ..entry(&[])
        };
        let good = compact(merged_spans.clone());
        assert!(s.check(&good).is_empty(), "{:?}", s.check(&good));
        // A span lost, or one made up: refused.
        let lost = compact(merged_spans[..1].to_vec());
        assert!(matches!(s.check(&lost)[..], [Refusal::Lineage { .. }]));
        let mut extra = merged_spans.clone();
        extra.push(Span {
            first: 10,
            next: 12,
            rows: 2,
            ..merged_spans[0].clone()
        });
        assert!(matches!(
            s.check(&compact(extra))[..],
            [Refusal::Lineage { .. }]
        ));
        // Applied: the partitions keep their rows and offsets; one file holds both. Its rows
        // moved, so even marked late they are no late addition (and its summary fields, here
        // partition 0, name no partition of their own).
        let (rows, ranges) = (s.partitions[0].rows, s.partitions[0].ranges.clone());
        let mut good = good;
        good.files[0].late = true;
        s.apply(&good).unwrap();
        assert_eq!(s.partitions.len(), 2);
        assert!(s.partitions.iter().all(|p| p.late_rows == 0));
        assert_eq!(s.files.len(), 1);
        assert_eq!(
            (s.partitions[0].rows, &s.partitions[0].ranges),
            (rows, &ranges)
        );
        assert_eq!(s.partitions[1].files, 1);
        // Its files are gone: a second compaction of them is stale.
        let mut again = good.clone();
        again.seq = 3;
        assert!(matches!(s.check(&again)[..], [Refusal::Stale { .. }, ..]));
        // A compaction has no ranges.
        let mut ranged = compact(merged_spans);
        ranged.ranges = entry(&[("t", 0, 10, 20)]).ranges;
        assert!(!s.check(&ranged).is_empty());
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

    #[test]
    fn an_append_must_start_at_the_committed_end() {
        let mut s = TableState::default();
        let mut e = entry(&[("t", 1, 0, 50)]);
        e.seq = 1;
        s.apply(&e).unwrap();
        let fenced = s.check_append(&entry(&[("t", 1, 0, 40)]).ranges);
        assert_eq!(fenced.len(), 1);
        assert_eq!(fenced[0].committed_end, Some(50));
        assert!(s
            .check_append(&entry(&[("t", 1, 50, 60), ("t", 2, 7, 9)]).ranges)
            .is_empty());
        // Entries apply in sequence only.
        assert!(s.apply(&e).is_err());
    }
}
