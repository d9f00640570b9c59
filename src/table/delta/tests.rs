//! The Delta projection on an in-memory store: versions follow entries, any writer may write a
//! missing one, a foreign version stops the projection, checkpoints equal the replayed log.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;

use super::action::{self, Action};
use super::*;
use crate::table::commit::{Committer, Outcome, Proposal};
use crate::table::entry::{test_file, EntryKind, OffsetRange};

fn schema() -> SchemaDef {
    SchemaDef {
        fingerprint: "fp".into(),
        layout: "date={date}/hour={hour}".into(),
        columns: r#"{"type":"struct","fields":[]}"#.into(),
        partition_columns: vec!["date".into(), "hour".into()],
        features: vec![],
    }
}

fn settings(every: u64) -> DeltaSettings {
    DeltaSettings {
        name: "t".into(),
        schema: schema(),
        checkpoint_every: every,
        retention: Duration::from_secs(3600),
    }
}

struct Table {
    rt: Arc<tokio::runtime::Runtime>,
    store: TableStore,
}

impl Table {
    fn new() -> Self {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        let store = TableStore::new(Arc::new(InMemory::new()), Path::from("t"));
        Table { rt, store }
    }

    fn writer(&self, every: u64) -> Committer {
        let m = Manifest::on(self.store.clone(), 1000);
        Committer::open(m, self.rt.clone(), "w".into())
            .unwrap()
            .with_table(
                schema(),
                Some(DeltaLog::new(self.store.clone(), settings(every))),
            )
    }

    /// Publishes one file per range `(partition, from, to)` of topic `t` in window hour 13.
    fn publish(
        &self,
        c: &Committer,
        kind: EntryKind,
        ranges: &[(i32, i64, i64)],
        removed: Vec<String>,
    ) -> Entry {
        let proposals = ranges
            .iter()
            .map(|&(p, from, to)| Proposal {
                range: OffsetRange {
                    records: Some((to - from) as u64),
                    ..OffsetRange::new("t", p, from, to)
                },
                rows: (to - from) as u64,
                dead_letters: 0,
            })
            .collect();
        let (prepared, refused) = c.prepare(kind, proposals, removed).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        let files: Vec<_> = prepared
            .ranges()
            .iter()
            .map(|r| test_file(r, "date=2026-11-25/hour=13"))
            .collect();
        let rows: Vec<u64> = files.iter().map(|f| f.rows).collect();
        let w = prepared
            .write(files, vec![], |i| {
                Ok(crate::table::commit::Encoded::new(
                    b"rows".to_vec(),
                    rows[i],
                ))
            })
            .unwrap();
        match w.publish().unwrap() {
            Outcome::Published { entry, .. } => {
                c.settle(&entry);
                *entry
            }
            other => panic!("{other:?}"),
        }
    }

    fn commit(&self, v: u64) -> Option<Vec<Action>> {
        self.rt.block_on(read_commit(&self.store, v)).unwrap()
    }

    fn versions(&self) -> (Vec<u64>, Vec<u64>) {
        self.rt.block_on(list_versions(&self.store)).unwrap()
    }
}

fn adds(actions: &[Action]) -> Vec<&action::Add> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(x) => Some(x),
            _ => None,
        })
        .collect()
}

