//! Broker faults: librdkafka's mock cluster with request errors on fetches and metadata and the
//! broker going down and up; and a real broker (tansu, its log kept in a local S3 so that it
//! survives) stopped and restarted mid-run. The loader must recover by itself, losing nothing.

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

/// A real tansu broker, storing its log in S3 (a local moto) so that it survives a restart.
struct S3Broker {
    _moto: Server,
    moto_port: u16,
    port: u16,
    broker: Option<Server>,
}

impl S3Broker {
    fn start() -> S3Broker {
        let (moto, moto_port) = start_moto();
        create_bucket(moto_port, "tansu");
        let mut b = S3Broker {
            _moto: moto,
            moto_port,
            port: free_port(),
            broker: None,
        };
        b.up();
        b
    }

    fn up(&mut self) {
        let addr = format!("tcp://127.0.0.1:{}", self.port);
        let mut child = std::process::Command::new(tool("bin/tansu"))
            .args([
                "broker",
                "--listener-url",
                &addr,
                "--advertised-listener-url",
                &addr,
            ])
            .args(["--storage-engine", "s3://tansu/"])
            .env(
                "AWS_ENDPOINT",
                format!("http://127.0.0.1:{}", self.moto_port),
            )
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_port(self.port, &mut child);
        self.broker = Some(Server(child));
    }

    fn down(&mut self) {
        self.broker = None; // killed and reaped by Server's Drop
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

#[test]
fn a_broker_restart_mid_run_loses_nothing() {
    let mut broker = S3Broker::start();
    let topic = format!("restart-{}", std::process::id());
    rt().block_on(sluice::ops::generate::create_topic(
        &broker.addr(),
        &topic,
        2,
    ))
    .unwrap();
    // Wait until the new topic's partitions are in the metadata.
    let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let md = probe.fetch_metadata(Some(&topic), Duration::from_secs(5));
        if md.is_ok_and(|m| m.topics().iter().any(|t| t.partitions().len() == 2)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "topic never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(probe);
    let two = |s: GenSpec| GenSpec { partitions: 2, ..s };
    sluice::ops::generate::produce(&broker.addr(), &topic, &two(spec(0, 6_000))).unwrap();
    let mut f = Fixture::new("restart", 1);
    let job = f
        .job_file("table")
        .set("source", "brokers", broker.addr())
        .set("source", "topics", vec![topic.clone()])
        .set("commit", "interval", "1s")
        .set("commit", "max_rows", 1500);
    f.write("table", &job);
    let child = f.spawn_run("run.log");
    f.wait_for(60, "the first commits", |s| committed_rows(s) >= 1_500);
    broker.down();
    std::thread::sleep(Duration::from_secs(3));
    broker.up();
    sluice::ops::generate::produce(&broker.addr(), &topic, &two(spec(6_000, 4_000))).unwrap();
    f.wait_for(120, "all 10k events after the restart", |s| {
        committed_rows(s) >= 10_000
    });
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", f.log("run.log"));
    let r = f.read();
    assert_exactly_once(&r, 10_000, 0);
    assert_eq!((n(&r, "id_min"), n(&r, "id_max")), (0, 9_999));
}
