//! The loader's metrics, rendered in the Prometheus text format (served by
//! `sluice run --metrics-addr`). Counters are updated per batch or per commit, never per event.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Records consumed from Kafka (loaded or not yet).
    pub events_consumed: AtomicU64,
    /// Payload bytes consumed.
    pub bytes_consumed: AtomicU64,
    /// Rows published in manifest entries by this process.
    pub rows_loaded: AtomicU64,
    pub dead_letters: AtomicU64,
    pub files: AtomicU64,
    pub file_bytes: AtomicU64,
    pub commits: AtomicU64,
    /// Lost races for a manifest sequence number (re-read and retried).
    pub conflicts: AtomicU64,
    /// Commits that failed (the store did not answer in time) and were tried again.
    pub failed_commits: AtomicU64,
    /// Times the partitions were paused: a commit in flight and the buffer budget reached.
    pub pauses: AtomicU64,
    /// Partitions whose buffers were dropped because another writer committed them.
    pub fenced: AtomicU64,
    /// Ranges refused because their offsets were not all rows, dead letters or recorded
    /// non-records (a bug if ever non-zero: the partition was re-read instead).
    pub unaccounted: AtomicU64,
    pub buffered_bytes: AtomicU64,
    /// Windows are closed through here (ms since the epoch; 0: none yet).
    pub closed_through_ms: AtomicI64,
    /// `compact` entries the background compaction published, and the files they removed.
    pub compactions: AtomicU64,
    pub compacted_files: AtomicU64,
    /// Rows this process loaded into closed windows (late additions).
    pub late_rows: AtomicU64,
    /// Each partition's watermark (ms since the epoch), as last published.
    pub watermarks: Mutex<BTreeMap<(String, i32), i64>>,
    latency_counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    partitions: Mutex<BTreeMap<(String, i32), (i64, i64)>>,
}

impl Metrics {
    pub fn observe_commit(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_counts[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a partition's committed offset and its lag behind the high watermark.
    pub fn set_partition(&self, topic: &str, partition: i32, committed: i64, lag: i64) {
        if let Ok(mut m) = self.partitions.lock() {
            m.insert((topic.to_string(), partition), (committed, lag));
        }
    }

    pub fn forget_partition(&self, topic: &str, partition: i32) {
        if let Ok(mut m) = self.partitions.lock() {
            m.remove(&(topic.to_string(), partition));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "sluice_events_consumed_total",
            "Records consumed from Kafka.",
            &self.events_consumed,
        );
        counter(
            &mut out,
            "sluice_bytes_consumed_total",
            "Payload bytes consumed from Kafka.",
            &self.bytes_consumed,
        );
        counter(
            &mut out,
            "sluice_rows_loaded_total",
            "Rows published in manifest entries.",
            &self.rows_loaded,
        );
        counter(
            &mut out,
            "sluice_dead_letters_total",
            "Records written to dead-letter files.",
            &self.dead_letters,
        );
        counter(
            &mut out,
            "sluice_files_total",
            "Data and dead-letter files committed.",
            &self.files,
        );
        counter(
            &mut out,
            "sluice_file_bytes_total",
            "Bytes of committed files.",
            &self.file_bytes,
        );
        counter(
            &mut out,
            "sluice_commits_total",
            "Manifest entries published.",
            &self.commits,
        );
        counter(
            &mut out,
            "sluice_commit_conflicts_total",
            "Lost races for a manifest entry.",
            &self.conflicts,
        );
        counter(
            &mut out,
            "sluice_failed_commits_total",
            "Commits that failed (the store did not answer in time) and were tried again.",
            &self.failed_commits,
        );
        counter(
            &mut out,
            "sluice_pauses_total",
            "Times the partitions were paused: a commit in flight and the buffer budget reached.",
            &self.pauses,
        );
        counter(
            &mut out,
            "sluice_fenced_total",
            "Partitions fenced by another writer.",
            &self.fenced,
        );
        counter(
            &mut out,
            "sluice_unaccounted_ranges_total",
            "Ranges refused before publishing because their offsets did not add up (re-read).",
            &self.unaccounted,
        );
        counter(
            &mut out,
            "sluice_compactions_total",
            "Windows compacted in the background (compact entries published).",
            &self.compactions,
        );
        counter(
            &mut out,
            "sluice_compacted_files_total",
            "Small files the background compaction merged away.",
            &self.compacted_files,
        );
        counter(
            &mut out,
            "sluice_late_rows_total",
            "Rows loaded into windows already closed (late additions).",
            &self.late_rows,
        );
        let _ = writeln!(
            out,
            "# HELP sluice_windows_closed_through_seconds Every window ending at or before this time is closed.\n# TYPE sluice_windows_closed_through_seconds gauge\nsluice_windows_closed_through_seconds {}",
            self.closed_through_ms.load(Ordering::Relaxed) / 1000
        );
        let marks = self
            .watermarks
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let _ = writeln!(out, "# HELP sluice_watermark_seconds A partition's watermark: windows ending before it get no more of its rows.\n# TYPE sluice_watermark_seconds gauge");
        for ((t, p), ms) in &marks {
            let _ = writeln!(
                out,
                "sluice_watermark_seconds{{topic=\"{t}\",partition=\"{p}\"}} {}",
                ms / 1000
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_buffered_bytes Bytes buffered, not yet committed.\n# TYPE sluice_buffered_bytes gauge\nsluice_buffered_bytes {}",
            self.buffered_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP sluice_commit_seconds Commit latency (encode, upload, publish).\n# TYPE sluice_commit_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sluice_commit_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.latency_counts[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sluice_commit_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "sluice_commit_seconds_sum {}\nsluice_commit_seconds_count {cumulative}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let parts = self
            .partitions
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let _ = writeln!(out, "# HELP sluice_committed_offset One past the last offset loaded.\n# TYPE sluice_committed_offset gauge");
        for ((t, p), (c, _)) in &parts {
            let _ = writeln!(
                out,
                "sluice_committed_offset{{topic=\"{t}\",partition=\"{p}\"}} {c}"
            );
        }
        let _ = writeln!(out, "# HELP sluice_lag_messages Messages in Kafka not yet loaded.\n# TYPE sluice_lag_messages gauge");
        for ((t, p), (_, l)) in &parts {
            let _ = writeln!(
                out,
                "sluice_lag_messages{{topic=\"{t}\",partition=\"{p}\"}} {l}"
            );
        }
        out
    }
}
