//! Ceiling (a) of `make bench`: the least a Kafka consumer can do with a topic, in a process of
//! its own. It assigns every partition at the beginning, polls every message (touching each
//! payload's bytes), and exits when it has `COUNT` messages. librdkafka is tuned as its
//! documentation advises for throughput: large local queues and fetches, no group, no offset
//! commits, no partition-EOF events.
//!
//! `bare_consumer BROKERS TOPIC PARTITIONS COUNT` prints one JSON line:
//! `{"events": N, "first_to_last_s": S, "assign_to_last_s": S, "checksum": C}`.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: bare_consumer BROKERS TOPIC PARTITIONS COUNT");
        std::process::exit(2);
    }
    let (brokers, topic) = (&args[1], &args[2]);
    let (Ok(partitions), Ok(count)) = (args[3].parse::<i32>(), args[4].parse::<u64>()) else {
        eprintln!("PARTITIONS and COUNT are numbers");
        std::process::exit(2);
    };
    let mut config = ClientConfig::new();
    // Throughput settings (librdkafka's INTRODUCTION.md, "High throughput"): plenty fetched
    // ahead locally, large fetches. (Measured here: no faster than the defaults, no slower.)
    config
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "1048576")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = match config
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare-consumer")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // What sluice reads: committed records only (as fast as the default on a topic
        // without transactions, and what a ceiling for sluice must read on one with them).
        .set("isolation.level", "read_committed")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bare_consumer: {e}");
            std::process::exit(1);
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Beginning) {
            eprintln!("bare_consumer: {e}");
            std::process::exit(1);
        }
    }
    let assigned = Instant::now();
    if let Err(e) = consumer.assign(&tpl) {
        eprintln!("bare_consumer: {e}");
        std::process::exit(1);
    }
    let (mut n, mut sum, mut first) = (0u64, 0u64, None);
    while n < count {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                // Touch every byte, as a loader must.
                sum = m
                    .payload()
                    .unwrap_or_default()
                    .iter()
                    .fold(sum, |s, &b| s.wrapping_add(b as u64));
            }
            Some(Err(e)) => eprintln!("bare_consumer: {e}"),
            None => {}
        }
        if assigned.elapsed() > Duration::from_secs(600) {
            eprintln!("bare_consumer: stalled at {n} of {count}");
            std::process::exit(1);
        }
    }
    let last = Instant::now();
    let first = first.unwrap_or(last);
    println!(
        "{{\"events\": {n}, \"first_to_last_s\": {}, \"assign_to_last_s\": {}, \"checksum\": {sum}}}",
        (last - first).as_secs_f64(),
        (last - assigned).as_secs_f64()
    );
}
