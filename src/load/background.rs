//! Compaction in the background of a continuous loader: when a commit closes windows, a thread
//! of its own runs the job's compaction of the closed windows while loading goes on. One at a
//! time; a loader that stops waits for it. What compacting is, the caller says (the CLI wires
//! `ops::compact` in): loading knows nothing of it.

use std::sync::Arc;
use std::thread::JoinHandle;

/// Compacts the windows closed through the given end (ms since the epoch).
pub type CompactClosed = Arc<dyn Fn(i64) + Send + Sync>;

/// The background compaction of closed windows, when the job has one.
#[derive(Default)]
pub(crate) struct Compactor {
    compact: Option<CompactClosed>,
    running: Option<JoinHandle<()>>,
}

impl Compactor {
    pub(crate) fn new(compact: Option<CompactClosed>) -> Self {
        Compactor {
            compact,
            running: None,
        }
    }

    /// Starts compacting the windows closed through `closed_ms`, unless a compaction is still
    /// running (the next closing starts the next one) or there is no compaction.
    pub(crate) fn start(&mut self, closed_ms: i64) {
        let Some(compact) = self.compact.clone() else {
            return;
        };
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.join();
        let spawned = std::thread::Builder::new()
            .name("sluice-compact".into())
            .spawn(move || compact(closed_ms));
        match spawned {
            Ok(h) => self.running = Some(h),
            Err(e) => tracing::warn!(error = %e, "could not start background compaction"),
        }
    }

    /// Waits for the background compaction, if one is running.
    pub(crate) fn join(&mut self) {
        if let Some(h) = self.running.take() {
            if h.join().is_err() {
                tracing::warn!("background compaction panicked");
            }
        }
    }
}
