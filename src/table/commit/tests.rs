//! Commit races, lost answers and fencing, on an in-memory store with scripted faults: no broker.

use std::fmt;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::*;
use crate::error::Fenced;
use crate::table::store::{Retry, TableStore};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// Another writer's object lands at the path first (between our re-read and our put).
    Taken(Bytes),
    /// A transient error; nothing written.
    Before,
    /// Written, then a transient error (the answer is lost).
    After,
    /// A permanent error (permission denied); nothing written.
    Denied,
    /// "Already there" for a create-only put, though nothing is (a store that keeps
    /// answering that the name is taken).
    Conflict,
}

/// An in-memory store whose next puts to matching paths fail as scripted.
#[derive(Debug, Default)]
struct Scripted {
    inner: InMemory,
    faults: Mutex<Vec<(&'static str, Fault)>>,
}

impl Scripted {
    fn fail(&self, path_contains: &'static str, fault: Fault) {
        self.faults.lock().unwrap().push((path_contains, fault));
    }

    fn take(&self, location: &Path) -> Option<Fault> {
        let mut f = self.faults.lock().unwrap();
        let i = f.iter().position(|(p, _)| location.as_ref().contains(p))?;
        Some(f.remove(i).1)
    }
}

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scripted")
    }
}

fn transient() -> object_store::Error {
    object_store::Error::Generic {
        store: "scripted",
        source: "connection reset".into(),
    }
}

#[async_trait]
impl ObjectStore for Scripted {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.take(location) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::Taken(theirs)) => {
                self.inner
                    .put_opts(location, theirs.into(), PutOptions::default())
                    .await?;
                self.inner.put_opts(location, payload, opts).await
            }
            Some(Fault::Before) => Err(transient()),
            Some(Fault::After) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(transient())
            }
            Some(Fault::Conflict) => Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "taken".into(),
            }),
            Some(Fault::Denied) => Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "denied".into(),
            }),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn committer(store: &Arc<Scripted>, name: &str, attempts: u32) -> Committer {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let store = TableStore::new(store.clone(), Path::from("tables/t")).with_retry(Retry {
        attempts,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    });
    Committer::open(Manifest::on(store, 100), rt, name.into()).unwrap()
}

/// Ranges `(partition, from, to)` of topic `t`, each offset a row.
fn proposals(ranges: &[(i32, i64, i64)]) -> Vec<Proposal> {
    ranges
        .iter()
        .map(|&(p, from, to)| Proposal {
            range: OffsetRange {
                records: Some((to - from) as u64),
                ..OffsetRange::new("t", p, from, to)
            },
            rows: (to - from) as u64,
            dead_letters: 0,
        })
        .collect()
}

fn file(r: &OffsetRange) -> DataFile {
    crate::table::entry::test_file(r, "data")
}

/// Prepares and writes one file per accepted range.
fn written<'c>(
    c: &'c Committer,
    kind: EntryKind,
    ranges: &[(i32, i64, i64)],
) -> (Written<'c>, Vec<Refusal>) {
    let (prepared, refused) = c.prepare(kind, proposals(ranges), vec![]).unwrap();
    let files: Vec<DataFile> = prepared.ranges().iter().map(file).collect();
    let rows: Vec<u64> = files.iter().map(|f| f.rows).collect();
    let w = prepared
        .write(files, vec![], |i| {
            Ok(Encoded::new(format!("body {i}").into_bytes(), rows[i]))
        })
        .unwrap();
    (w, refused)
}

fn log_len(c: &Committer) -> u64 {
    c.rt.block_on(c.manifest.load()).unwrap().seq
}

fn exists(c: &Committer, rel: &str) -> bool {
    c.rt.block_on(c.manifest.store().head(rel))
        .unwrap()
        .is_some()
}

fn published(o: Outcome) -> (Entry, Vec<Refusal>, u32) {
    match o {
        Outcome::Published {
            entry,
            refused,
            conflicts,
        } => (*entry, refused, conflicts),
        other => panic!("expected a publish, got {other:?}"),
    }
}

