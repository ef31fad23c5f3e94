//! `worker`: loads configuration, sets up telemetry and runs until SIGTERM (drain) or Ctrl-C.

use clap::Parser;
use renderfleet_platform::{boot, telemetry};
use renderfleet_shared::config::WorkerConfig;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// A renderfleet worker: runs the modules it is configured for.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (see ops/worker.example.toml); environment variables override it.
    #[arg(long, env = "RENDERFLEET_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(serve());
    // A blocking thread stuck in I/O no timeout can interrupt (an `open` on a hung network
    // mount) must not keep a stopped worker alive: its attempt has already been given up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    let loaded = boot::load_config::<WorkerConfig>(args.config.as_deref())?;
    telemetry::init_logging(&loaded.config.log);
    if !loaded.ignored_env.is_empty() {
        tracing::info!(vars = ?loaded.ignored_env, "environment variables not used by the worker");
    }
    let metrics = telemetry::init_metrics();
    let shutdown = CancellationToken::new();
    tokio::spawn(boot::cancel_on_signal(shutdown.clone()));
    renderfleet_worker::run(loaded.config, metrics, shutdown).await?;
    Ok(())
}
