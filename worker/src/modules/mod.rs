//! Modules: the code a worker runs for a node. One file per module behind the [`Module`]
//! trait; the registry maps module keys to implementations.
//!
//! The executor (see `consumer`) enforces the node's timeout and cancellation by dropping the
//! module's future, so a module that starts a child process must tie the child to that
//! future (`kill_on_drop`) and never leave it running.

mod fail;
mod noop;
mod sleep;

use renderfleet_shared::wire::TaskMessage;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
}

impl ModuleError {
    pub fn retryable(&self) -> bool {
        matches!(self, ModuleError::Retryable { .. })
    }

    pub fn log_tail(&self) -> Option<String> {
        match self {
            ModuleError::Retryable { log_tail, .. } | ModuleError::Fatal { log_tail, .. } => log_tail.clone(),
        }
    }
}

/// Every module this build has.
fn all() -> Vec<Arc<dyn Module>> {
    vec![Arc::new(noop::Noop), Arc::new(sleep::Sleep), Arc::new(fail::Fail)]
}

#[derive(Debug, thiserror::Error)]
#[error("unknown module `{name}` in the worker's `modules` setting (RENDERFLEET_MODULES); this build has: {known}")]
pub struct UnknownModule {
    pub name: String,
    pub known: String,
}

/// The modules named in the configuration.
pub fn registry(names: &[String]) -> Result<BTreeMap<String, Arc<dyn Module>>, UnknownModule> {
    let all = all();
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|m| m.key() == name)
                .map(|m| (name.clone(), m.clone()))
                .ok_or_else(|| UnknownModule { name: name.clone(), known: all.iter().map(|m| m.key()).collect::<Vec<_>>().join(", ") })
        })
        .collect()
}
