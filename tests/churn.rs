//! Churn: everything production throws at a table at once, then an audit id by id.
//!
//! Continuous loaders in one consumer group are SIGKILLed and restarted, or SIGSTOPped past
//! their session timeout and resumed as zombies, while scheduled runs (`run --once`) and
//! backfills race them (and are killed or paused too), and a producer writes events with 1%
//! malformed throughout, unevenly over the partitions, and an independent transactional
//! producer commits and aborts transactions on the same partitions; the test's own Apache
//! Kafka broker is SIGKILLed and restarted once, half-way. Then everything is stopped, one `run --once` drains the rest, and the table is
//! audited: `sluice verify` clean, every offset of every partition exactly one row or dead
//! letter (the independent DuckDB reader), every valid id exactly one row, every malformed id
//! exactly one dead letter, no aborted id anywhere, `verify --kafka` clean (no recorded
//! non-record holds a record), and no loader ever refused a range that did not add up.
//!
//! Seeded: the seed is printed and named in every failure; `SLUICE_CHURN_SEED` repeats a run.
//! Size: `SLUICE_CHURN_KILLS` (kills, default 30), `SLUICE_CHURN_RATE` (events/s, default
//! 3,000), `SLUICE_CHURN_LOADERS` (continuous loaders, default 3). `make chaos` runs it big.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sluice::ops::generate::GenSpec;

const PARTITIONS: i32 = 6;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Continuous,
    Once,
    Backfill,
}

struct Proc {
    child: Child,
    kind: Kind,
    log: String,
    /// SIGSTOPped until then.
    stopped_until: Option<Instant>,
    /// The broker was restarted while it ran.
    broker_restarted: bool,
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

#[derive(Default, Debug)]
struct Counts {
    kills: u64,
    stops: u64,
    onces: u64,
    backfills: u64,
    spawned: u64,
}

struct Fleet<'a> {
    f: &'a Fixture,
    procs: Vec<Proc>,
    counts: Counts,
    logs: Vec<String>,
}

/// A test that fails leaves no loader behind.
impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Fleet<'_> {
    fn spawn(&mut self, kind: Kind) {
        let log = format!("p{}-{kind:?}.log", self.counts.spawned);
        self.counts.spawned += 1;
        let file = std::fs::File::create(self.f.dir.path().join(&log)).unwrap();
        let mut c = self.f.sluice();
        match kind {
            Kind::Continuous => c.args(["run", "--job"]),
            Kind::Once => c.args(["run", "--once", "--job"]),
            Kind::Backfill => c.args(["backfill", "--from", "0", "--to", "latest", "--job"]),
        };
        let child = c
            .arg(&self.f.job)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        self.logs.push(log.clone());
        self.procs.push(Proc {
            child,
            kind,
            log,
            stopped_until: None,
            broker_restarted: false,
        });
    }

    fn count(&self, kind: Kind) -> usize {
        self.procs.iter().filter(|p| p.kind == kind).count()
    }

    /// Resumes processes whose pause is over; forgets the ones that exited by themselves.
    fn tend(&mut self, now: Instant) {
        for p in &mut self.procs {
            if p.stopped_until.is_some_and(|t| t <= now) {
                signal(&p.child, "-CONT");
                p.stopped_until = None;
            }
        }
        let f = self.f;
        self.procs.retain_mut(|p| match p.child.try_wait() {
            Ok(Some(status)) => {
                // A continuous loader never exits by itself; scheduled runs and backfills may
                // fail only by refusing (a backfill of loaded offsets).
                let log = f.log(&p.log);
                assert!(
                    p.kind != Kind::Continuous,
                    "a continuous loader exited ({status}): {log}"
                );
                // Or, while the broker was down, by giving up on it (nothing committed then).
                assert!(
                    status.success()
                        || log.contains("refused")
                        || (p.broker_restarted && log.contains("kafka:")),
                    "{:?} failed ({status}): {log}",
                    p.kind
                );
                false
            }
            _ => true,
        });
    }

    fn pick(&mut self, rng: &mut Rng, kinds: &[Kind], running: bool) -> Option<usize> {
        let idx: Vec<usize> = (0..self.procs.len())
            .filter(|&i| kinds.contains(&self.procs[i].kind))
            .filter(|&i| !running || self.procs[i].stopped_until.is_none())
            .collect();
        (!idx.is_empty()).then(|| idx[rng.below(idx.len() as u64) as usize])
    }

    fn kill(&mut self, i: usize) {
        let mut p = self.procs.swap_remove(i);
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        self.counts.kills += 1;
    }
}

