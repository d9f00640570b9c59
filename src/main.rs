#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use sluice::config::{redact_url, Job};
use sluice::load::{Loader, Run};
use sluice::ops;
use sluice::record::source;
use sluice::table::manifest::Manifest;

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
    /// Write a job and an Avro schema from a sample of a live topic: JSON payloads get an
    /// inferred schema, Confluent Avro ones the registry's latest schema of `<topic>-value`.
    /// Prints what it chose and why, and how many sampled records the schema accepts.
    #[command(
        after_help = "Examples:\n  sluice init --brokers localhost:9092 --topic orders\n  sluice init --brokers localhost:9092 --topic orders --registry http://localhost:8081\n  SLUICE_SASL_PASSWORD=... sluice init --brokers b1:9093 --topic orders --property security.protocol=SASL_SSL \\\n      --property sasl.mechanism=SCRAM-SHA-512 --property sasl.username=loader --property sasl.password\nThen: sluice run --once --job jobs/orders.toml"
    )]
    Init(InitArgs),
    /// Load the job's topics into its table: continuously, or with --once up to the current end.
    #[command(
        after_help = "Examples:\n  sluice run --job jobs/payments.toml                 # continuous; SIGTERM commits what is buffered\n  sluice run --job jobs/payments.toml --once          # load up to the current end, commit, exit\n  sluice run --job jobs/payments.toml --metrics-addr 127.0.0.1:9464"
    )]
    Run(RunArgs),
    /// Print the table's committed data files, one URL a line.
    #[command(
        after_help = "Examples:\n  sluice files --job jobs/payments.toml\n  sluice files --job jobs/payments.toml --json\n  sluice files --job jobs/payments.toml --dead-letters"
    )]
    Files(FilesArgs),
    /// Load an offset range (half-open) through the same commit path: fill offsets never
    /// loaded, or with --replace re-derive loaded ones and swap their files atomically.
    #[command(
        after_help = "Examples:\n  sluice backfill --job jobs/payments.toml --from 0 --to 5000 --partition 3 --dry-run\n  sluice backfill --job jobs/payments.toml --from 0 --to latest --replace\n  sluice backfill --job jobs/payments.toml --from 0 --to latest --to-table /tmp/sandbox"
    )]
    Backfill(BackfillArgs),
    /// Show each partition's committed offset, the broker's high watermark, the lag, the last
    /// commit, the latest event time loaded, files and rows.
    #[command(after_help = "Example:\n  sluice status --job jobs/payments.toml --json")]
    Status(StatusArgs),
    /// Audit the table: files exist with the recorded size and row count, offset ranges are
    /// contiguous and never overlap, checkpoints agree with the entries. Exits 1 on violations.
    #[command(
        after_help = "Examples:\n  sluice verify --job jobs/payments.toml\n  sluice verify --job jobs/payments.toml --kafka      # ask the broker about every hole"
    )]
    Verify(VerifyArgs),
    /// Delete data and dead-letter files no manifest entry references (left by crashes before
    /// a commit) that are older than the grace period and that no Delta version inside the
    /// retention period references.
    #[command(
        after_help = "Example:\n  sluice gc --job jobs/payments.toml --dry-run --older-than 24h"
    )]
    Gc(GcArgs),
    /// Merge windows' small files into files of about the target size, in one `compact` entry
    /// per window; each new file records the offset spans of every row it holds.
    #[command(
        after_help = "Examples:\n  sluice compact --job jobs/payments.toml --dry-run\n  sluice compact --job jobs/payments.toml --window 2026-11-24T13:00:00Z --target-size 128MiB"
    )]
    Compact(CompactArgs),
    /// Accept a retention gap: record offsets Kafka deleted before they were loaded as lost, so
    /// the loader reads on from --to (only offsets Kafka no longer has can be skipped).
    #[command(
        after_help = "Example:\n  sluice skip --job jobs/payments.toml --topic payments --partition 3 --to 1500"
    )]
    Skip(SkipArgs),
    /// Wait until a window is closed (no more rows will be added to it, but late additions
    /// and backfills): exits 0 once it is, 2 on timeout, 1 on an error.
    #[command(
        after_help = "Example:\n  sluice wait --job jobs/payments.toml --window-closed 2026-11-24T13:00:00Z --timeout 2h"
    )]
    Wait(WaitArgs),
    /// The table's Delta Lake log (`_delta_log/`), kept in step with the manifest.
    #[command(
        subcommand,
        after_help = "Example:\n  sluice delta sync --job jobs/payments.toml"
    )]
    Delta(DeltaCommand),
    /// The job's schema against the table's.
    #[command(
        subcommand,
        after_help = "Example:\n  sluice schema check --job jobs/payments.toml"
    )]
    Schema(SchemaCommand),
    /// Produce realistic payment events (about 250 bytes of JSON) to a topic, for demos and
    /// benchmarks.
    #[command(
        after_help = "Example:\n  sluice generate --topic payments --count 100000 --create-partitions 4"
    )]
    Generate(GenerateArgs),
}