#[test]
fn every_entry_is_one_version_and_the_projection_is_pure() {
    let t = Table::new();
    let c = t.writer(100);
    let e1 = t.publish(&c, EntryKind::Append, &[(0, 0, 10), (1, 0, 5)], vec![]);
    let e2 = t.publish(&c, EntryKind::Append, &[(0, 10, 20)], vec![]);
    assert_eq!(t.versions().0, vec![0, 1]);
    let v0 = t.commit(0).unwrap();
    // Version 0: commitInfo naming entry 1, protocol, metaData, a txn per partition, adds.
    assert_eq!(action::sluice_info(&v0).unwrap().commit_id, e1.commit_id);
    assert!(v0
        .iter()
        .any(|a| matches!(a, Action::Protocol(p) if p.min_reader_version == 1)));
    let meta = v0
        .iter()
        .find_map(|a| match a {
            Action::MetaData(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(meta.partition_columns, vec!["date", "hour"]);
    let txns: Vec<_> = v0
        .iter()
        .filter_map(|a| match a {
            Action::Txn(x) => Some((x.app_id.clone(), x.version)),
            _ => None,
        })
        .collect();
    assert_eq!(
        txns,
        vec![
            ("sluice:t:t:0".to_string(), 10),
            ("sluice:t:t:1".to_string(), 5)
        ]
    );
    let a = adds(&v0);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].partition_values["hour"].as_deref(), Some("13"));
    assert_eq!(a[0].modification_time, e1.committed_at_ms);
    assert!(a[0].stats.as_deref().unwrap().contains("\"numRecords\":10"));
    // Version 1 carries no metadata (the schema did not change) and is what any writer would write.
    let v1 = t.commit(1).unwrap();
    assert!(!v1.iter().any(|a| matches!(a, Action::MetaData(_))));
    let id = action::table_id(&e1.commit_id);
    let table = action::Table {
        id,
        name: "t".into(),
        fallback: schema(),
        configuration: configuration(Duration::from_secs(3600)),
    };
    assert_eq!(action::project(&e2, &table), v1);
    // The manifest recorded the schema in the first entry only.
    assert!(e1.schema.is_some() && e2.schema.is_none());
}

#[test]
fn a_missing_version_is_written_by_the_next_writer_and_a_present_one_is_recognised() {
    let t = Table::new();
    // A writer without a Delta log (a crash between the entry and its version, in effect).
    let plain = Committer::open(
        Manifest::on(t.store.clone(), 1000),
        t.rt.clone(),
        "p".into(),
    )
    .unwrap()
    .with_table(schema(), None);
    t.publish(&plain, EntryKind::Append, &[(0, 0, 10)], vec![]);
    t.publish(&plain, EntryKind::Append, &[(0, 10, 20)], vec![]);
    assert!(t.versions().0.is_empty());
    // A writer that opens the table brings the log up to the manifest...
    let c = t.writer(100);
    assert_eq!(t.versions().0, vec![0, 1]);
    // ...and one more, racing on versions already there, writes nothing and errs not.
    let again = t.writer(100);
    assert_eq!(again.delta_sync(None).unwrap(), 0);
    t.publish(&c, EntryKind::Append, &[(0, 20, 30)], vec![]);
    assert_eq!(again.delta_sync(None).unwrap(), 0);
    assert_eq!(t.versions().0, vec![0, 1, 2]);
}

#[test]
fn a_version_another_writer_put_there_stops_the_projection_and_names_it() {
    let t = Table::new();
    let c = t.writer(100);
    t.publish(&c, EntryKind::Append, &[(0, 0, 10)], vec![]);
    // Spark's OPTIMIZE takes version 1.
    let foreign = r#"{"commitInfo":{"timestamp":1,"operation":"OPTIMIZE"}}"#;
    t.rt.block_on(t.store.put_new(&commit_rel(1), bytes::Bytes::from(foreign)))
        .unwrap();
    let other = t.writer(100);
    t.publish(&other, EntryKind::Append, &[(0, 10, 20)], vec![]);
    match other.delta_sync(None) {
        Err(DeltaError::Stopped(why)) => assert!(
            why.contains("Delta version 1") && why.contains("OPTIMIZE"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    // The load went on: the entry is in the manifest; the foreign version was not overwritten.
    assert_eq!(t.rt.block_on(c.manifest().load()).unwrap().seq, 2);
    assert!(action::sluice_info(&t.commit(1).unwrap()).is_none());
    // A fresh writer reports the foreign version itself.
    let fresh = Committer::open(
        Manifest::on(t.store.clone(), 1000),
        t.rt.clone(),
        "f".into(),
    )
    .unwrap();
    let log = DeltaLog::new(t.store.clone(), settings(100));
    let err =
        t.rt.block_on(log.sync(fresh.manifest(), 2, None))
            .unwrap_err();
    assert!(
        matches!(
            err,
            DeltaError::Foreign {
                version: 1,
                seq: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn checkpoints_equal_the_replayed_log_and_keep_tombstones_within_retention() {
    let t = Table::new();
    let c = t.writer(3);
    let mut entries = Vec::new();
    for i in 0..4 {
        entries.push(t.publish(&c, EntryKind::Append, &[(0, i * 10, i * 10 + 10)], vec![]));
    }
    // Replace the first entry's file: version 4 removes it.
    let old = entries[0].files[0].path.clone();
    t.publish(&c, EntryKind::Replace, &[(0, 0, 10)], vec![old.clone()]);
    for i in 4..7 {
        t.publish(&c, EntryKind::Append, &[(0, i * 10, i * 10 + 10)], vec![]);
    }
    let (commits, checkpoints) = t.versions();
    assert_eq!(commits, (0..=7).collect::<Vec<_>>());
    assert_eq!(checkpoints, vec![3, 6]);
    for &cp in &checkpoints {
        let from_checkpoint =
            t.rt.block_on(read_checkpoint(&t.store, cp))
                .unwrap()
                .unwrap();
        let mut replay = Snapshot::default();
        for v in 0..=cp {
            replay.apply(v, &t.commit(v).unwrap());
        }
        assert_eq!(
            from_checkpoint.files.keys().collect::<Vec<_>>(),
            replay.files.keys().collect::<Vec<_>>()
        );
        assert_eq!(from_checkpoint.txns, replay.txns);
        assert_eq!(from_checkpoint.metadata, replay.metadata);
        assert_eq!(from_checkpoint.protocol, replay.protocol);
        assert!(from_checkpoint.files.values().all(|a| !a.data_change));
        assert_eq!(
            from_checkpoint.files.len(),
            7.min(cp as usize + 1) - usize::from(cp >= 4)
        );
    }
    let at6 =
        t.rt.block_on(read_checkpoint(&t.store, 6))
            .unwrap()
            .unwrap();
    assert!(
        at6.removed.contains_key(&old),
        "the tombstone is within retention"
    );
    assert!(!at6.files.contains_key(&old));
    let hint =
        t.rt.block_on(t.store.get(DELTA_LAST_CHECKPOINT))
            .unwrap()
            .unwrap();
    assert!(String::from_utf8_lossy(&hint).contains("\"version\":6"));
    // A reader's load (checkpoint + later commits) equals the full replay.
    let loaded = t.rt.block_on(load_snapshot(&t.store, 7)).unwrap();
    assert_eq!(loaded.files.len(), 7);
}

/// A writer catching up on many versions (a table older than its log, a log moved aside)
/// writes one checkpoint, the last one due, not one per `checkpoint_every`; the latest version
/// and a reader's snapshot are found from `_last_checkpoint`, stale or unreadable as it may be.
#[test]
fn catching_up_writes_the_last_checkpoint_due_and_the_hint_finds_the_tail() {
    let t = Table::new();
    let plain = Committer::open(
        Manifest::on(t.store.clone(), 1000),
        t.rt.clone(),
        "w".into(),
    )
    .unwrap();
    for i in 0..23 {
        t.publish(
            &plain,
            EntryKind::Append,
            &[(0, i * 10, i * 10 + 10)],
            vec![],
        );
    }
    assert_eq!(t.versions(), (vec![], vec![]), "no log without a DeltaLog");
    let c = t.writer(5);
    let (commits, checkpoints) = t.versions();
    assert_eq!(commits, (0..23).collect::<Vec<_>>());
    assert_eq!(checkpoints, vec![20], "one checkpoint, the last due");
    let latest = |t: &Table| t.rt.block_on(latest_version(&t.store)).unwrap();
    assert_eq!(latest(&t), Some(22));
    let replay = t.rt.block_on(load_snapshot(&t.store, 22)).unwrap();
    assert_eq!(replay.files.len(), 23);
    // From here on, one version per commit, checkpoints where due.
    for i in 23..26 {
        t.publish(&c, EntryKind::Append, &[(0, i * 10, i * 10 + 10)], vec![]);
    }
    assert_eq!(t.versions().1, vec![20, 25]);
    assert_eq!(latest(&t), Some(25));
    // A stale hint (a racing writer's older checkpoint) and an unreadable one still find the
    // latest version and the same snapshot.
    for hint in [r#"{"version":20,"size":30}"#, "not json"] {
        t.rt.block_on(
            t.store
                .put(DELTA_LAST_CHECKPOINT, bytes::Bytes::from(hint.to_string())),
        )
        .unwrap();
        assert_eq!(latest(&t), Some(25), "{hint}");
        let s = t.rt.block_on(load_snapshot(&t.store, 24)).unwrap();
        assert_eq!(s.files.len(), 25, "{hint}");
        assert_eq!(s.version, Some(24));
    }
    // A snapshot older than the hinted checkpoint replays from an earlier one (or from 0).
    let s = t.rt.block_on(load_snapshot(&t.store, 12)).unwrap();
    assert_eq!((s.files.len(), s.version), (13, Some(12)));
}

#[test]
fn paths_are_percent_encoded_and_partition_values_come_from_the_folders() {
    assert_eq!(
        action::encode_path("d=2026-11-25/h=01:00/a b.parquet"),
        "d=2026-11-25/h=01%3A00/a%20b.parquet"
    );
    assert_eq!(
        action::decode_path("d=2026-11-25/h=01%3A00/a%20b.parquet"),
        "d=2026-11-25/h=01:00/a b.parquet"
    );
    let pv = action::partition_values("date=2026-11-25/hour=07/part-x.parquet");
    assert_eq!(pv["date"].as_deref(), Some("2026-11-25"));
    assert_eq!(pv["hour"].as_deref(), Some("07"));
    assert!(action::partition_values("part-x.parquet").is_empty());
}
