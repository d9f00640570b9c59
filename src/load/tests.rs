//! The loader's buffers and decode worker, without a broker.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use rdkafka::Offset;

use crate::load::committing::{should_pause, Batch, SealedPart};
use crate::load::decoding::{DecodeJob, Decoding, DECODE_QUEUE};
use crate::load::partition::{PartState, Stop};
use crate::load::Loader;
use crate::record::decode::ChunkDecoder;
use crate::record::source::Assignment;
use crate::table::state::Refusal;

/// A loader on an in-memory table with its decode thread's channels in the test's hands.
fn loader() -> (Loader, Receiver<DecodeJob>, Sender<DecodeJob>) {
    let job = crate::config::test_job("memory://").unwrap();
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let mut l = Loader::new(job, rt, Arc::new(AtomicBool::new(false))).unwrap();
    let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
    let (done_tx, done) = std::sync::mpsc::channel();
    l.decoding = Some(Decoding::new(jobs, done));
    (l, jobs_rx, done_tx)
}

fn fill(l: &mut Loader, from: i64, n: i64) {
    let buf = l.parts.get_mut("t", 0).unwrap();
    crate::ops::generate::generate(
        &crate::ops::generate::GenSpec {
            count: n as u64,
            first_id: from as u64,
            ..Default::default()
        },
        |r| {
            let o = buf.next;
            buf.keep(o);
            buf.raw.push(o, None, None, Some(&r.payload));
        },
    );
}

/// Decodes what the loader sent, as the decode thread would.
fn decode_sent(l: &Loader, jobs: &Receiver<DecodeJob>, done: &Sender<DecodeJob>) {
    let decoder = ChunkDecoder::new(l.job.schema.clone(), l.job.event_time.clone());
    let late = crate::load::decoding::LateRule {
        closed_through: l.closed_through.clone(),
        policy: l.job.closing.late_records,
    };
    while let Ok(mut job) = jobs.try_recv() {
        job.decode(&decoder, l.job.window, &late);
        done.send(job).unwrap();
    }
}

fn at(o: i64) -> PartState {
    PartState::new(Offset::Offset(o), Stop::Never)
}

#[test]
fn a_chunk_decoded_across_a_repositioning_is_dropped() {
    let (mut l, jobs, done) = loader();
    l.parts.insert("t", 0, at(0));
    fill(&mut l, 0, 100);
    l.send_chunk("t", 0).unwrap();
    assert_eq!(l.buffered().rows, 100, "in flight counts as buffered");
    // Fenced meanwhile: re-positioned at 40, where another writer's range ended.
    l.parts.get_mut("t", 0).unwrap().reset_to(40);
    decode_sent(&l, &jobs, &done);
    l.take_decoded(true).unwrap();
    let buf = l.parts.get("t", 0).unwrap();
    assert_eq!(buf.buffer.rows(), 0, "rows read before the re-positioning");
    assert_eq!((buf.from(), buf.next), (Some(40), 40));
    assert_eq!((l.buffered().bytes, l.buffered().rows), (0, 0));

    // Read again from 40: these are kept.
    fill(&mut l, 40, 60);
    l.send_chunk("t", 0).unwrap();
    decode_sent(&l, &jobs, &done);
    l.take_decoded(true).unwrap();
    let buf = l.parts.get("t", 0).unwrap();
    assert_eq!(buf.buffer.rows(), 60);
    let first = buf.buffer.windows().map(|(_, w)| w.first_offset).min();
    assert_eq!(first, Some(40));
}