#[test]
fn churn_kills_pauses_and_racing_runs_lose_and_duplicate_nothing() {
    let seed = seed("SLUICE_CHURN_SEED") | 1;
    let kills = env_u64("SLUICE_CHURN_KILLS", 30);
    let rate = env_u64("SLUICE_CHURN_RATE", 3_000);
    let loaders = env_u64("SLUICE_CHURN_LOADERS", 3) as usize;
    eprintln!("churn seed {seed} (SLUICE_CHURN_SEED={seed} repeats it): {kills} kills, {rate} events/s, {loaders} loaders");
    // The test's own broker: it is SIGKILLed and restarted once, half-way.
    let broker = OwnBroker::start();
    let mut f = Fixture::on(&broker.brokers, "churn", PARTITIONS, &[]);
    f.write_job("table", "[commit]\ninterval = \"1s\"\nmax_rows = 2000\n");

    // The producer: batches five times a second, 1% malformed, every id recorded. Most
    // batches go to one partition, so partitions fill unevenly (a scheduled run finishes some
    // long before others, and reads on past its targets there), the rest to all of them.
    let stop = Arc::new(AtomicBool::new(false));
    let produced: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let producer = {
        let (stop, produced, topic) = (stop.clone(), produced.clone(), f.topic.clone());
        let brokers = f.brokers.clone();
        let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        std::thread::spawn(move || {
            let batch = (rate / 5).max(1);
            let mut first_id = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let spec = GenSpec {
                    partitions: PARTITIONS,
                    malformed_permille: 10,
                    seed: first_id + 1,
                    ..spec(first_id, batch)
                };
                let spec = match rng.below(PARTITIONS as u64 + 2) as i32 {
                    p if p < PARTITIONS => GenSpec {
                        only_partition: Some(p),
                        ..spec
                    },
                    _ => spec,
                };
                sluice::ops::generate::produce(&brokers, &topic, &spec).unwrap();
                let mut ids = Vec::with_capacity(batch as usize);
                sluice::ops::generate::generate(&spec, |r| ids.push((r.key, r.malformed)));
                produced.lock().unwrap().extend(ids);
                first_id += batch;
                std::thread::sleep(Duration::from_millis(200).saturating_sub(started.elapsed()));
            }
        })
    };

    // An independent transactional producer (confluent-kafka) on the same partitions:
    // transactions that commit or abort, plain writes in between; ids `txn_…`.
    let txn_ids = f.dir.path().join("txn-ids.txt");
    let txn_rate = (rate / 4).max(1).to_string();
    let txn_seed = seed.to_string();
    let txn_out = txn_ids.display().to_string();
    let mut txn = txn_producer(
        &f.brokers,
        &f.topic,
        PARTITIONS,
        &[
            "--count",
            "1000000000",
            "--rate",
            &txn_rate,
            "--txn-size",
            "40",
            "--prefix",
            "txn",
            "--seed",
            &txn_seed,
            "--out",
            &txn_out,
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(f.dir.path().join("txn.log")).unwrap())
    .spawn()
    .unwrap();

    let mut fleet = Fleet {
        f: &f,
        procs: Vec::new(),
        counts: Counts::default(),
        logs: Vec::new(),
    };
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut restarted = false;
    while fleet.counts.kills < kills {
        if !restarted && fleet.counts.kills >= kills / 2 {
            // The broker crashes and comes back on its log directory.
            restarted = true;
            broker.kill();
            std::thread::sleep(Duration::from_millis(1_000 + rng.below(3_000)));
            broker.restart();
            for p in &mut fleet.procs {
                p.broker_restarted = true;
            }
            eprintln!("churn: broker restarted after {} kills", fleet.counts.kills);
        }
        let now = Instant::now();
        fleet.tend(now);
        while fleet.count(Kind::Continuous) < loaders {
            fleet.spawn(Kind::Continuous);
        }
        std::thread::sleep(Duration::from_millis(200 + rng.below(1_000)));
        match rng.below(100) {
            0..=24 => {
                if let Some(i) = fleet.pick(&mut rng, &[Kind::Continuous], false) {
                    fleet.kill(i);
                }
            }
            25..=36 => {
                let paused = fleet
                    .procs
                    .iter()
                    .filter(|p| p.stopped_until.is_some())
                    .count();
                if paused < 2 {
                    // A loader past its session timeout (a zombie when it wakes), or a
                    // scheduled run in the middle of its work.
                    if let Some(i) = fleet.pick(&mut rng, &[Kind::Continuous, Kind::Once], true) {
                        signal(&fleet.procs[i].child, "-STOP");
                        let ms = match fleet.procs[i].kind {
                            Kind::Continuous => 4_000 + rng.below(5_000),
                            _ => 500 + rng.below(2_500),
                        };
                        fleet.procs[i].stopped_until =
                            Some(Instant::now() + Duration::from_millis(ms));
                        fleet.counts.stops += 1;
                    }
                }
            }
            37..=66 if fleet.count(Kind::Once) < 3 => {
                fleet.spawn(Kind::Once);
                fleet.counts.onces += 1;
            }
            67..=74 if fleet.count(Kind::Backfill) < 1 => {
                fleet.spawn(Kind::Backfill);
                fleet.counts.backfills += 1;
            }
            75..=84 => {
                if let Some(i) = fleet.pick(&mut rng, &[Kind::Once, Kind::Backfill], false) {
                    fleet.kill(i);
                }
            }
            _ => {}
        }
    }
    let churn_secs = started.elapsed().as_secs();

    // Drain: the producer stops, paused loaders resume, everyone stops cleanly, and one
    // scheduled run loads what is left.
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    signal(&txn, "-TERM");
    let status = txn.wait().unwrap();
    assert!(
        status.success(),
        "seed {seed}: the transactional producer failed: {}",
        f.log("txn.log")
    );
    for p in &mut fleet.procs {
        if p.stopped_until.take().is_some() {
            signal(&p.child, "-CONT");
        }
        if p.kind == Kind::Continuous {
            signal(&p.child, "-TERM");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut p in std::mem::take(&mut fleet.procs) {
        while p.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if p.child.try_wait().unwrap().is_none() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
    let out = f.run_once(None);
    assert!(
        out.status.success(),
        "seed {seed}: the draining run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = &fleet.counts;
    let mut produced = std::mem::take(&mut *produced.lock().unwrap());
    let txn_states = produced_states(&txn_ids);
    let aborted = txn_states.iter().filter(|(_, s)| s == "aborted").count();
    produced.extend(
        txn_states
            .iter()
            .filter(|(_, s)| s == "committed")
            .map(|(id, _)| (id.clone(), false)),
    );
    let malformed = produced.iter().filter(|(_, m)| *m).count() as i64;
    eprintln!(
        "churn seed {seed}: {} events ({malformed} malformed, {aborted} more aborted in transactions) in {churn_secs}s; 1 broker restart, {} kills, {} pauses, {} scheduled runs, {} backfills, {} manifest entries",
        produced.len(),
        counts.kills,
        counts.stops,
        counts.onces,
        counts.backfills,
        f.state().seq
    );

    // No loader ever met a range that did not add up (it would have re-read it, but it is a
    // bug all the same).
    for log in &fleet.logs {
        let text = f.log(log);
        assert!(
            !text.contains("not all accounted for"),
            "seed {seed}: {log}: {text}"
        );
    }

    // The audit: verify, the independent reader's offset accounting, then id by id.
    // Rows and dead letters account for every record; offsets the readers see once each (the
    // transactions' markers and aborted records are not records, so offsets have gaps).
    let r = f.read();
    assert_eq!(
        n(&r, "rows") + n(&r, "dead_letters"),
        produced.len() as i64,
        "seed {seed}: {r}"
    );
    assert_eq!(n(&r, "dead_letters"), malformed, "seed {seed}: {r}");
    assert_eq!(n(&r, "distinct_offsets"), n(&r, "rows"), "seed {seed}: {r}");
    assert_eq!(n(&r, "distinct_ids"), n(&r, "rows"), "seed {seed}: {r}");
    let audit = audit_ids(&f, &produced, &format!("seed {seed}"));
    eprintln!("id audit: {audit}");
    let v = verify_with_kafka(&f);
    assert_eq!(
        v["violations"].as_array().unwrap().len(),
        0,
        "seed {seed}: {v}"
    );
}
