//! Compaction in the background of a continuous loader: when a commit closes windows, a thread
//! of its own merges the small files of the closed windows (one `compact` entry per window),
//! while loading goes on. One compaction at a time; a loader that stops waits for it.

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crate::load::run::Loader;
use crate::load::Run;
use crate::ops::compact;

impl Loader {
    /// Starts compacting the windows closed through `closed_ms`, unless a compaction is
    /// still running (the next closing starts the next one) or compaction is disabled.
    pub(crate) fn compact_in_background(&mut self, closed_ms: i64) {
        if !self.job.compaction.enabled || !matches!(self.run, Run::Continuous) {
            return;
        }
        if self.compactor.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.join_compactor();
        let job = self.job.clone();
        let manifest = self.committer.manifest().clone();
        let rt = self.committer.runtime();
        let props = self.props.clone();
        let metrics = self.metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-compact".into())
            .spawn(move || {
                let run = || -> crate::error::Result<Vec<compact::Compacted>> {
                    let c = compact::committer(&job, manifest, rt, "compact")?;
                    let options = compact::Options {
                        ended_before: Some(closed_ms),
                        ..compact::Options::of(&job)
                    };
                    let plans = compact::plan(&c.snapshot(), &options);
                    compact::compact(&c, &plans, &compact::SortBy::of(&job), &props)
                };
                match run() {
                    Ok(done) => {
                        for d in done.iter().filter(|d| d.seq.is_some()) {
                            metrics.compactions.fetch_add(1, Ordering::Relaxed);
                            metrics
                                .compacted_files
                                .fetch_add(d.files_removed as u64, Ordering::Relaxed);
                        }
                        for d in done.iter().filter(|d| d.refused.is_some()) {
                            tracing::info!(window_start_ms = d.window_start_ms, refused = ?d.refused, "window not compacted (another writer took its files first); the next closing tries again");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "background compaction failed; the next closing tries again"),
                }
            });
        match spawned {
            Ok(h) => self.compactor = Some(h),
            Err(e) => tracing::warn!(error = %e, "could not start background compaction"),
        }
    }

    /// Waits for the background compaction, if one is running.
    pub(crate) fn join_compactor(&mut self) {
        if let Some(h) = self.compactor.take() {
            if h.join().is_err() {
                tracing::warn!("background compaction panicked");
            }
        }
    }
}

/// The handle of a background compaction.
pub(crate) type Compactor = Option<JoinHandle<()>>;
