//! `sluice status`: the table's progress against the broker, per partition.

use std::collections::HashMap;

use serde::Serialize;

use crate::record::source::TopicPartition;
use crate::table::state::TableState;

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// One past the last offset loaded (the end of the committed ranges).
    pub committed_through: Option<i64>,
    pub high_watermark: Option<i64>,
    /// Messages in Kafka not yet in the table.
    pub lag: Option<i64>,
    pub last_commit: Option<String>,
    /// The latest event time loaded from this partition.
    pub max_event_time: Option<String>,
    pub files: u64,
    pub rows: u64,
    pub dead_letters: u64,
    /// Windows ending at or before this get no more of this partition's rows.
    pub watermark: Option<String>,
    /// Rows loaded into windows after they closed.
    pub late_rows: u64,
}

/// A window's rows added after it closed, in live files.
#[derive(Debug, Clone, Serialize)]
pub struct LateWindow {
    pub window_start: Option<String>,
    pub rows: u64,
    pub files: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The manifest's newest entry.
    pub manifest_version: u64,
    /// The checkpoint the state was read from (then the entries after it).
    pub checkpoint: Option<u64>,
    pub lag: i64,
    pub rows: u64,
    pub files: u64,
    /// The least of the partitions' latest event times (a hint: later events may still
    /// arrive late; `closed_through` is the promise).
    pub complete_through: Option<String>,
    /// Every window ending at or before this is closed: it gets no more rows (but late
    /// additions under `window.late_records = "load"`, and backfills).
    pub closed_through: Option<String>,
    /// Windows with late additions among the live files.
    pub late_windows: Vec<LateWindow>,
    pub partitions: Vec<PartitionStatus>,
}

pub fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The status as `sluice status` prints it: a summary line, then a row per partition.
pub fn render(st: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "manifest version {} (read from {}), {} rows in {} files, lag {} messages, complete through {}",
        st.manifest_version,
        st.checkpoint
            .map(|c| format!("checkpoint {c}"))
            .unwrap_or_else(|| "the log".into()),
        st.rows,
        st.files,
        st.lag,
        st.complete_through.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "windows closed through {}{}",
        st.closed_through.as_deref().unwrap_or("- (none yet)"),
        if st.late_windows.is_empty() {
            String::new()
        } else {
            let late: u64 = st.late_windows.iter().map(|w| w.rows).sum();
            format!("; {late} late rows in {} windows", st.late_windows.len())
        }
    );
    let _ = writeln!(
        out,
        "{:<24} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8}  {:<24} {:<24} {:<24}",
        "topic",
        "part",
        "committed",
        "high",
        "lag",
        "rows",
        "files",
        "last commit",
        "latest event",
        "watermark"
    );
    let o = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    for p in &st.partitions {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8}  {:<24} {:<24} {:<24}",
            p.topic,
            p.partition,
            o(p.committed_through),
            o(p.high_watermark),
            o(p.lag),
            p.rows,
            p.files,
            p.last_commit.as_deref().unwrap_or("-"),
            p.max_event_time.as_deref().unwrap_or("-"),
            p.watermark.as_deref().unwrap_or("-")
        );
    }
    out
}

/// Pure: the status of `parts` from the table state and the broker's high watermarks.
pub fn status(
    state: &TableState,
    parts: &[TopicPartition],
    highs: &HashMap<TopicPartition, i64>,
) -> Status {
    let mut max_event: HashMap<(&str, i32), i64> = HashMap::new();
    for f in &state.files {
        for s in f.lineage().iter() {
            let Some((t, p)) = parts
                .iter()
                .find(|(t, p)| *t == s.topic && *p == s.partition)
            else {
                continue;
            };
            let e = max_event.entry((t.as_str(), *p)).or_insert(i64::MIN);
            *e = (*e).max(f.max_event_ms);
        }
    }
    let mut partitions = Vec::new();
    for (t, p) in parts {
        let ps = state.partition(t, *p);
        let committed = ps.and_then(|s| s.end());
        let high = highs.get(&(t.clone(), *p)).copied();
        let lag = high.map(|h| (h - committed.unwrap_or(0)).max(0));
        partitions.push(PartitionStatus {
            topic: t.clone(),
            partition: *p,
            committed_through: committed,
            high_watermark: high,
            lag,
            last_commit: ps
                .filter(|s| s.last_commit_ms > 0)
                .and_then(|s| rfc3339(s.last_commit_ms)),
            max_event_time: max_event.get(&(t.as_str(), *p)).and_then(|&ms| rfc3339(ms)),
            files: ps.map(|s| s.files).unwrap_or(0),
            rows: ps.map(|s| s.rows).unwrap_or(0),
            dead_letters: ps.map(|s| s.dead_letters).unwrap_or(0),
            watermark: ps.and_then(|s| s.watermark_ms).and_then(rfc3339),
            late_rows: ps.map(|s| s.late_rows).unwrap_or(0),
        });
    }
    let mut late: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
    for f in state.files.iter().filter(|f| f.late) {
        let e = late.entry(f.window_start_ms).or_default();
        e.0 += f.rows;
        e.1 += 1;
    }
    let late_windows = late
        .into_iter()
        .map(|(start, (rows, files))| LateWindow {
            window_start: rfc3339(start),
            rows,
            files,
        })
        .collect();
    let complete_through = parts
        .iter()
        .map(|(t, p)| max_event.get(&(t.as_str(), *p)).copied())
        .collect::<Option<Vec<i64>>>()
        .and_then(|v| v.into_iter().min())
        .and_then(rfc3339);
    Status {
        manifest_version: state.seq,
        checkpoint: state.loaded_from_checkpoint,
        lag: partitions.iter().filter_map(|p| p.lag).sum(),
        rows: partitions.iter().map(|p| p.rows).sum(),
        files: partitions.iter().map(|p| p.files).sum(),
        complete_through,
        closed_through: state.closed_through_ms.and_then(rfc3339),
        late_windows,
        partitions,
    }
}