#[test]
fn a_chunk_of_a_revoked_then_reassigned_partition_is_dropped() {
    let (mut l, jobs, done) = loader();
    l.parts.insert("t", 0, at(0));
    fill(&mut l, 0, 50);
    l.send_chunk("t", 0).unwrap();
    l.on_assignment(Assignment::Revoked(vec![("t".into(), 0)]))
        .unwrap();
    l.on_assignment(Assignment::Assigned(vec![(
        ("t".into(), 0),
        Offset::Offset(0),
    )]))
    .unwrap();
    decode_sent(&l, &jobs, &done);
    l.take_decoded(true).unwrap();
    assert_eq!(l.parts.get("t", 0).unwrap().buffer.rows(), 0);
    assert_eq!(l.decoding.as_ref().unwrap().in_flight, 0);
}

#[test]
fn a_failed_rebalance_is_a_rebalance_error_not_a_corrupt_manifest() {
    let (mut l, _, _) = loader();
    let err = l
        .on_assignment(Assignment::Failed("lookup timed out".into()))
        .unwrap_err();
    assert!(
        matches!(err, crate::error::LoadError::Rebalance { .. }),
        "{err}"
    );
}

/// The committer thread's side, on the loader's table.
fn worker(l: &Loader) -> crate::load::committing::Worker {
    crate::load::committing::Worker {
        committer: l.committer.clone(),
        job: l.job.clone(),
        run: crate::load::Run::Continuous,
        props: l.props.clone(),
    }
}

/// Reads offsets `[from, from + n)` of t/0 and decodes them into the partition's buffer.
fn decoded(
    l: &mut Loader,
    jobs: &Receiver<DecodeJob>,
    done: &Sender<DecodeJob>,
    from: i64,
    n: i64,
) {
    fill(l, from, n);
    l.send_chunk("t", 0).unwrap();
    decode_sent(l, jobs, done);
    l.take_decoded(true).unwrap();
}

fn batch(parts: Vec<SealedPart>) -> Batch {
    Batch {
        parts,
        watermarks: Vec::new(),
        started: std::time::Instant::now(),
    }
}

#[test]
fn sealed_ranges_commit_on_the_committer_thread_while_the_partition_reads_on() {
    let (mut l, jobs, done) = loader();
    l.parts.insert("t", 0, at(0));
    decoded(&mut l, &jobs, &done, 0, 100);
    let generation = l.parts.get("t", 0).unwrap().generation;
    let first = l.seal(&[("t".into(), 0)]);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].range.from, first[0].range.to), (0, 100));
    assert_eq!(first[0].generation, generation);
    // The partition reads on from the sealed end, into fresh buffers, in the same generation.
    let buf = l.parts.get("t", 0).unwrap();
    assert_eq!(
        (buf.from(), buf.next, buf.buffer.rows()),
        (Some(100), 100, 0)
    );
    assert_eq!(buf.generation, generation);

    let w = worker(&l);
    let (batches, batches_rx) = std::sync::mpsc::channel();
    let (finished_tx, finished) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| w.serve(batches_rx, finished_tx));
        batches.send(batch(first)).unwrap();
        // Meanwhile the poll thread reads and decodes the next records.
        decoded(&mut l, &jobs, &done, 100, 50);
        let f = finished.recv().unwrap();
        assert!(f.error.is_none(), "{:?}", f.error);
        assert!(f.refused.is_empty(), "{:?}", f.refused);
        let e = f.entry.unwrap();
        assert_eq!(e.seq, 1);
        assert_eq!((e.ranges[0].from, e.ranges[0].to), (0, 100));
        assert_eq!(e.files.iter().map(|f| f.rows).sum::<u64>(), 100);

        let second = l.seal(&[("t".into(), 0)]);
        assert_eq!((second[0].range.from, second[0].range.to), (100, 150));
        batches.send(batch(second)).unwrap();
        let e = finished.recv().unwrap().entry.unwrap();
        assert_eq!(e.seq, 2);
        assert_eq!(e.files.iter().map(|f| f.rows).sum::<u64>(), 50);
        drop(batches);
    });
    let state = l.committer.snapshot();
    let p = state.partition("t", 0).unwrap();
    assert_eq!((p.ranges.clone(), p.rows), (vec![(0, 150)], 150));
}