#[derive(Args)]
struct InitArgs {
    /// Bootstrap servers, `host:port[,host:port…]`.
    #[arg(long, env = "SLUICE_BROKERS")]
    brokers: String,
    /// The topic to sample and load.
    #[arg(long)]
    topic: String,
    /// Records to sample at most: the newest of each partition, shared out evenly.
    #[arg(long, default_value_t = 1000)]
    sample: usize,
    /// A Confluent-compatible schema registry, for Confluent Avro payloads.
    #[arg(long)]
    registry: Option<String>,
    /// Registry basic-auth user (the password from SCHEMA_REGISTRY_PASSWORD).
    #[arg(long, requires = "registry")]
    registry_username: Option<String>,
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    registry_password: Option<String>,
    /// The job file to write [default: jobs/<topic>.toml].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The schema file to write [default: schemas/<topic>.avsc].
    #[arg(long)]
    schema_out: Option<PathBuf>,
    /// The table's storage URL (s3://bucket/prefix, a folder…) [default: warehouse/<topic>].
    #[arg(long)]
    table: Option<String>,
    /// A librdkafka property for the sample, also written into the job (repeatable);
    /// passwords and secrets are written as `${SLUICE_…}` references to the environment, and
    /// a secret given without `=VALUE` is read from that variable (`--property sasl.password`
    /// reads SLUICE_SASL_PASSWORD), so it is never on a command line.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Overwrite the job and schema files if they exist.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The job file (TOML).
    #[arg(long)]
    job: PathBuf,
    /// Load up to each partition's end as of now, commit, and exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics (`/metrics`) and `/healthz` on this address.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Record a job schema that removes columns from the table's: readers then see the new
    /// schema; older files keep the removed columns. (Changes that would leave older files
    /// unreadable, such as a type change, are refused even so: they make a new table.)
    #[arg(long)]
    allow_incompatible_schema: bool,
}

#[derive(Args)]
struct FilesArgs {
    #[arg(long)]
    job: PathBuf,
    /// Print the manifest's description of each file as JSON.
    #[arg(long)]
    json: bool,
    /// List the dead-letter files instead of the data files.
    #[arg(long)]
    dead_letters: bool,
}

#[derive(Args)]
struct BackfillArgs {
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
    /// As for `run`.
    #[arg(long)]
    allow_incompatible_schema: bool,
}

#[derive(Args)]
struct SkipArgs {
    #[arg(long)]
    job: PathBuf,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    partition: i32,
    /// One past the last lost offset: at most the partition's first offset in Kafka now.
    #[arg(long)]
    to: i64,
}

