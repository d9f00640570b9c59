// The continuous loader's cases of `make bench` (included by e2e.rs): freshness with a slow
// store, and the records read again in a rolling restart, eager against cooperative.

/// A job's text with `property = value` added to its `[source.properties]`.
fn with_property(job: &Path, property: &str, value: &str) {
    let text = std::fs::read_to_string(job).unwrap();
    let text = text.replacen(
        "[source.properties]\n",
        &format!("[source.properties]\n\"{property}\" = \"{value}\"\n"),
        1,
    );
    std::fs::write(job, text).unwrap();
}

/// A job's table moved to S3 at `endpoint` (bucket `bucket`, prefix `name`).
fn on_s3(job: &Path, endpoint: &str, bucket: &str, name: &str) {
    let text = std::fs::read_to_string(job).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                format!("url = \"s3://{bucket}/{name}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    let options = format!(
        "[storage.options]\naws_endpoint = \"{endpoint}\"\naws_allow_http = \"true\"\naws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\naws_region = \"us-east-1\"\n"
    );
    std::fs::write(job, format!("{}\n{options}", text.join("\n"))).unwrap();
}

/// Starts tests/support/faulty_s3.py in front of `upstream`, answering each request after
/// `delay_ms`: the proxy and its endpoint.
fn slow_proxy(upstream: &str, delay_ms: u64) -> (Moto, String) {
    use std::io::BufRead;
    let log = std::env::temp_dir().join(format!("sluice-bench-proxy-{}.log", std::process::id()));
    let mut child = Command::new(repo().join(".tools/venv/bin/python"))
        .arg(repo().join("tests/support/faulty_s3.py"))
        .args(["--listen", "0", "--upstream"])
        .arg(upstream.trim_start_matches("http://"))
        .args(["--delay-ms", &delay_ms.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the proxy's port");
    (Moto(child, log), format!("http://127.0.0.1:{port}"))
}

/// What the freshness of a continuous loader is measured on.
struct Fresh<'a> {
    /// The binary.
    sluice: &'a Path,
    job: &'a Path,
    /// The same table, read without the slow proxy.
    watch: &'a Path,
    topic: &'a str,
    partitions: i32,
    rate: u64,
    secs: u64,
}

/// (p50, p99 seconds from an event's production to an entry covering it, times librdkafka
/// reported `max.poll.interval.ms` exceeded, rebalances the loader saw).
type Freshness = (f64, f64, usize, usize);

/// Freshness of a continuous loader at a steady rate.
fn freshness_of(ctx: &Ctx, f: &Fresh<'_>) -> Freshness {
    let Fresh {
        sluice,
        job,
        watch,
        topic,
        partitions,
        rate,
        secs,
    } = *f;
    let log = job.with_extension("log");
    let mut child = Command::new(sluice)
        .args(["run", "--job"])
        .arg(job)
        .env("SLUICE_LOG", "info,librdkafka=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let manifest = sluice::open_manifest(&sluice::config::Job::load(watch).unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<std::sync::Mutex<Vec<Observed>>> = Default::default();
    let watcher = {
        let (stop, seen, topic) = (stop.clone(), seen.clone(), topic.to_string());
        std::thread::spawn(move || {
            let rt = rt();
            let mut state = rt.block_on(manifest.load()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if rt.block_on(manifest.refresh(&mut state)).is_ok() {
                    let ends = (0..partitions)
                        .map(|p| state.partition(&topic, p).and_then(|s| s.end()).unwrap_or(0))
                        .collect();
                    seen.lock().unwrap().push((Instant::now(), ends));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(8)); // group join
    let ticks = produce_steadily(&ctx.brokers, topic, partitions, rate, secs, None);
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let seen = seen.lock().unwrap();
    let mut delays = Vec::new();
    for (t0, counts) in &ticks {
        for p in 0..partitions as usize {
            let at = seen
                .iter()
                .find(|(t1, ends)| t1 >= t0 && ends[p] >= counts[p]);
            delays.push(at.map_or(f64::INFINITY, |(t1, _)| {
                t1.duration_since(*t0).as_secs_f64()
            }));
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let exceeded = text.matches("maximum poll interval").count();
    let rebalances = text.matches("revoked").count();
    (
        percentile(delays.clone(), 0.5),
        percentile(delays, 0.99),
        exceeded,
        rebalances,
    )
}

/// Produces `rate` events/s over `partitions` for `secs` (or until `stop`), in ticks of 100
/// ms: each tick's time and the events produced per partition by then.
fn produce_steadily(
    brokers: &str,
    topic: &str,
    partitions: i32,
    rate: u64,
    secs: u64,
    stop: Option<&AtomicBool>,
) -> Vec<Observed> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut produced = vec![0i64; partitions as usize];
    let mut ticks: Vec<Observed> = Vec::new();
    let per_tick = (rate / 10).max(1);
    let start = Instant::now();
    let mut id = 0u64;
    for tick in 0..secs * 10 {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let due = start + Duration::from_millis(tick * 100);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let spec = GenSpec {
            first_id: id,
            count: per_tick,
            ..Default::default()
        };
        generate(&spec, |r| {
            let p = (id % partitions as u64) as i32;
            let _ = producer.send(
                BaseRecord::to(topic)
                    .partition(p)
                    .key(&r.key)
                    .payload(&r.payload),
            );
            produced[p as usize] += 1;
            id += 1;
        });
        producer.poll(Duration::ZERO);
        producer.flush(Duration::from_secs(5)).unwrap();
        ticks.push((Instant::now(), produced.clone()));
    }
    ticks
}

/// Freshness at a steady 20k events/s with a store that answers every request after 200 ms
/// (moto behind tests/support/faulty_s3.py), for this binary and, with a baseline, that one,
/// in turns.
fn slow_store(ctx: &Ctx, baseline: Option<&Path>, runs: usize) -> Value {
    let (moto, endpoint) = start_moto(ctx, "slow");
    let delay_ms = 200;
    let (_proxy, slow) = slow_proxy(&endpoint, delay_ms);
    let rate = env_or("SLUICE_BENCH_SLOW_RATE", 20_000u64);
    let secs = env_or("SLUICE_BENCH_SLOW_SECS", 20u64);
    let partitions = 8;
    let mut bins: Vec<(&str, PathBuf)> = vec![("sluice", ctx.sluice.clone())];
    if let Some(b) = baseline {
        bins.push(("baseline", b.to_path_buf()));
    }
    let mut out = serde_json::Map::new();
    let mut figures: Vec<(String, Vec<Freshness>)> =
        bins.iter().map(|(n, _)| (n.to_string(), vec![])).collect();
    for run in 0..runs {
        for (i, (name, bin)) in bins.iter().enumerate() {
            let table = format!("slow-{name}-{run}");
            let topic = ctx.topic(&table, partitions);
            let job = ctx.job(&table, &topic, "[commit]\ninterval = \"1s\"\n");
            with_property(&job, "max.poll.interval.ms", "10000");
            let watch = ctx.work.path().join(format!("{table}-watch.toml"));
            std::fs::copy(&job, &watch).unwrap();
            on_s3(&job, &slow, "slow", &table);
            on_s3(&watch, &endpoint, "slow", &table);
            let fresh = Fresh {
                sluice: bin,
                job: &job,
                watch: &watch,
                topic: &topic,
                partitions,
                rate,
                secs,
            };
            let f = freshness_of(ctx, &fresh);
            eprintln!("bench: slow store, {name} run {run}: p50 {:.2} s, p99 {:.2} s, max.poll exceeded {}, rebalances {}", f.0, f.1, f.2, f.3);
            figures[i].1.push(f);
        }
    }
    for (name, f) in figures {
        out.insert(
            name,
            json!({
                "freshness_p50_s": median(f.iter().map(|x| x.0).collect()),
                "freshness_p99_s": median(f.iter().map(|x| x.1).collect()),
                "max_poll_interval_exceeded": f.iter().map(|x| x.2).sum::<usize>(),
                "rebalances": f.iter().map(|x| x.3).sum::<usize>(),
            }),
        );
    }
    drop(moto);
    json!({
        "store_delay_ms_per_request": delay_ms,
        "events_per_s": rate,
        "seconds": secs,
        "commit_interval_s": 1,
        "max_poll_interval_ms": 10_000,
        "runs": runs,
        "figures": out,
    })
}

/// A rolling restart of `loaders` continuous loaders in one group on 16 partitions under a
/// steady producer, with assignment `strategy`: each loader in turn is stopped (SIGTERM: it
/// commits what it holds) and replaced, 8 s apart. Records read again = records consumed by all
/// loaders minus records produced (every one is loaded exactly once); per restart.
fn rolling_restart(ctx: &Ctx, strategy: &str, loaders: usize, run: usize) -> Value {
    let partitions = 16;
    let name = format!("roll-{}-{run}", strategy.replace(',', "-"));
    let topic = ctx.topic(&name, partitions);
    let job = ctx.job(&name, &topic, "[commit]\ninterval = \"5s\"\n");
    with_property(&job, "partition.assignment.strategy", strategy);
    let rate = env_or("SLUICE_BENCH_ROLL_RATE", 10_000u64);
    let spawn = || {
        Command::new(&ctx.sluice)
            .args(["run", "--job"])
            .arg(&job)
            .env("SLUICE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let stats = |c: std::process::Child| -> Value {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let out = c.wait_with_output().unwrap();
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap_or(Value::Null)
    };
    let mut running: Vec<std::process::Child> = (0..loaders).map(|_| spawn()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, topic, brokers) = (stop.clone(), topic.clone(), ctx.brokers.clone());
        std::thread::spawn(move || {
            produce_steadily(&brokers, &topic, partitions, rate, 3600, Some(&stop))
                .last()
                .map_or(0, |(_, counts)| counts.iter().sum::<i64>())
        })
    };
    std::thread::sleep(Duration::from_secs(12)); // join, and buffers filling
    let mut finished: Vec<Value> = Vec::new();
    for slot in running.iter_mut() {
        let old = std::mem::replace(slot, spawn());
        finished.push(stats(old));
        std::thread::sleep(Duration::from_secs(8));
    }
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().unwrap();
    let manifest = sluice::open_manifest(&sluice::config::Job::load(&job).unwrap()).unwrap();
    let rt = rt();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = rt.block_on(manifest.load()).unwrap();
        let done: i64 = s.partitions.iter().filter_map(|p| p.end()).sum();
        if done >= produced || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    finished.extend(running.into_iter().map(stats));
    let g = |k: &str| finished.iter().map(|v| v[k].as_u64().unwrap_or(0)).sum::<u64>();
    let consumed = g("consumed");
    let reread = consumed.saturating_sub(produced as u64);
    let state = rt.block_on(manifest.load()).unwrap();
    let loaded: u64 = state.partitions.iter().map(|p| p.rows + p.dead_letters).sum();
    assert_eq!(loaded, produced as u64, "rolling restart {strategy}: loaded {loaded} of {produced}");
    eprintln!("bench: rolling restart {strategy}: {produced} events, {consumed} consumed, {reread} read again");
    json!({
        "strategy": strategy,
        "loaders": loaders,
        "restarts": loaders,
        "partitions": partitions,
        "events": produced,
        "consumed": consumed,
        "rows_reread": reread,
        "rows_reread_per_restart": reread as f64 / loaders as f64,
        "fenced": g("fenced"),
        "entries": g("commits"),
    })
}
