//! Progress of bounded runs (`run --once`, `backfill`): offsets done of the total, events/s
//! and ETA — a line redrawn every 200 ms on a terminal, a log line every 10 s otherwise.

use std::time::{Duration, Instant};

use crate::load::partition::Partitions;

pub(crate) struct Progress {
    tty: bool,
    started: Instant,
    last: Instant,
    /// The largest total seen: totals only grow as targets are refined.
    total: i64,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            started: Instant::now(),
            last: Instant::now(),
            total: 0,
        }
    }

    /// Reports, when it is time to (always when `last`).
    pub(crate) fn report(&mut self, parts: &Partitions, last: bool) {
        let every = if self.tty { 200 } else { 10_000 };
        if !last && self.last.elapsed() < Duration::from_millis(every) {
            return;
        }
        self.last = Instant::now();
        let (mut done, mut total) = (0i64, 0i64);
        for (_, _, b) in parts.iter() {
            let start = b.from().unwrap_or(b.next);
            done += b.next - start + b.loaded;
            total += b
                .stop
                .target()
                .map(|t| (t - start).max(b.next - start))
                .unwrap_or(b.next - start)
                + b.loaded;
        }
        self.total = self.total.max(total);
        let total = self.total;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
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
        if self.tty {
            let width = 30;
            let filled = (((pct / 100.0) * width as f64) as usize).min(width);
            eprint!(
                "\r[{}{}] {done}/{total} offsets ({pct:.1}%), {rate:.0} events/s, ETA {eta:.0}s   ",
                "#".repeat(filled),
                " ".repeat(width - filled)
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
}
