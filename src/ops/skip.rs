//! `sluice skip`: accepting a retention gap.
//!
//! When Kafka deletes a partition's offsets (retention, `DeleteRecords`) before the table has
//! loaded them, the loader stops at the committed end and names the missing offsets: it never
//! skips them by itself (`auto.offset.reset=error`). An operator who accepts the loss records it
//! here: one `append` entry whose range for the partition runs from the committed end to `to`,
//! holds no record and lists every offset of it as `lost`. The loader then reads on from `to`;
//! `verify` lists the lost offsets. Only offsets Kafka no longer has can be
//! skipped: `to` may not pass the partition's first offset in Kafka now.

use crate::error::{LoadError, Result};
use crate::table::commit::{CommitError, Committer, Outcome, Proposal};
use crate::table::entry::{EntryKind, OffsetRange};

/// What `skip` recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub topic: String,
    pub partition: i32,
    /// The lost offsets, half-open.
    pub from: i64,
    pub to: i64,
    /// The manifest entry that records them.
    pub seq: u64,
}

/// Records offsets `[committed end, to)` of `topic`/`partition` as lost, given `kafka_start`,
/// the partition's first offset in Kafka now (its low watermark).
pub fn skip(
    committer: &Committer,
    topic: &str,
    partition: i32,
    to: i64,
    kafka_start: i64,
) -> Result<Skipped> {
    let refused = |message: String| LoadError::Refused { message };
    let (state, _) = committer.refresh()?;
    let end = state.partition(topic, partition).and_then(|p| p.end());
    let Some(from) = end else {
        return Err(refused(format!(
            "{topic}/{partition}: the table has loaded nothing of this partition, so nothing was skipped (the loader starts at its first offset in Kafka)"
        )));
    };
    if to <= from {
        return Err(refused(format!(
            "{topic}/{partition}: --to {to} is not past the committed end {from}"
        )));
    }
    if to > kafka_start {
        return Err(refused(format!(
            "{topic}/{partition}: offsets [{}, {to}) are still in Kafka (its first offset is {kafka_start}): load them; only [{from}, {kafka_start}) can be skipped",
            kafka_start.max(from)
        )));
    }
    let range = OffsetRange {
        records: Some(0),
        lost: vec![(from, to)],
        ..OffsetRange::new(topic, partition, from, to)
    };
    let proposal = Proposal {
        range,
        rows: 0,
        dead_letters: 0,
    };
    let (prepared, refusals) = committer.prepare(EntryKind::Append, vec![proposal], Vec::new())?;
    if let Some(r) = refusals.first() {
        return Err(refused(format!(
            "{r} (another writer moved on; nothing was recorded)"
        )));
    }
    let written = prepared.write(Vec::new(), Vec::new(), |_| {
        Err(CommitError::NotEncoded {
            path: "(an entry of lost offsets has no file)".into(),
        })
    })?;
    match written.publish()? {
        Outcome::Published { entry, .. } => {
            committer.settle(&entry);
            tracing::warn!(
                topic,
                partition,
                from,
                to,
                seq = entry.seq,
                "offsets recorded as lost (deleted from Kafka before they were loaded)"
            );
            Ok(Skipped {
                topic: topic.to_string(),
                partition,
                from,
                to,
                seq: entry.seq,
            })
        }
        Outcome::Refused { refused: r, .. } => Err(refused(format!(
            "{} (another writer moved on; nothing was recorded)",
            r.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}
