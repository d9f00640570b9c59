//! Planning `sluice backfill`: which offsets to load, what a `--replace` takes out.
//!
//! Pure: takes the table state and the broker's low watermarks, returns a [`Plan`] or an
//! error naming the offsets in the way. The plan is run by the loader (`load::Run::Backfill`)
//! through the same commit path as every other entry; this module never imports the loader.

use std::collections::HashMap;

use crate::error::LoadError;
use crate::record::source::TopicPartition;
use crate::table::state::TableState;

pub use crate::load::{Plan, PlanRange};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub partitions: Vec<TopicPartition>,
    pub from: i64,
    /// `None`: up to the partition's end now (`--to latest`).
    pub to: Option<i64>,
    pub replace: bool,
}

pub fn plan(
    state: &TableState,
    lows: &HashMap<TopicPartition, i64>,
    req: &Request,
) -> Result<Plan, LoadError> {
    let mut plan = Plan {
        replace: req.replace,
        ..Default::default()
    };
    let mut problems = Vec::new();
    for (topic, partition) in &req.partitions {
        let (t, p) = (topic.as_str(), *partition);
        if let Some(&low) = lows.get(&(topic.clone(), p)) {
            if req.from < low {
                problems.push(format!(
                    "{t}/{p}: offsets [{}, {low}) are no longer in Kafka (retention gap); start at {low} or later",
                    req.from
                ));
                continue;
            }
        }
        if let Some(to) = req.to {
            if to < req.from {
                problems.push(format!("{t}/{p}: --to {to} is before --from {}", req.from));
                continue;
            }
        }
        let end = state.partition(t, p).and_then(|s| s.end());
        if let Some(end) = end.filter(|&e| !req.replace && req.from > e) {
            problems.push(format!(
                "{t}/{p}: --from {} is past the committed end {end}: offsets [{end}, {}) would never be loaded (the loader reads on from {end})",
                req.from, req.from
            ));
            continue;
        }
        if !req.replace {
            let overlaps = state.overlaps(t, p, req.from, req.to.unwrap_or(i64::MAX));
            if !overlaps.is_empty() {
                let list: Vec<String> = overlaps
                    .iter()
                    .map(|(a, b)| format!("[{a}, {b})"))
                    .collect();
                problems.push(format!(
                    "{t}/{p}: offsets {} are already loaded; backfill only what is missing, or pass --replace to re-derive them",
                    list.join(", ")
                ));
                continue;
            }
            plan.ranges.push(PlanRange {
                topic: topic.clone(),
                partition: p,
                from: req.from,
                to: req.to,
            });
            continue;
        }
        // Replace: the range must be loaded; widen it to whole files so every row of every
        // file it touches is re-derived, and nothing is lost or doubled.
        let end = end.unwrap_or(req.from);
        let (mut lo, mut hi) = (req.from, req.to.unwrap_or(end));
        if hi <= lo {
            continue;
        }
        let mut removed = Vec::new();
        loop {
            let before = (lo, hi);
            removed.clear();
            for f in state.files.iter().filter(|f| f.holds(t, p)) {
                let lineage = f.lineage();
                let mine = || lineage.iter().filter(|s| s.topic == t && s.partition == p);
                if mine().any(|s| s.first < hi && lo < s.next) {
                    // The file goes: every row it holds of this partition is re-derived (a
                    // compacted file holds several spans of it, not all in the range).
                    for s in mine() {
                        lo = lo.min(s.first);
                        hi = hi.max(s.next);
                    }
                    removed.push(f.path.clone());
                }
            }
            for d in state
                .dead_letters
                .iter()
                .filter(|d| d.topic == t && d.partition == p)
            {
                let (a, b) = match (d.offsets.first(), d.offsets.last()) {
                    (Some(&a), Some(&b)) => (a, b + 1),
                    _ => continue,
                };
                if a < hi && lo < b {
                    lo = lo.min(a);
                    hi = hi.max(b);
                    removed.push(d.path.clone());
                }
            }
            if (lo, hi) == before {
                break;
            }
        }
        let covered: i64 = state
            .overlaps(t, p, lo, hi)
            .iter()
            .map(|(a, b)| b - a)
            .sum();
        if covered != hi - lo {
            problems.push(format!(
                "{t}/{p}: [{lo}, {hi}) is not entirely loaded, so it cannot be replaced; backfill the missing offsets first"
            ));
            continue;
        }
        plan.removed.extend(removed);
        plan.ranges.push(PlanRange {
            topic: topic.clone(),
            partition: p,
            from: lo,
            to: Some(hi),
        });
    }
    // A removed file may hold rows of partitions not replaced (a compacted file): those rows
    // are carried into a new file by the same entry.
    let replaced = |t: &str, p: i32| plan.ranges.iter().any(|r| r.topic == t && r.partition == p);
    plan.removed.sort();
    plan.removed.dedup();
    plan.carried = state
        .files
        .iter()
        .filter(|f| plan.removed.binary_search(&f.path).is_ok())
        .filter(|f| f.partitions().iter().any(|(t, p)| !replaced(t, *p)))
        .map(|f| f.path.clone())
        .collect();
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(LoadError::Refused {
            message: problems.join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::entry::{DataFile, Entry, EntryKind, OffsetRange};

    fn file(path: &str, first: i64, next: i64) -> DataFile {
        DataFile {
            path: path.into(),
            bytes: 1,
            rows: 1,
            topic: "t".into(),
            partition: 0,
            first_offset: first,
            next_offset: next,
            window_start_ms: 0,
            window_end_ms: 1,
            min_event_ms: 0,
            max_event_ms: 0,
            schema_fingerprint: String::new(),
            stats: None,
            spans: vec![],
            late: false,
        }
    }

    fn state() -> TableState {
        let mut s = TableState::default();
        s.apply(&Entry {
            format: 1,
            seq: 1,
            kind: EntryKind::Append,
            commit_id: "a".into(),
            writer: "w".into(),
            committed_at_ms: 0,
            ranges: vec![OffsetRange::new("t", 0, 100, 200)],
            // Two windows interleaving in [100, 200), then one file of [150, 200).
            files: vec![
                file("a", 100, 140),
                file("b", 101, 160),
                file("c", 160, 200),
            ],
            dead_letters: vec![],
            removed: vec![],
            schema: None,
            watermarks: vec![],
            closed_through_ms: None,
        })
        .unwrap();
        s
    }

    fn req(from: i64, to: Option<i64>, replace: bool) -> Request {
        Request {
            partitions: vec![("t".into(), 0)],
            from,
            to,
            replace,
        }
    }

    #[test]
    fn fills_only_what_is_missing() {
        let s = state();
        let lows = HashMap::from([(("t".to_string(), 0), 10)]);
        let p = plan(&s, &lows, &req(10, Some(100), false)).unwrap();
        assert_eq!(p.ranges[0].from, 10);
        assert_eq!(p.ranges[0].to, Some(100));
        let e = plan(&s, &lows, &req(50, Some(120), false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[100, 120)"), "{e}");
        let e = plan(&s, &lows, &req(0, Some(50), false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention"), "{e}");
        // Past the committed end: the gap before it would never be loaded.
        let e = plan(&s, &lows, &req(250, None, false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[200, 250) would never be loaded"), "{e}");
        assert_eq!(p.entry_kind(), EntryKind::Backfill);
    }

    #[test]
    fn replace_widens_to_whole_files() {
        let s = state();
        let p = plan(&s, &HashMap::new(), &req(130, Some(135), true)).unwrap();
        // [130,135) touches a [100,140) and b [101,160): widened to [100,160).
        assert_eq!((p.ranges[0].from, p.ranges[0].to), (100, Some(160)));
        let mut removed = p.removed.clone();
        removed.sort();
        assert_eq!(removed, vec!["a", "b"]);
        assert_eq!(p.entry_kind(), EntryKind::Replace);
        let e = plan(&s, &HashMap::new(), &req(50, Some(150), true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not entirely loaded"), "{e}");
    }

    #[test]
    fn replace_on_compacted_files_re_derives_every_span_of_the_partition_and_carries_the_rest() {
        use crate::table::entry::Span;
        let span = |p: i32, first: i64, next: i64| Span {
            topic: "t".into(),
            partition: p,
            first,
            next,
            rows: (next - first) as u64,
        };
        let mut s = TableState::default();
        let compacted = DataFile {
            spans: vec![span(0, 0, 10), span(0, 30, 40), span(1, 0, 10)],
            partition: -1,
            ..file("compacted", 0, 40)
        };
        let mut e = crate::table::entry::test_entry(&[("t", 0, 0, 50), ("t", 1, 0, 10)]);
        e.seq = 1;
        e.files = vec![compacted, file("late", 35, 50)];
        s.apply(&e).unwrap();
        let p = plan(&s, &HashMap::new(), &req(5, Some(6), true)).unwrap();
        // [5, 6) touches the compacted file: all its spans of partition 0 ([0, 10) and
        // [30, 40)) are re-derived, and with them the file overlapping [30, 40).
        assert_eq!((p.ranges[0].from, p.ranges[0].to), (0, Some(50)));
        assert_eq!(p.removed, vec!["compacted", "late"]);
        // Its rows of partition 1 are carried into a new file.
        assert_eq!(p.carried, vec!["compacted"]);
    }
}
