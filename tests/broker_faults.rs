//! Broker faults: librdkafka's mock cluster with request errors on fetches and metadata and the
//! broker going down and up; a real Apache Kafka broker SIGKILLed and restarted on its log
//! directory, then SIGSTOPped past the loaders' session timeout, mid-load (the loaders recover
//! by themselves, losing and duplicating nothing); and offsets deleted by retention before they
//! were loaded (the loader stops naming them; `sluice skip` records the loss).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use sluice::load::{Loader, Run};
use sluice::ops::generate::GenSpec;

use common::*;

fn job_for(f: &mut Fixture, bootstrap: &str, topic: &str) -> sluice::config::Job {
    let job = f
        .job_file("table")
        .set("source", "brokers", bootstrap)
        .set("source", "topics", vec![topic.to_string()])
        .set("commit", "max_rows", 3000);
    f.write("table", &job);
    sluice::config::Job::load(&f.job).unwrap()
}

#[test]
fn fetch_errors_and_a_broker_outage_lose_nothing() {
    let mock = MockCluster::new(1).unwrap();
    let topic = "mock-payments";
    mock.create_topic(topic, 4, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let malformed = sluice::ops::generate::produce(&bootstrap, topic, &spec(0, 20_000)).unwrap();
    assert_eq!(malformed, 0);

    // The fixture's topic on the real broker is unused; it gives a table folder and a job file.
    let mut f = Fixture::new("mockfaults", 1);
    let job = job_for(&mut f, &bootstrap, topic);

    use RDKafkaRespErr::*;
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    mock.request_errors(
        RDKafkaApiKey::Metadata,
        &[
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ],
    );
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let run = {
        let (job, rt) = (job.clone(), rt.clone());
        std::thread::spawn(move || {
            Loader::new(job, rt, Arc::new(AtomicBool::new(false))).and_then(|l| l.run(Run::Once))
        })
    };
    // Take the broker down while the loader works, then bring it back.
    std::thread::sleep(Duration::from_millis(150));
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    mock.broker_up(1).unwrap();
    let stats = run.join().unwrap().expect("the loader did not recover");
    let loaded_first = stats.rows;

    // Whatever the first run loaded, a second run completes the table; nothing twice.
    let stats = Loader::new(job, rt, Arc::new(AtomicBool::new(false)))
        .and_then(|l| l.run(Run::Once))
        .unwrap();
    assert_eq!(loaded_first + stats.rows, 20_000);
    assert_exactly_once(&f.read(), 20_000, 0);
}

/// Produces `count` events from `first` to `f`'s topic (librdkafka retries while the broker
/// comes back; every record acknowledged once).
fn produce_after(f: &Fixture, first: u64, count: u64) {
    let spec = GenSpec {
        partitions: f.partitions,
        ..spec(first, count)
    };
    sluice::ops::generate::produce(&f.brokers, &f.topic, &spec).unwrap();
}

#[test]
fn a_broker_killed_restarted_and_paused_mid_load_loses_and_duplicates_nothing() {
    // The test's own Apache Kafka broker: SIGKILLed and restarted on the same log directory,
    // then SIGSTOPped past the loaders' session timeout and resumed, while two continuous
    // loaders in one group load.
    let broker = OwnBroker::start();
    let mut f = Fixture::on(&broker.brokers, "bfault", 4, &[]);
    let job = f
        .job_file("table")
        .set("commit", "interval", "1s")
        .set("commit", "max_rows", 1500);
    f.write("table", &job);
    f.produce(spec(0, 10_000));
    let a = f.spawn_run("a.log");
    let b = f.spawn_run("b.log");
    let logs = ["a.log", "b.log"];
    f.wait_for_logging(60, "the first commits", &logs, |s| {
        committed_rows(s) >= 1_500
    });

    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    produce_after(&f, 10_000, 10_000);
    f.wait_for_logging(120, "20k events after the restart", &logs, |s| {
        committed_rows(s) >= 20_000
    });

    // Paused past the session timeout (3 s): the group expires on the broker's side when it
    // wakes; the loaders rejoin and go on.
    broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(8));
    broker.signal("-CONT");
    produce_after(&f, 20_000, 10_000);
    f.wait_for_logging(120, "30k events after the pause", &logs, |s| {
        committed_rows(s) >= 30_000
    });
    for c in [&a, &b] {
        sigterm(c);
    }
    for (c, log) in [(a, "a.log"), (b, "b.log")] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", f.log(log));
    }
    let r = f.read();
    assert_exactly_once(&r, 30_000, 0);
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, 29_999));
    let v = verify_with_kafka(&f);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn offsets_deleted_by_retention_before_loading_stop_the_loader_until_skipped() {
    // Retention by broker time (LogAppendTime), segments rolled every second, kept two.
    let f = Fixture::on(
        &brokers(),
        "retention",
        1,
        &[
            ("message.timestamp.type", "LogAppendTime"),
            ("segment.ms", "1000"),
            ("retention.ms", "2000"),
        ],
    );
    let once = |f: &Fixture| f.run_once(None);
    // A: loaded. B: produced, then deleted by retention before any run reads it. C: kept.
    f.produce(spec(0, 3_000));
    let out = once(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end_a = 3_000;
    std::thread::sleep(Duration::from_millis(1_200));
    f.produce(spec(3_000, 2_000));
    std::thread::sleep(Duration::from_millis(1_200));
    f.produce(spec(5_000, 1_000));
    let start_c = 5_000;
    // Wait until the broker deleted B (and A): its first offset is C's.
    let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (low, _) = probe
            .fetch_watermarks(&f.topic, 0, Duration::from_secs(5))
            .unwrap();
        if low >= start_c {
            assert_eq!(low, start_c, "retention took part of C too");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run: low {low}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(probe);

    // The loader stops, names the partition and the lost offsets, commits nothing.
    let seq = f.state().seq;
    for args in [&["run", "--once"][..], &["run"]] {
        let out = f
            .sluice()
            .args(args)
            .arg("--job")
            .arg(&f.job)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {text}");
        let expect = format!(
            "topic {} partition 0: offsets [{end_a}, {start_c}) are no longer in Kafka",
            f.topic
        );
        assert!(text.contains(&expect), "{args:?}: {text}");
        assert!(text.contains("sluice skip"), "{text}");
        assert_eq!(f.state().seq, seq);
    }

    // `skip` refuses offsets Kafka still has, then records the loss; the loader reads on.
    let topic = f.topic.clone();
    let skip = |to: i64| {
        f.cli(&[
            "skip",
            "--topic",
            &topic,
            "--partition",
            "0",
            "--to",
            &to.to_string(),
        ])
    };
    let out = skip(start_c + 1);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still in Kafka"));
    let out = skip(start_c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = f.run_once_ok();
    assert_eq!(n(&stats, "rows"), 1_000);

    // Every id of A and C once, none of B; verify lists B as lost, and is clean.
    let expected: Vec<(String, bool)> = (0..end_a)
        .chain(start_c..6_000)
        .map(|id| (format!("evt_{id:012}"), false))
        .collect();
    audit_ids(&f, &expected, "after skip");
    let v = f.cli_json(&["verify", "--json"]);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
    let lost = &v["lost"][0];
    assert_eq!(
        (lost["from"].as_i64(), lost["to"].as_i64()),
        (Some(end_a), Some(start_c)),
        "{v}"
    );
    f.assert_clean();
}
