//! What both binaries do before they run: read the optional config file and the process
//! environment into their config struct, and turn SIGTERM / Ctrl-C into a cancellation.

use renderfleet_shared::config::{self, ConfigError, Loaded};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read config file {path}: {source}; check the path given to --config / RENDERFLEET_CONFIG")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Defaults, then the file at `path` (if any), then the environment.
pub fn load_config<T>(path: Option<&Path>) -> Result<Loaded<T>, BootError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let shown = path.map(|p| p.display().to_string()).unwrap_or_default();
    let text = match path {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|source| BootError::Read { path: shown.clone(), source })?),
        None => None,
    };
    let env = std::env::vars().filter(|(k, _)| k != "RENDERFLEET_CONFIG");
    Ok(config::load(text.as_deref().map(|t| (shown.as_str(), t)), env)?)
}

/// Cancels `token` on the first SIGTERM or Ctrl-C.
pub async fn cancel_on_signal(token: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}
