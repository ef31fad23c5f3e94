//! `coordinator`: loads configuration, sets up telemetry and runs until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use renderfleet_platform::telemetry;
use renderfleet_shared::config::{self, CoordinatorConfig};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// The renderfleet coordinator: API, dispatch, outbox publisher, result consumer.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (see ops/coordinator.example.toml); environment variables
    /// override it.
    #[arg(long, env = "RENDERFLEET_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}; check the path given to --config / RENDERFLEET_CONFIG", p.display()))?),
        None => None,
    };
    let path = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let loaded = config::load::<CoordinatorConfig>(text.as_deref().map(|t| (path.as_str(), t)), std::env::vars().filter(|(k, _)| k != "RENDERFLEET_CONFIG"))?;
    telemetry::init_logging(&loaded.config.log);
    if !loaded.ignored_env.is_empty() {
        tracing::info!(vars = ?loaded.ignored_env, "environment variables not used by the coordinator");
    }
    let metrics = telemetry::init_metrics();
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    renderfleet_coordinator::run(loaded.config, metrics, shutdown).await?;
    Ok(())
}

async fn signal(token: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}
