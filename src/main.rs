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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
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
        Command::Run { job, once } => {
            let job = Job::load(&job)?;
            let rt = runtime()?;
            let shutdown = Arc::new(AtomicBool::new(false));
            let flag = shutdown.clone();
            rt.spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) =
                    (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
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
            let stats = Loader::new(job, rt, shutdown)?.run(mode)?;
            println!("{}", serde_json::to_string(&stats)?);
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