#[derive(Args)]
struct StatusArgs {
    #[arg(long)]
    job: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[arg(long)]
    job: PathBuf,
    #[arg(long)]
    json: bool,
    /// Also ask the broker about every hole (records lost, or offsets that hold no record
    /// in tables written before sluice recorded them) and every recorded non-record.
    #[arg(long)]
    kafka: bool,
}

#[derive(Args)]
struct GcArgs {
    #[arg(long)]
    job: PathBuf,
    /// Only say what would be deleted.
    #[arg(long)]
    dry_run: bool,
    /// Grace period: never touch files younger than this (an in-flight commit's).
    #[arg(long, default_value = "24h")]
    older_than: String,
}

#[derive(Args)]
struct CompactArgs {
    #[arg(long)]
    job: PathBuf,
    /// Only the window starting at this time (RFC 3339, e.g. 2026-11-24T13:00:00Z).
    #[arg(long)]
    window: Option<String>,
    /// Files of about this size (default: the job's `compaction.target_size`).
    #[arg(long)]
    target_size: Option<String>,
    /// Print what would be merged, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct WaitArgs {
    #[arg(long)]
    job: PathBuf,
    /// Any time in the window (RFC 3339), e.g. 2026-11-24T13:00:00Z for its start.
    #[arg(long)]
    window_closed: String,
    /// Give up after this long (e.g. 90s, 2h).
    #[arg(long, default_value = "1h")]
    timeout: String,
    /// Read the manifest this often.
    #[arg(long, default_value = "5s")]
    poll: String,
}

#[derive(Subcommand)]
enum DeltaCommand {
    /// Write every Delta version the manifest has and the log lacks (loaders do this at every
    /// commit; use it after `[delta]` was disabled, or to rebuild a log moved aside).
    Sync(DeltaSyncArgs),
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the job's schema changes against the table's, field by field, without loading
    /// anything: exits 0 when there are none or all are compatible, 1 when one is not
    /// (incompatible: `run` needs --allow-incompatible-schema; unreadable: a new table).
    Check(SchemaCheckArgs),
}

#[derive(Args)]
struct SchemaCheckArgs {
    #[arg(long)]
    job: PathBuf,
}

