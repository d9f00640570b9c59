//! The loader's buffers and decode worker, without a broker.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use rdkafka::Offset;

use crate::load::decoding::{DecodeJob, Decoding, DECODE_QUEUE};
use crate::load::partition::{PartState, Stop};
use crate::load::Loader;
use crate::record::decode::ChunkDecoder;
use crate::record::source::Assignment;

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