#[test]
fn a_sealed_range_another_writer_committed_first_is_refused_as_fenced() {
    use crate::table::commit::{Committer, Encoded, Outcome, Proposal};
    use crate::table::entry::{test_file, EntryKind, OffsetRange};
    let (mut l, jobs, done) = loader();
    l.parts.insert("t", 0, at(0));
    decoded(&mut l, &jobs, &done, 0, 100);
    let sealed = l.seal(&[("t".into(), 0)]);
    // Another writer (a loader the group gave t/0 meanwhile) commits [0, 40) first.
    let other = Committer::open(
        l.committer.manifest().clone(),
        l.committer.runtime(),
        "other".into(),
    )
    .unwrap();
    let range = OffsetRange {
        records: Some(40),
        ..OffsetRange::new("t", 0, 0, 40)
    };
    let proposal = Proposal {
        range: range.clone(),
        rows: 40,
        dead_letters: 0,
    };
    let (prepared, _) = other
        .prepare(EntryKind::Append, vec![proposal], vec![])
        .unwrap();
    let file = test_file(&range, "d");
    let written = prepared
        .write(vec![file], vec![], |_| Ok(Encoded::new(b"x".to_vec(), 40)))
        .unwrap();
    assert!(matches!(
        written.publish().unwrap(),
        Outcome::Published { .. }
    ));

    let f = worker(&l).commit(batch(sealed));
    assert!(f.error.is_none(), "{:?}", f.error);
    assert!(f.entry.is_none(), "published over another writer's range");
    assert!(
        matches!(&f.refused[..], [Refusal::Fenced(x)] if x.committed_end == Some(40)),
        "{:?}",
        f.refused
    );
}

#[test]
fn partitions_pause_only_while_a_commit_is_in_flight_and_the_budget_is_reached() {
    let policy = crate::config::CommitPolicy {
        interval: std::time::Duration::from_secs(1),
        max_buffered_bytes: 1000,
        max_rows: 100,
    };
    let held = |bytes, rows| crate::config::Buffered {
        bytes,
        rows,
        ranges: true,
    };
    assert!(
        !should_pause(false, held(5000, 500), &policy),
        "nothing in flight"
    );
    assert!(
        !should_pause(true, held(999, 99), &policy),
        "under the budget"
    );
    assert!(
        should_pause(true, held(1000, 0), &policy),
        "bytes at the budget"
    );
    assert!(
        should_pause(true, held(0, 100), &policy),
        "rows at the budget"
    );
}

#[test]
fn the_poll_thread_pauses_its_partitions_at_the_budget_and_resumes_when_the_commit_is_back() {
    use rdkafka::consumer::Consumer;
    use rdkafka::TopicPartitionList;
    let (mut l, jobs, done) = loader();
    l.job.commit.max_rows = 50;
    // A consumer that never reaches a broker: assigning and pausing are local.
    let ctx = crate::record::source::LoaderContext::new(
        Box::new(|parts: &[(String, i32)]| Ok(vec![Offset::Beginning; parts.len()])),
        "127.0.0.1:1",
    );
    let consumer = crate::record::source::create_consumer(l.job.source(), ctx).unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset("t", 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&list).unwrap();
    l.parts.insert("t", 0, at(0));
    decoded(&mut l, &jobs, &done, 0, 100);

    // Over the budget, nothing in flight: no pause (the next commit takes the rows).
    l.flow(&consumer);
    assert!(!l.paused);
    // A commit in flight and the budget reached: paused.
    l.in_flight = Some(crate::load::committing::InFlight::new(vec![]));
    l.flow(&consumer);
    assert!(l.paused);
    assert_eq!(
        l.metrics.pauses.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    l.flow(&consumer);
    assert_eq!(
        l.metrics.pauses.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "paused once"
    );
    // The commit is back: resumed.
    l.in_flight = None;
    l.flow(&consumer);
    assert!(!l.paused);
}
