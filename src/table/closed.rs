//! Markers of closed windows, for schedulers that only see the object store:
//!
//! ```text
//! <table>/_sluice/closed/2026-11-24T13:00:00Z.json   window [13:00, 14:00) is closed
//! <table>/_sluice/closed/_through.json               hint: markers are written up to here
//! ```
//!
//! A marker is written only after the entry that closes its window is in the log (the
//! manifest, `closed_through_ms`, is the truth; `sluice wait` reads it). A writer that crashed
//! in between leaves the markers to the next writer that opens the table or closes windows.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::table::manifest::Manifest;

pub const CLOSED_DIR: &str = "_sluice/closed";
const THROUGH: &str = "_sluice/closed/_through.json";
/// Markers written per call at most (the rest at the next call).
const MAX_MARKERS: i64 = 10_000;
/// A first closing marks every one of this many windows before the closed boundary; older
/// windows only when they hold data.
const RECENT: i64 = 1_000;

/// A time as the markers name it: RFC 3339, UTC, whole seconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Where the marker of the window starting at `start_ms` lives, below the table root.
pub fn marker_rel(start_ms: i64) -> String {
    format!("{CLOSED_DIR}/{}.json", rfc3339(start_ms))
}

/// A marker's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub window_start: String,
    pub window_end: String,
    /// Windows are closed through here when the marker was written.
    pub closed_through: String,
}

#[derive(Serialize, Deserialize)]
struct Through {
    through_ms: i64,
}

/// Writes the markers of the windows closed through `closed_ms` that have none yet: every
/// window since the last marker written (the hint), or since the first window holding data
/// (`data_windows`: the starts of the windows with live files). A first closing over a long
/// history marks the last [`RECENT`] windows and, before them, only those holding data.
/// Returns how many were written.
pub async fn sync(
    m: &Manifest,
    window_ms: i64,
    closed_ms: i64,
    data_windows: &std::collections::BTreeSet<i64>,
) -> Result<u64, ManifestError> {
    let store = m.store();
    let done = match store.get(THROUGH).await? {
        Some(b) => serde_json::from_slice::<Through>(&b)
            .ok()
            .map(|t| t.through_ms),
        None => None,
    };
    if done.is_some_and(|d| d >= closed_ms) {
        return Ok(0);
    }
    let first = data_windows.first().copied();
    let Some(from) = [done, first].into_iter().flatten().max() else {
        return Ok(0);
    };
    let from = from.div_euclid(window_ms) * window_ms;
    let recent = (closed_ms - RECENT * window_ms).max(from);
    let mut starts: Vec<i64> = data_windows
        .range(from..recent)
        .copied()
        .take(MAX_MARKERS as usize)
        .collect();
    let mut start = recent;
    while start + window_ms <= closed_ms && (starts.len() as i64) < MAX_MARKERS {
        starts.push(start);
        start += window_ms;
    }
    // Where the next call goes on from: the closed boundary, unless the cap stopped short.
    let through = if start + window_ms <= closed_ms {
        starts.last().map_or(from, |&s| s + window_ms)
    } else {
        closed_ms
    };
    let written = starts.len() as u64;
    let puts = starts.into_iter().map(|w| async move {
        let marker = Marker {
            window_start: rfc3339(w),
            window_end: rfc3339(w + window_ms),
            closed_through: rfc3339(closed_ms),
        };
        let body = serde_json::to_vec(&marker).map_err(|source| ManifestError::Serialize {
            path: marker_rel(w),
            source,
        })?;
        store.put(&marker_rel(w), Bytes::from(body)).await?;
        Ok::<(), ManifestError>(())
    });
    // Many windows can close at once (a first run over history): 16 puts in flight.
    futures::stream::iter(puts)
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let hint = serde_json::to_vec(&Through {
        through_ms: through,
    })
    .map_err(|source| ManifestError::Serialize {
        path: THROUGH.into(),
        source,
    })?;
    store.put(THROUGH, Bytes::from(hint)).await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    #[tokio::test]
    async fn markers_cover_recent_windows_and_older_ones_with_data_once() {
        let m = Manifest::new(
            Arc::new(InMemory::new()),
            object_store::path::Path::from("t"),
            10,
        );
        let h = 3_600_000;
        let data = BTreeSet::from([0, 5 * h, 2_999 * h]);
        // Nothing closed past the first window: nothing to mark.
        assert_eq!(sync(&m, h, 0, &data).await.unwrap(), 0);
        // A first closing over a long history: the 1,000 windows before the boundary, and
        // before them only the two holding data.
        assert_eq!(sync(&m, h, 3_000 * h, &data).await.unwrap(), 1_002);
        for w in [0, 5 * h, 2_000 * h, 2_999 * h] {
            assert!(
                m.store().get(&marker_rel(w)).await.unwrap().is_some(),
                "{w}"
            );
        }
        assert!(m.store().get(&marker_rel(h)).await.unwrap().is_none());
        assert!(m
            .store()
            .get(&marker_rel(3_000 * h))
            .await
            .unwrap()
            .is_none());
        // Again: nothing new. Two more windows closed: two markers.
        assert_eq!(sync(&m, h, 3_000 * h, &data).await.unwrap(), 0);
        assert_eq!(sync(&m, h, 3_002 * h, &data).await.unwrap(), 2);
        let body = m
            .store()
            .get(&marker_rel(3_001 * h))
            .await
            .unwrap()
            .unwrap();
        let marker: Marker = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (marker.window_start.as_str(), marker.window_end.as_str()),
            ("1970-05-06T01:00:00Z", "1970-05-06T02:00:00Z")
        );
    }
}
