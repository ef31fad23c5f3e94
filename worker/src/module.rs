//! The contract every module keeps: the [`Module`] trait, how an attempt fails
//! ([`ModuleError`]) and what modules share ([`Env`]). The catalogue of modules a worker can
//! run is `modules/mod.rs`; `blender/` and `tools/`, which modules call, depend on this file
//! only.
//!
//! The executor (see `consumer`) enforces the node's timeout and cancellation by dropping the
//! module's future, so a module that starts a child process must tie the child to that
//! future (`kill_on_drop`) and never leave it running.

use crate::artifacts::{Store, StoreError};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::config::ToolsConfig;
use renderfleet_shared::wire::TaskMessage;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub type ModuleFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ModuleError>> + Send + 'a>>;

/// One kind of work a worker can do.
pub trait Module: Send + Sync {
    /// The module key: the queue it consumes and the `module_key` of its nodes.
    fn key(&self) -> &'static str;
    /// Runs one attempt; returns the node's outputs (artifact references, metadata).
    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a>;
}

/// How an attempt failed, and whether another attempt can help.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Another attempt may succeed (a flaky tool, a busy host).
    #[error("{message}")]
    Retryable { message: String, log_tail: Option<String> },
    /// Another attempt will fail the same way (bad input, bad params).
    #[error("{message}")]
    Fatal { message: String, log_tail: Option<String> },
    /// This host cannot do it (a tool that will not start or was killed, a full disk):
    /// another host may, so it is retried, and a module that keeps failing so on one host is
    /// quarantined there (see `consumer::quarantine`).
    #[error("{message}")]
    Host { message: String, log_tail: Option<String> },
}

impl ModuleError {
    pub fn retryable(&self) -> bool {
        matches!(self, ModuleError::Retryable { .. } | ModuleError::Host { .. })
    }

    pub fn log_tail(&self) -> Option<String> {
        match self {
            ModuleError::Retryable { log_tail, .. } | ModuleError::Fatal { log_tail, .. } | ModuleError::Host { log_tail, .. } => {
                log_tail.clone()
            }
        }
    }

    /// A host fault: writing to the scratch space or the store failed here.
    pub(crate) fn host(message: impl Into<String>) -> Self {
        ModuleError::Host { message: message.into(), log_tail: None }
    }
}

impl From<StoreError> for ModuleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadRef(_) => ModuleError::Fatal { message: e.to_string(), log_tail: None },
            // A missing file may be a store that is still syncing; an I/O error may pass.
            StoreError::Missing { .. } => ModuleError::Retryable { message: e.to_string(), log_tail: None },
            StoreError::Io { .. } => ModuleError::host(e.to_string()),
        }
    }
}

/// What modules share: the artifact store, where CAD files and scratch space are, the tools.
#[derive(Debug)]
pub struct Env {
    pub store: Store,
    pub cad_dir: PathBuf,
    pub scratch: PathBuf,
    pub tools: ToolsConfig,
    /// The scripts the tools run, written out at start-up from this binary.
    pub scripts: crate::scripts::Scripts,
    pub blender: renderfleet_shared::config::BlenderConfig,
    /// Warm Blender processes, when `blender.warm` is on.
    pub(crate) warm_blender: Option<crate::blender::warm::Pool>,
}

/// The artifact reference on input `port`, or a fatal error naming the port.
pub(crate) fn input_ref(task: &TaskMessage, port: &str) -> Result<ArtifactRef, ModuleError> {
    task.inputs.get(port).and_then(ArtifactRef::from_value).ok_or_else(|| ModuleError::Fatal {
        message: format!("input `{port}` of node `{}` is missing or not an artifact; connect an upstream output to it", task.node_id),
        log_tail: None,
    })
}

/// An optional artifact input: absent or null is `None`, anything else must be a reference.
pub(crate) fn optional_ref(task: &TaskMessage, port: &str) -> Result<Option<ArtifactRef>, ModuleError> {
    match task.inputs.get(port) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => input_ref(task, port).map(Some),
    }
}

/// A bad-input error: another attempt will fail the same way.
pub(crate) fn fatal(message: impl Into<String>) -> ModuleError {
    ModuleError::Fatal { message: message.into(), log_tail: None }
}
