//! `coordinator`: loads configuration, sets up telemetry and runs until SIGTERM or Ctrl-C;
//! `coordinator openapi` prints the API's OpenAPI document instead.

use clap::{Parser, Subcommand};
use renderfleet_platform::{boot, telemetry};
use renderfleet_shared::config::CoordinatorConfig;
use std::io::Write;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Set to 1 in a debug build: the registry gets its test node types (`test.palette_probe`).
const TEST_TYPES_VAR: &str = "RENDERFLEET_REGISTRY_TEST_TYPES";

/// The renderfleet coordinator: API, dispatch, outbox publisher, result consumer.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (see ops/coordinator.example.toml); environment variables
    /// override it.
    #[arg(long, env = "RENDERFLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OpenAPI document that /v1/openapi.json serves (byte for byte) and exit;
    /// needs no configuration, database or broker (for generating clients).
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Openapi) = args.command {
        let mut out = std::io::stdout().lock();
        out.write_all(renderfleet_coordinator::api::openapi_document().as_bytes())?;
        out.flush()?;
        return Ok(());
    }
    // Before anything reads the registry: it is built once.
    let asked = std::env::var(TEST_TYPES_VAR).is_ok_and(|v| v == "1");
    #[cfg(debug_assertions)]
    let test_types = asked && renderfleet_shared::registry::enable_test_types();
    #[cfg(not(debug_assertions))]
    let test_types = false;
    let loaded = boot::load_config::<CoordinatorConfig>(args.config.as_deref())?;
    telemetry::init_logging(&loaded.config.log);
    let ignored: Vec<&String> = loaded.ignored_env.iter().filter(|v| *v != TEST_TYPES_VAR).collect();
    if !ignored.is_empty() {
        tracing::info!(vars = ?ignored, "environment variables not used by the coordinator");
    }
    if test_types {
        tracing::warn!("{TEST_TYPES_VAR}=1: the registry has its test node types (test.palette_probe), which no worker serves");
    } else if asked {
        tracing::warn!("{TEST_TYPES_VAR}=1 is ignored: test node types exist only in debug builds");
    }
    let metrics = telemetry::init_metrics();
    let shutdown = CancellationToken::new();
    tokio::spawn(boot::cancel_on_signal(shutdown.clone()));
    renderfleet_coordinator::run(loaded.config, metrics, shutdown).await?;
    Ok(())
}
