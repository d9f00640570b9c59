//! Broker faults, injected with librdkafka's mock cluster (beside the real-broker tests): request
//! errors on fetches and metadata, and the broker going down and coming back mid-run. The
//! loader must recover by itself and lose nothing.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use sluice::loader::{Loader, Mode};

use common::*;

fn job_for(f: &mut Fixture, bootstrap: &str, topic: &str) -> sluice::config::Job {
    f.write_job("table", "[commit]\nmax_rows = 3000\n");
    let text = std::fs::read_to_string(&f.job)
        .unwrap()
        .replace(
            &format!("brokers = \"{}\"", brokers()),
            &format!("brokers = \"{bootstrap}\""),
        )
        .replace(
            &format!("topics = [\"{}\"]", f.topic),
            &format!("topics = [\"{topic}\"]"),
        );
    std::fs::write(&f.job, text).unwrap();
    sluice::config::Job::load(&f.job).unwrap()
}

#[test]
fn fetch_errors_and_a_broker_outage_lose_nothing() {
    let mock = MockCluster::new(1).unwrap();
    let topic = "mock-payments";
    mock.create_topic(topic, 4, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let malformed = sluice::generate::produce(&bootstrap, topic, &spec(0, 20_000)).unwrap();
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
            Loader::new(job, rt, Arc::new(AtomicBool::new(false))).and_then(|l| l.run(Mode::Once))
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
        .and_then(|l| l.run(Mode::Once))
        .unwrap();
    assert_eq!(loaded_first + stats.rows, 20_000);
    assert_exactly_once(&f.read(), 20_000, 0);
}