#[test]
fn writers_of_different_partitions_both_publish_the_loser_after_re_reading() {
    let store = Arc::new(Scripted::default());
    let (a, b) = (committer(&store, "a", 3), committer(&store, "b", 3));
    let (wa, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    let (wb, _) = written(&b, EntryKind::Append, &[(1, 0, 5)]);
    let (ea, _, ca) = published(wa.publish().unwrap());
    let (eb, refused, cb) = published(wb.publish().unwrap());
    assert_eq!((ea.seq, ca), (1, 0));
    // b's state was read (at prepare) before a published: its first put finds 1 taken, then
    // it re-reads and takes 2.
    assert_eq!((eb.seq, cb), (2, 1), "b lost entry 1 and took entry 2");
    assert!(refused.is_empty());

    // Another writer lands entry 3 between b's re-read and its put: the put finds it taken,
    // b re-reads and publishes at 4.
    let mut theirs = ea.clone();
    theirs.seq = 3;
    theirs.commit_id = "theirs".into();
    theirs.ranges = vec![OffsetRange {
        records: Some(0),
        ..OffsetRange::new("t", 9, 0, 0)
    }];
    theirs.files.clear();
    let body = Bytes::from(serde_json::to_vec(&theirs).unwrap());
    store.fail("_sluice/log/00000000000000000003.json", Fault::Taken(body));
    let (wb, _) = written(&b, EntryKind::Append, &[(1, 5, 8)]);
    let (eb, _, cb) = published(wb.publish().unwrap());
    assert_eq!((eb.seq, cb), (4, 1), "b lost entry 3 and took entry 4");
    assert_eq!(log_len(&a), 4);
    let state = a.rt.block_on(a.manifest.load()).unwrap();
    assert_eq!(state.partition("t", 1).unwrap().ranges, vec![(0, 8)]);
}

#[test]
fn a_writer_fenced_after_writing_publishes_nothing_and_deletes_its_files() {
    let store = Arc::new(Scripted::default());
    let (a, b) = (committer(&store, "a", 3), committer(&store, "b", 3));
    let (wa, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    // b read the same state: it too thinks partition 0 starts at 0, and has partition 1.
    let (wb, _) = written(&b, EntryKind::Append, &[(0, 0, 12), (1, 0, 4)]);
    let b_files: Vec<String> = wb.draft().files.iter().map(|f| f.path.clone()).collect();
    published(wa.publish().unwrap());
    let (eb, refused, _) = published(wb.publish().unwrap());
    assert_eq!(
        refused,
        vec![Refusal::Fenced(Fenced {
            topic: "t".into(),
            partition: 0,
            from: 0,
            committed_end: Some(10),
        })]
    );
    assert_eq!(eb.ranges.len(), 1, "only partition 1 is published");
    assert_eq!((eb.ranges[0].partition, eb.seq), (1, 2));
    assert!(
        !exists(&b, &b_files[0]),
        "the fenced partition's file is deleted"
    );
    assert!(exists(&b, &b_files[1]));
    let state = b.rt.block_on(b.manifest.load()).unwrap();
    assert_eq!(state.partition("t", 0).unwrap().ranges, vec![(0, 10)]);

    // Fenced at prepare: nothing is even written for it.
    let (prepared, refused) = b
        .prepare(EntryKind::Append, proposals(&[(0, 0, 12)]), vec![])
        .unwrap();
    assert!(prepared.ranges().is_empty());
    assert!(matches!(
        refused[..],
        [Refusal::Fenced(Fenced {
            committed_end: Some(10),
            ..
        })]
    ));
}

#[test]
fn a_put_whose_answer_was_lost_is_found_in_the_log_and_published_once() {
    let store = Arc::new(Scripted::default());
    // Retried by the store: the second attempt finds the object its first attempt wrote.
    let a = committer(&store, "a", 3);
    store.fail("_sluice/log/", Fault::After);
    let (w, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    let (e, _, conflicts) = published(w.publish().unwrap());
    assert_eq!((e.seq, conflicts), (1, 0), "our own entry is no conflict");
    assert_eq!(log_len(&a), 1, "published once, not again at entry 2");

    // Not retried by the store: the error comes back, and the log still says it landed.
    let b = committer(&store, "b", 1);
    store.fail("_sluice/log/", Fault::After);
    let (w, _) = written(&b, EntryKind::Append, &[(0, 10, 20)]);
    let id = w.draft().commit_id.clone();
    let (e, _, _) = published(w.publish().unwrap());
    assert_eq!(e.seq, 2);
    let found = b.rt.block_on(b.manifest.read_entry(2)).unwrap().unwrap();
    assert_eq!(found.commit_id, id);
    assert_eq!(log_len(&b), 2);
}

#[test]
fn a_put_that_failed_is_retried_and_one_that_cannot_succeed_publishes_nothing() {
    let store = Arc::new(Scripted::default());
    let a = committer(&store, "a", 3);
    store.fail("_sluice/log/", Fault::Before);
    store.fail("data/", Fault::Before);
    let (w, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    assert_eq!(published(w.publish().unwrap()).0.seq, 1);

    // Permission denied is not retried: the error says so and the log is unchanged.
    store.fail("_sluice/log/", Fault::Denied);
    let (w, _) = written(&a, EntryKind::Append, &[(0, 10, 20)]);
    let err = w.publish().unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    assert_eq!(log_len(&a), 1);
    assert!(store.faults.lock().unwrap().is_empty());
}

#[test]
fn racing_writers_of_one_partition_publish_it_exactly_once() {
    let store = Arc::new(Scripted::default());
    for round in 0..5i64 {
        let from = round * 10;
        let racers: Vec<Committer> = (0..6)
            .map(|i| committer(&store, &format!("w{i}"), 3))
            .collect();
        let ready: Vec<Written<'_>> = racers
            .iter()
            .map(|c| {
                written(
                    c,
                    EntryKind::Append,
                    &[(0, from, from + 10), (1 + round as i32, 0, 1)],
                )
                .0
            })
            .collect();
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = racers
                .iter()
                .zip(ready)
                .map(|(_, w)| s.spawn(move || w.publish().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Published { entry, .. } if entry.ranges.iter().any(|r| r.partition == 0)))
            .count();
        assert_eq!(
            winners, 1,
            "round {round}: partition 0 published {winners} times"
        );
        let state = racers[0].rt.block_on(racers[0].manifest.load()).unwrap();
        assert_eq!(
            state.partition("t", 0).unwrap().ranges,
            vec![(0, from + 10)]
        );
        // Partition 1 + round was in every racer's entry too: it also lands once.
        assert_eq!(
            state.partition("t", 1 + round as i32).unwrap().ranges,
            vec![(0, 1)]
        );
        assert_eq!(
            state.files.iter().filter(|f| f.partition == 0).count() as i64,
            round + 1
        );
    }
}

#[test]
fn ranges_that_do_not_add_up_or_overlap_loaded_offsets_are_refused_before_writing() {
    let store = Arc::new(Scripted::default());
    let a = committer(&store, "a", 3);
    let (w, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    published(w.publish().unwrap());

    let mut short = proposals(&[(1, 0, 10)]);
    short[0].rows = 9; // a record lost between poll and file
    let (prepared, refused) = a.prepare(EntryKind::Append, short, vec![]).unwrap();
    assert!(prepared.ranges().is_empty());
    assert!(matches!(refused[..], [Refusal::Unaccounted(_)]));

    let (prepared, refused) = a
        .prepare(
            EntryKind::Backfill,
            proposals(&[(0, 5, 15), (2, 0, 3)]),
            vec![],
        )
        .unwrap();
    assert_eq!(prepared.ranges().len(), 1);
    assert!(matches!(
        &refused[..],
        [Refusal::Overlap {
            from: 5,
            to: 10,
            ..
        }]
    ));

    // A file of a partition that was not prepared is refused, not published.
    let err = prepared
        .write(vec![file(&OffsetRange::new("t", 7, 0, 1))], vec![], |_| {
            Ok(Encoded::new(Vec::new(), 1))
        })
        .unwrap_err();
    assert!(err.to_string().contains("no prepared range"), "{err}");
}

#[test]
fn a_replace_whose_files_were_replaced_meanwhile_publishes_nothing() {
    let store = Arc::new(Scripted::default());
    let a = committer(&store, "a", 3);
    let (w, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    let (first, _, _) = published(w.publish().unwrap());
    let old = vec![first.files[0].path.clone()];
    fn replace<'c>(c: &'c Committer, old: &[String]) -> Written<'c> {
        let (prepared, refused) = c
            .prepare(EntryKind::Replace, proposals(&[(0, 0, 10)]), old.to_vec())
            .unwrap();
        assert!(refused.is_empty());
        let files = prepared.ranges().iter().map(file).collect();
        prepared
            .write(files, vec![], |_| Ok(Encoded::new(b"new".to_vec(), 10)))
            .unwrap()
    }
    let b = committer(&store, "b", 3);
    let (wa, wb) = (replace(&a, &old), replace(&b, &old));
    let b_new = wb.draft().files[0].path.clone();
    let (e, _, _) = published(wa.publish().unwrap());
    assert_eq!((e.seq, e.removed.clone()), (2, old.clone()));
    match wb.publish().unwrap() {
        Outcome::Refused { refused, .. } => {
            assert!(
                matches!(refused[..], [Refusal::Stale { .. }]),
                "{refused:?}"
            )
        }
        other => panic!("a second replace of the same files published: {other:?}"),
    }
    assert!(!exists(&b, &b_new));
    assert_eq!(log_len(&b), 2);
}

#[test]
fn dead_letters_are_uploaded_and_counted_in_the_range() {
    let store = Arc::new(Scripted::default());
    let a = committer(&store, "a", 3);
    let mut p = proposals(&[(0, 0, 10)]);
    p[0].rows = 8;
    p[0].dead_letters = 2;
    let (prepared, refused) = a.prepare(EntryKind::Append, p, vec![]).unwrap();
    assert!(refused.is_empty());
    let mut data = file(&prepared.ranges()[0]);
    data.rows = 8;
    let dead = DeadLetterFile {
        path: "_sluice/dead_letters/t-0/x.parquet".into(),
        bytes: 0,
        topic: "t".into(),
        partition: 0,
        offsets: vec![3, 7],
    };
    store.fail("dead_letters", Fault::Before); // retried
    let w = prepared
        .write(vec![data], vec![(dead, b"dead body".to_vec())], |_| {
            Ok(Encoded::new(b"rows".to_vec(), 8))
        })
        .unwrap();
    let (e, _, _) = published(w.publish().unwrap());
    assert_eq!(e.dead_letters[0].bytes, 9);
    assert_eq!(e.files[0].bytes, 4);
    assert!(exists(&a, "_sluice/dead_letters/t-0/x.parquet"));
    assert_eq!(e.unaccounted(), vec![]);
}

#[test]
fn a_file_whose_rows_differ_from_its_range_is_not_uploaded() {
    let store = Arc::new(Scripted::default());
    let a = committer(&store, "a", 3);
    let (prepared, _) = a
        .prepare(EntryKind::Append, proposals(&[(0, 0, 10)]), vec![])
        .unwrap();
    let files: Vec<DataFile> = prepared.ranges().iter().map(file).collect();
    let path = files[0].path.clone();
    // The buffers said 10 rows; the encoded file holds 9 (a part left out).
    let err = prepared
        .write(files, vec![], |_| Ok(Encoded::new(b"short".to_vec(), 9)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::Rows {
                encoded: 9,
                expected: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(!exists(&a, &path), "a short file was uploaded");
    assert_eq!(log_len(&a), 0);
}

#[test]
fn publish_gives_up_after_a_bounded_number_of_lost_races() {
    let store = Arc::new(Scripted::default());
    let a = committer(&store, "a", 3).with_max_races(4);
    let (w, _) = written(&a, EntryKind::Append, &[(0, 0, 10)]);
    let path = w.draft().files[0].path.clone();
    // Every put of the next entry finds it taken by an entry of no partition of ours, and
    // the re-read never shows it: a store that keeps answering "taken".
    for _ in 0..5 {
        store.fail("00000000000000000001.json", Fault::Conflict);
    }
    let err = w.publish().unwrap_err();
    assert!(matches!(err, CommitError::Contended { .. }), "{err}");
    assert!(!exists(&a, &path), "the files of a commit given up stay");
}
