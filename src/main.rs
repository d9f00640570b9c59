#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sluice::config::{redact_url, Job};
use sluice::loader::{Loader, Mode};

/// Kafka to event-time windowed Parquet on object storage, exactly once.
#[derive(Parser)]
#[command(name = "sluice", version)]
struct Cli {
    /// Log format on stderr: `human` or `json` (one object a line).
    #[arg(long, global = true, default_value = "human")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the job's topics into its table: continuously, or with --once up to the current end.
    Run {
        /// The job file (TOML).
        #[arg(long)]
        job: PathBuf,
        /// Load up to each partition's end as of now, commit, and exit.
        #[arg(long)]
        once: bool,
        /// Serve Prometheus metrics (`/metrics`) and `/healthz` on this address.
        #[arg(long)]
        metrics_addr: Option<String>,
    },
    /// Print the table's committed data files, one URL a line.
    Files {
        #[arg(long)]
        job: PathBuf,
        /// Print the manifest's description of each file as JSON.
        #[arg(long)]
        json: bool,
        /// List the dead-letter files instead of the data files.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Load an offset range (half-open) through the same commit path: fill offsets never
    /// loaded, or with --replace re-derive loaded ones and swap their files atomically.
    Backfill {
        #[arg(long)]
        job: PathBuf,
        /// Partition to backfill (repeatable; all partitions of the job's topics when omitted).
        #[arg(long = "partition")]
        partitions: Vec<i32>,
        /// First offset to load.
        #[arg(long)]
        from: i64,
        /// One past the last offset to load, or `latest` for each partition's end now.
        #[arg(long)]
        to: String,
        /// Re-derive offsets that are already loaded and swap their files in one entry.
        #[arg(long)]
        replace: bool,
        /// Write to this table (a storage URL) instead of the job's, e.g. a sandbox.
        #[arg(long)]
        to_table: Option<String>,
        /// Print what would be loaded or replaced, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show each partition's committed offset, the broker's high watermark, the lag, the last
    /// commit, the latest event time loaded, files and rows.
    Status {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Audit the table: files exist with the recorded size and row count, offset ranges are
    /// contiguous and never overlap, checkpoints agree with the entries. Exits 1 on violations.
    Verify {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        json: bool,
        /// Also ask the broker about every hole (records lost, or offsets that hold no record
        /// in tables written before sluice recorded them) and every recorded non-record.
        #[arg(long)]
        kafka: bool,
    },
    /// Delete data and dead-letter files no manifest entry references (left by crashes before
    /// a commit) that are older than the grace period.
    Gc {
        #[arg(long)]
        job: PathBuf,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Grace period: never touch files younger than this (an in-flight commit's).
        #[arg(long, default_value = "24h")]
        older_than: String,
    },
    /// Produce realistic payment events (about 250 bytes of JSON) to a topic, for demos and
    /// benchmarks.
    Generate {
        #[arg(long, env = "SLUICE_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Create the topic with this many partitions first.
        #[arg(long)]
        create_partitions: Option<i32>,
        /// Spread events over this many partitions.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 0)]
        first_id: u64,
        /// Event times start here (RFC 3339).
        #[arg(long, default_value = "2026-11-24T00:00:00Z")]
        start: String,
        /// Event times spread over this long.
        #[arg(long, default_value = "3h")]
        span: String,
        /// Per mille of events that are malformed.
        #[arg(long, default_value_t = 0)]
        malformed_permille: u32,
        /// Per mille of events moved up to 20 minutes back in time.
        #[arg(long, default_value_t = 50)]
        disorder_permille: u32,
        /// Draw event times at random over the span (many open windows at once).
        #[arg(long)]
        scatter: bool,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format.as_str() {
        "json" => logs.json().init(),
        "human" => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        other => {
            eprintln!("sluice: error: --log-format {other}: expected `human` or `json`");
            return ExitCode::FAILURE;
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<Arc<tokio::runtime::Runtime>> {
    Ok(Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?,
    ))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            job,
            once,
            metrics_addr,
        } => {
            let job = Job::load(&job)?;
            let rt = runtime()?;
            let shutdown = Arc::new(AtomicBool::new(false));
            let flag = shutdown.clone();
            rt.spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                flag.store(true, Ordering::Relaxed);
            });
            tracing::info!(
                job = %job.path.display(),
                topics = ?job.topics,
                table = %redact_url(&job.storage_url),
                "starting"
            );
            let mode = if once { Mode::Once } else { Mode::Continuous };
            let loader = Loader::new(job, rt.clone(), shutdown)?;
            if let Some(addr) = metrics_addr {
                let listener = rt
                    .block_on(tokio::net::TcpListener::bind(&addr))
                    .with_context(|| format!("--metrics-addr {addr}"))?;
                tracing::info!(addr = %addr, "serving /metrics and /healthz");
                rt.spawn(sluice::metrics::serve(listener, loader.metrics()));
            }
            let stats = loader.run(mode)?;
            println!("{}", serde_json::to_string(&stats)?);
            Ok(())
        }
        Command::Generate {
            brokers,
            topic,
            count,
            create_partitions,
            partitions,
            first_id,
            start,
            span,
            malformed_permille,
            disorder_permille,
            scatter,
            seed,
        } => {
            if let Some(n) = create_partitions {
                runtime()?
                    .block_on(sluice::generate::create_topic(&brokers, &topic, n))
                    .with_context(|| format!("creating topic {topic}"))?;
            }
            let start_ms = chrono::DateTime::parse_from_rfc3339(&start)
                .with_context(|| format!("--start {start}"))?
                .timestamp_millis();
            let span_ms = sluice::window::parse_duration_ms(&span)
                .map_err(|e| anyhow::anyhow!("--span: {e}"))?;
            let spec = sluice::generate::GenSpec {
                first_id,
                count,
                partitions,
                start_ms,
                span_ms,
                disorder_permille,
                malformed_permille,
                scatter,
                seed,
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let malformed = sluice::generate::produce(&brokers, &topic, &spec)
                .with_context(|| format!("producing to {topic} at {brokers}"))?;
            eprintln!(
                "produced {count} events ({malformed} malformed) to {topic} in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Backfill {
            job,
            partitions,
            from,
            to,
            replace,
            to_table,
            dry_run,
        } => {
            let mut job = Job::load(&job)?;
            if let Some(url) = to_table {
                job.storage_url =
                    sluice::config::resolve_storage_url(&url, std::path::Path::new("."))
                        .map_err(|e| anyhow::anyhow!("--to-table: {e}"))?;
            }
            let to = match to.as_str() {
                "latest" => None,
                n => Some(
                    n.parse::<i64>()
                        .context("--to takes an offset or `latest`")?,
                ),
            };
            let rt = runtime()?;
            let manifest = sluice::open_manifest(&job)?;
            let state = rt.block_on(manifest.load())?;
            let consumer = sluice::source::lookup_consumer(&job)?;
            let timeout = std::time::Duration::from_secs(30);
            let mut parts = sluice::source::all_partitions(&consumer, &job.topics, timeout)?;
            if !partitions.is_empty() {
                for p in &partitions {
                    if !parts.iter().any(|(_, q)| q == p) {
                        anyhow::bail!("--partition {p}: no such partition in {:?}", job.topics);
                    }
                }
                parts.retain(|(_, p)| partitions.contains(p));
            }
            let marks = sluice::source::watermarks(&consumer, &parts, timeout)?;
            drop(consumer);
            let lows = marks.iter().map(|(k, v)| (k.clone(), v.0)).collect();
            let request = sluice::backfill::Request {
                partitions: parts,
                from,
                to,
                replace,
            };
            let plan = sluice::backfill::plan(&state, &lows, &request)
                .map_err(|e| anyhow::anyhow!("backfill refused:\n{e}"))?;
            for r in &plan.ranges {
                let to =
                    r.to.map(|t| t.to_string())
                        .unwrap_or_else(|| "latest".into());
                let verb = if plan.replace { "replace" } else { "load" };
                eprintln!("{verb} {}/{} [{}, {to})", r.topic, r.partition, r.from);
            }
            if plan.replace {
                eprintln!("files to swap out: {}", plan.removed.len());
            }
            if dry_run {
                println!("{}", serde_json::to_string(&plan)?);
                return Ok(());
            }
            let shutdown = Arc::new(AtomicBool::new(false));
            let stats = Loader::with_manifest(job, manifest, rt, shutdown)?.backfill(plan)?;
            println!("{}", serde_json::to_string(&stats)?);
            Ok(())
        }
        Command::Status { job, json } => {
            let job = Job::load(&job)?;
            let rt = runtime()?;
            let manifest = sluice::open_manifest(&job)?;
            let state = rt.block_on(manifest.load())?;
            let timeout = std::time::Duration::from_secs(30);
            let parts = {
                let consumer = sluice::source::lookup_consumer(&job)?;
                sluice::source::all_partitions(&consumer, &job.topics, timeout)?
            };
            let highs = sluice::source::served_high_watermarks(&job, &parts, timeout)?;
            let st = sluice::status::status(&state, &parts, &highs);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(());
            }
            println!(
                "manifest version {} (read from {}), {} rows in {} files, lag {} messages, complete through {}",
                st.manifest_version,
                st.checkpoint
                    .map(|c| format!("checkpoint {c}"))
                    .unwrap_or_else(|| "the log".into()),
                st.rows,
                st.files,
                st.lag,
                st.complete_through.as_deref().unwrap_or("-")
            );
            println!(
                "{:<24} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8}  {:<24} {:<24}",
                "topic",
                "part",
                "committed",
                "high",
                "lag",
                "rows",
                "files",
                "last commit",
                "latest event"
            );
            for p in &st.partitions {
                let o = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8}  {:<24} {:<24}",
                    p.topic,
                    p.partition,
                    o(p.committed_through),
                    o(p.high_watermark),
                    o(p.lag),
                    p.rows,
                    p.files,
                    p.last_commit.as_deref().unwrap_or("-"),
                    p.max_event_time.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        Command::Verify { job, json, kafka } => {
            let job = Job::load(&job)?;
            let rt = runtime()?;
            let manifest = sluice::open_manifest(&job)?;
            let mut report = rt.block_on(sluice::audit::verify(&manifest))?;
            if kafka {
                sluice::audit::check_with_kafka(&job, &mut report)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} entries, {} checkpoints, {} data files ({} rows), {} dead-letter files ({} records)",
                    report.entries,
                    report.checkpoints,
                    report.data_files,
                    report.rows,
                    report.dead_letter_files,
                    report.dead_letters
                );
                for p in &report.partitions {
                    let ranges: Vec<String> = p
                        .ranges
                        .iter()
                        .map(|(a, b)| format!("[{a}, {b})"))
                        .collect();
                    println!(
                        "  {}/{}: offsets {} — {} rows, {} dead-lettered",
                        p.topic,
                        p.partition,
                        ranges.join(" "),
                        p.rows,
                        p.dead_letters
                    );
                }
                println!(
                    "{} offsets checked one by one against rows, dead letters and recorded non-records",
                    report.offsets_checked
                );
                for s in &report.unrecorded_non_records {
                    println!(
                        "  {}/{}: offsets [{}, {}) of entry {} hold no record in Kafka (not recorded as such)",
                        s.topic, s.partition, s.from, s.to, s.seq
                    );
                }
                for v in &report.violations {
                    println!("VIOLATION {}", serde_json::to_string(v)?);
                }
                if report.violations.is_empty() {
                    println!("clean");
                }
            }
            if !report.violations.is_empty() {
                anyhow::bail!("{} violation(s)", report.violations.len());
            }
            Ok(())
        }
        Command::Gc {
            job,
            dry_run,
            older_than,
        } => {
            let job = Job::load(&job)?;
            let older_than_ms = sluice::window::parse_duration_ms(&older_than)
                .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
            let rt = runtime()?;
            let manifest = sluice::open_manifest(&job)?;
            let report = rt.block_on(sluice::audit::gc(&manifest, older_than_ms, dry_run))?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for p in &report.deleted {
                println!("{verb} {p}");
            }
            println!(
                "{} files scanned, {} referenced, {} {verb}, {} unreferenced but younger than {older_than} (kept)",
                report.scanned,
                report.referenced,
                report.deleted.len(),
                report.kept_young.len()
            );
            Ok(())
        }
        Command::Files {
            job,
            json,
            dead_letters,
        } => {
            let job = Job::load(&job)?;
            let rt = runtime()?;
            let manifest = sluice::open_manifest(&job)?;
            let state = rt.block_on(manifest.load())?;
            let base = redact_url(&job.storage_url);
            let base = base.trim_end_matches('/');
            let url = |rel: &str| format!("{base}/{rel}");
            if dead_letters {
                for d in &state.dead_letters {
                    if json {
                        let mut v = serde_json::to_value(d)?;
                        v["url"] = url(&d.path).into();
                        println!("{v}");
                    } else {
                        println!("{}", url(&d.path));
                    }
                }
            } else {
                for f in &state.files {
                    if json {
                        let mut v = serde_json::to_value(f)?;
                        v["url"] = url(&f.path).into();
                        println!("{v}");
                    } else {
                        println!("{}", url(&f.path));
                    }
                }
            }
            Ok(())
        }
    }
}