#[derive(Args)]
struct DeltaSyncArgs {
    #[arg(long)]
    job: PathBuf,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, env = "SLUICE_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Create the topic with this many partitions first.
    #[arg(long)]
    create_partitions: Option<i32>,
    /// Spread events over this many partitions [default: --create-partitions, else 4].
    #[arg(long)]
    partitions: Option<i32>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(&cli.log_format) {
        eprintln!("sluice: error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Init(a) => init(a),
        Command::Run(a) => run(a),
        Command::Files(a) => files(a),
        Command::Backfill(a) => backfill(a),
        Command::Status(a) => status(a),
        Command::Verify(a) => verify(a),
        Command::Gc(a) => gc(a),
        Command::Compact(a) => compact(a),
        Command::Skip(a) => skip(a),
        Command::Wait(a) => match wait(a) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Command::Delta(DeltaCommand::Sync(a)) => delta_sync(a),
        Command::Generate(a) => generate(a),
        Command::Schema(SchemaCommand::Check(a)) => schema_check(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each cause left out when the message already says it (typed
/// errors here put their source in their message).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn init_logs(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => logs.json().init(),
        "human" => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        other => anyhow::bail!("--log-format {other}: expected `human` or `json`"),
    }
    Ok(())
}

const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn runtime() -> anyhow::Result<Arc<tokio::runtime::Runtime>> {
    Ok(Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?,
    ))
}

/// A runtime and the job's table.
fn open_table(job: &Job) -> anyhow::Result<(Arc<tokio::runtime::Runtime>, Manifest)> {
    Ok((runtime()?, sluice::open_manifest(job)?))
}

/// A flag set on SIGINT or SIGTERM. The handlers are in place when this returns (a signal
/// before that ends the process as it would any program, with nothing done yet).
fn shutdown_on_signal(rt: &tokio::runtime::Runtime) -> Arc<AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    let _context = rt.enter();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for SIGINT/SIGTERM: stop with SIGKILL");
        return shutdown;
    };
    rt.spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        flag.store(true, Ordering::Relaxed);
    });
    shutdown
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let mut properties = std::collections::BTreeMap::new();
    for p in &a.properties {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.to_string()),
            // A secret named without its value comes from the variable the job will read it
            // from, so it is never on a command line.
            None => match ops::init::secret_var(p.trim()) {
                Some(var) => {
                    let v = std::env::var(&var).with_context(|| {
                        format!("--property {p}: its value comes from ${var}, which is not set")
                    })?;
                    (p.trim().to_string(), v)
                }
                None => anyhow::bail!("--property {p}: expected KEY=VALUE"),
            },
        };
        properties.insert(k, v);
    }
    let opts = ops::init::Options {
        out: a
            .out
            .unwrap_or_else(|| PathBuf::from("jobs").join(format!("{}.toml", a.topic))),
        schema_out: a
            .schema_out
            .unwrap_or_else(|| PathBuf::from("schemas").join(format!("{}.avsc", a.topic))),
        brokers: a.brokers,
        topic: a.topic,
        sample: a.sample.max(1),
        registry: a.registry.map(|url| ops::init::Registry {
            url,
            username: a.registry_username,
            password: a.registry_password,
        }),
        table: a.table,
        properties,
        force: a.force,
    };
    for line in ops::init::init(&opts)? {
        println!("{line}");
    }
    Ok(())
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let mut job = Job::load(&a.job)?;
    job.allow_incompatible_schema = a.allow_incompatible_schema;
    let rt = runtime()?;
    let shutdown = shutdown_on_signal(&rt);
    tracing::info!(
        job = %job.path.display(),
        topics = ?job.topics,
        table = %redact_url(&job.storage_url),
        "starting"
    );
    let mut loader = Loader::new(job.clone(), rt.clone(), shutdown)?;
    if !a.once && job.compaction.enabled {
        let manifest = loader.manifest().clone();
        let compact = ops::compact::in_background(job, manifest, rt.clone(), loader.metrics());
        loader = loader.with_compaction(compact);
    }
    if let Some(addr) = a.metrics_addr {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&addr))
            .with_context(|| format!("--metrics-addr {addr}"))?;
        tracing::info!(addr = %addr, "serving /metrics and /healthz");
        rt.spawn(ops::metrics::serve(listener, loader.metrics()));
    }
    let stats = loader.run(if a.once { Run::Once } else { Run::Continuous })?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    if let Some(n) = a.create_partitions {
        match runtime()?.block_on(ops::generate::create_topic(&a.brokers, &a.topic, n)) {
            // A second run of the same command: produce to the topic there is.
            Err(rdkafka::error::KafkaError::AdminOp(
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
            )) => eprintln!("topic {} exists: producing to it as it is", a.topic),
            r => r.with_context(|| format!("creating topic {}", a.topic))?,
        }
    }
    let start_ms = chrono::DateTime::parse_from_rfc3339(&a.start)
        .with_context(|| format!("--start {}", a.start))?
        .timestamp_millis();
    let span_ms =
        sluice::config::parse_duration_ms(&a.span).map_err(|e| anyhow::anyhow!("--span: {e}"))?;
    let spec = ops::generate::GenSpec {
        first_id: a.first_id,
        count: a.count,
        partitions: a.partitions.or(a.create_partitions).unwrap_or(4),
        start_ms,
        span_ms,
        disorder_permille: a.disorder_permille,
        malformed_permille: a.malformed_permille,
        scatter: a.scatter,
        seed: a.seed,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let malformed = ops::generate::produce(&a.brokers, &a.topic, &spec)
        .with_context(|| format!("producing to {} at {}", a.topic, a.brokers))?;
    eprintln!(
        "produced {} events ({malformed} malformed) to {} in {:.1}s",
        a.count,
        a.topic,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn backfill(a: BackfillArgs) -> anyhow::Result<()> {
    let mut job = Job::load(&a.job)?;
    job.allow_incompatible_schema = a.allow_incompatible_schema;
    if let Some(url) = a.to_table {
        job.storage_url = sluice::config::resolve_storage_url(&url, std::path::Path::new("."))
            .map_err(|e| anyhow::anyhow!("--to-table: {e}"))?;
    }
    let to = match a.to.as_str() {
        "latest" => None,
        n => Some(
            n.parse::<i64>()
                .context("--to takes an offset or `latest`")?,
        ),
    };
    let (rt, manifest) = open_table(&job)?;
    let state = rt.block_on(manifest.load())?;
    let consumer = source::lookup_consumer(job.source())?;
    let mut parts = source::all_partitions(&consumer, &job.topics, LOOKUP_TIMEOUT)?;
    if !a.partitions.is_empty() {
        if let Some(p) = a
            .partitions
            .iter()
            .find(|p| !parts.iter().any(|(_, q)| q == *p))
        {
            anyhow::bail!("--partition {p}: no such partition in {:?}", job.topics);
        }
        parts.retain(|(_, p)| a.partitions.contains(p));
    }
    let marks = source::watermarks(&consumer, &parts, LOOKUP_TIMEOUT)?;
    drop(consumer);
    let lows = marks.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    let request = ops::backfill::Request {
        partitions: parts,
        from: a.from,
        to,
        replace: a.replace,
    };
    let plan = ops::backfill::plan(&state, &lows, &request).context("backfill refused")?;
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
    if a.dry_run {
        println!("{}", serde_json::to_string(&plan)?);
        return Ok(());
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let stats = Loader::with_manifest(job, manifest, rt, shutdown)?.run(Run::Backfill(plan))?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn schema_check(a: SchemaCheckArgs) -> anyhow::Result<()> {
    use sluice::table::evolve::{compare, Verdict};
    let job = Job::load(&a.job)?;
    let (rt, manifest) = open_table(&job)?;
    let state = rt.block_on(manifest.load())?;
    let verdict = compare(state.schema.as_ref(), &sluice::schema_def(&job)?);
    match (&verdict, &state.schema) {
        (Verdict::Same, None) => println!("the table records no schema yet: the job's is recorded at its first commit"),
        (Verdict::Same, Some(_)) => println!("the job's schema is the table's"),
        (Verdict::Compatible(_), _) => print!(
            "compatible: recorded at the next commit (older rows read as null where a column is new)\n{}",
            verdict.report()
        ),
        (Verdict::Incompatible(_), _) => {
            print!(
                "incompatible: `run` refuses to start without --allow-incompatible-schema\n{}",
                verdict.report()
            );
            std::process::exit(1);
        }
        (Verdict::Unreadable(_), _) => {
            print!(
                "unreadable: older files would not read under this schema; `run` refuses it (a new table)\n{}",
                verdict.report()
            );
            std::process::exit(1);
        }
    }
    Ok(())
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let (rt, manifest) = open_table(&job)?;
    let state = rt.block_on(manifest.load())?;
    let parts = {
        let consumer = source::lookup_consumer(job.source())?;
        source::all_partitions(&consumer, &job.topics, LOOKUP_TIMEOUT)?
    };
    let highs = source::served_high_watermarks(job.source(), &parts, LOOKUP_TIMEOUT)?;
    let st = ops::status::status(&state, &parts, &highs);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", ops::status::render(&st));
    }
    Ok(())
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let (rt, manifest) = open_table(&job)?;
    let mut report = rt.block_on(ops::verify::verify(&manifest))?;
    if let Some(iceberg) = sluice::open_iceberg(&job, &manifest)? {
        rt.block_on(ops::verify::check_catalog(&manifest, &iceberg, &mut report));
    }
    if a.kafka {
        ops::verify::check_with_kafka(&job, &mut report)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", ops::verify::render(&report)?);
    }
    if !report.violations.is_empty() {
        anyhow::bail!("{} violation(s)", report.violations.len());
    }
    Ok(())
}

fn gc(a: GcArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let older_than = sluice::config::parse_duration_ms(&a.older_than)
        .map(|ms| std::time::Duration::from_millis(ms.unsigned_abs()))
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let (rt, manifest) = open_table(&job)?;
    let retention = job.delta.map(|d| d.retention);
    let iceberg = sluice::open_iceberg(&job, &manifest)?;
    let report = rt.block_on(ops::gc::gc(
        &manifest,
        older_than,
        retention,
        iceberg.as_ref(),
        a.dry_run,
    ))?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for p in &report.deleted {
        println!("{verb} {p}");
    }
    if !report.iceberg_deleted.is_empty() {
        println!(
            "{verb} {} Iceberg metadata files no kept snapshot or metadata log names (older versions, expired snapshots' manifest lists, merged manifests)",
            report.iceberg_deleted.len()
        );
    }
    println!(
        "{} files scanned, {} referenced, {} {verb}, {} unreferenced but younger than {} (kept)",
        report.scanned,
        report.referenced,
        report.deleted.len(),
        report.kept_young.len(),
        a.older_than
    );
    let why = match (retention, job.iceberg.is_some()) {
        (Some(r), false) => Some(format!("Delta time travel for {} h (delta.retention", r.as_secs() / 3600)),
        (Some(r), true) => Some(format!(
            "Delta time travel for {} h (delta.retention) or a kept Iceberg snapshot (iceberg.retention, iceberg.max_snapshots",
            r.as_secs() / 3600
        )),
        (None, true) => Some("a kept Iceberg snapshot (iceberg.retention, iceberg.max_snapshots".to_string()),
        (None, false) => None,
    };
    if let Some(why) = why {
        println!(
            "{} files out of the manifest but readable by {why}; kept)",
            report.kept_for_time_travel.len(),
        );
    }
    Ok(())
}

fn skip(a: SkipArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let part = (a.topic.clone(), a.partition);
    let (low, _) = {
        let consumer = source::lookup_consumer(job.source())?;
        source::watermarks(&consumer, std::slice::from_ref(&part), LOOKUP_TIMEOUT)?
            .remove(&part)
            .with_context(|| format!("{}/{}: no watermarks", a.topic, a.partition))?
    };
    let (rt, manifest) = open_table(&job)?;
    let committer = ops::compact::committer(&job, manifest, rt, "skip")?;
    let done = ops::skip::skip(&committer, &a.topic, a.partition, a.to, low)?;
    eprintln!(
        "{}/{}: offsets [{}, {}) recorded as lost in entry {}; the loader reads on from {}",
        done.topic, done.partition, done.from, done.to, done.seq, done.to
    );
    println!("{}", serde_json::to_string(&done)?);
    Ok(())
}

fn compact(a: CompactArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let mut options = ops::compact::Options::of(&job);
    if let Some(w) = &a.window {
        let ms = chrono::DateTime::parse_from_rfc3339(w)
            .with_context(|| format!("--window {w}: expected an RFC 3339 time"))?
            .timestamp_millis();
        options.window = Some(job.window.start_of(ms));
    }
    if let Some(t) = &a.target_size {
        options.target_bytes =
            sluice::config::parse_size(t).map_err(|e| anyhow::anyhow!("--target-size: {e}"))?;
    }
    let (rt, manifest) = open_table(&job)?;
    let committer = ops::compact::committer(&job, manifest, rt, "compact")?;
    let plans = ops::compact::plan(&committer.snapshot(), &options);
    for p in &plans {
        let inputs = p.inputs().count();
        let bytes: u64 = p.inputs().map(|f| f.bytes).sum();
        eprintln!(
            "window {}: {inputs} files ({bytes} bytes) into {}",
            ops::status::rfc3339(p.window_start_ms).unwrap_or_default(),
            p.outputs.len()
        );
    }
    if a.dry_run {
        println!("{}", serde_json::to_string(&plans)?);
        return Ok(());
    }
    let props = sluice::record::encode::writer_properties(job.compression, job.row_group_rows);
    let done = ops::compact::compact(&committer, &plans, &ops::compact::SortBy::of(&job), &props)?;
    println!("{}", serde_json::to_string(&done)?);
    if let Some(r) = done.iter().find_map(|d| d.refused.as_ref()) {
        anyhow::bail!("a window was not compacted (another writer took its files first): {r}");
    }
    Ok(())
}

/// `sluice wait`: whether the window closed before the timeout.
fn wait(a: WaitArgs) -> anyhow::Result<bool> {
    let job = Job::load(&a.job)?;
    let at = chrono::DateTime::parse_from_rfc3339(&a.window_closed)
        .with_context(|| {
            format!(
                "--window-closed {}: expected an RFC 3339 time",
                a.window_closed
            )
        })?
        .timestamp_millis();
    let ms = |flag: &str, v: &str| {
        sluice::config::parse_duration_ms(v)
            .map(|ms| std::time::Duration::from_millis(ms.unsigned_abs()))
            .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let (timeout, poll) = (ms("timeout", &a.timeout)?, ms("poll", &a.poll)?);
    let start = job.window.start_of(at);
    let end = start + job.window.millis();
    let name = sluice::table::closed::rfc3339(start);
    let (rt, manifest) = open_table(&job)?;
    let mut state = rt.block_on(manifest.load())?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(c) = state.closed_through_ms.filter(|&c| c >= end) {
            println!(
                "window {name} is closed (windows closed through {}, manifest entry {})",
                sluice::table::closed::rfc3339(c),
                state.seq
            );
            return Ok(true);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            eprintln!(
                "sluice: window {name} is not closed after {} (windows closed through {})",
                a.timeout,
                state
                    .closed_through_ms
                    .map(sluice::table::closed::rfc3339)
                    .unwrap_or_else(|| "- (none yet)".into())
            );
            return Ok(false);
        }
        std::thread::sleep(poll.min(deadline - now));
        rt.block_on(manifest.refresh(&mut state))?;
    }
}

fn delta_sync(a: DeltaSyncArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let (rt, manifest) = open_table(&job)?;
    let Some(delta) = sluice::open_delta(&job, &manifest)? else {
        anyhow::bail!("{}: [delta] enabled = false", a.job.display());
    };
    let state = rt.block_on(manifest.load())?;
    let written = rt.block_on(delta.sync(&manifest, state.seq, None))?;
    println!(
        "Delta log: {written} versions written; versions 0..={} project manifest entries 1..={}",
        state.seq.saturating_sub(1),
        state.seq
    );
    Ok(())
}

fn files(a: FilesArgs) -> anyhow::Result<()> {
    let job = Job::load(&a.job)?;
    let (rt, manifest) = open_table(&job)?;
    let state = rt.block_on(manifest.load())?;
    let base = redact_url(&job.storage_url);
    let base = base.trim_end_matches('/');
    let print = |rel: &str, v: serde_json::Value| -> anyhow::Result<()> {
        let url = format!("{base}/{rel}");
        if a.json {
            let mut v = v;
            v["url"] = url.into();
            println!("{v}");
        } else {
            println!("{url}");
        }
        Ok(())
    };
    if a.dead_letters {
        for d in &state.dead_letters {
            print(&d.path, serde_json::to_value(d)?)?;
        }
    } else {
        for f in &state.files {
            print(&f.path, serde_json::to_value(f)?)?;
        }
    }
    Ok(())
}
