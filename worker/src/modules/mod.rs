//! Modules: the code a worker runs for a node. One file per module behind the [`Module`]
//! trait; the registry maps module keys to implementations.
//!
//! The executor (see `consumer`) enforces the node's timeout and cancellation by dropping the
//! module's future, so a module that starts a child process must tie the child to that
//! future (`kill_on_drop`) and never leave it running.

mod blender_blend;
mod blender_still;
mod blender_turntable;
mod cad_resolve;
mod compare;
mod fail;
mod glb_export;
mod legacy_render;
mod materials;
mod metadata;
mod noop;
mod publish;
mod sleep;
mod video_encode;

use crate::artifacts::{Store, StoreError};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::config::{ToolsConfig, AUTO_MODULES};
use renderfleet_shared::wire::TaskMessage;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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

impl From<StoreError> for ModuleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadRef(_) => ModuleError::Fatal { message: e.to_string(), log_tail: None },
            // A missing file may be a store that is still syncing; an I/O error may pass.
            StoreError::Missing { .. } | StoreError::Io { .. } => ModuleError::Retryable { message: e.to_string(), log_tail: None },
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
}

/// An external program a module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    /// Python with the `cascadio` package.
    Cascadio,
    /// Blender with numpy (its glTF importer needs it).
    Blender,
    Ffmpeg,
}

impl Tool {
    /// Checks that the tool is there and works; the error says how to install it.
    pub async fn probe(self, tools: &ToolsConfig) -> Result<(), String> {
        let limit = Duration::from_secs(60);
        let (result, fix) = match self {
            Tool::Cascadio => (
                crate::tools::probe(&tools.python, &["-c", "import cascadio"], limit).await,
                format!("install it with `{} -m pip install cascadio` (and python3-numpy), or point [tools] python (RENDERFLEET_TOOLS__PYTHON) at a Python that has it", tools.python),
            ),
            Tool::Blender => (
                crate::tools::probe(&tools.blender, &["-b", "--factory-startup", "-noaudio", "--python-exit-code", "3", "--python-expr", "import numpy"], limit).await,
                format!("install Blender 3.4+ and python3-numpy (`apt-get install blender python3-numpy`), or set [tools] blender (RENDERFLEET_TOOLS__BLENDER); tried `{}`", tools.blender),
            ),
            Tool::Ffmpeg => (
                crate::tools::probe(&tools.ffmpeg, &["-hide_banner", "-version"], limit).await,
                format!("install ffmpeg (`apt-get install ffmpeg`), or set [tools] ffmpeg (RENDERFLEET_TOOLS__FFMPEG); tried `{}`", tools.ffmpeg),
            ),
        };
        result.map_err(|e| format!("{e}; {fix}"))
    }
}

/// Every module this build has, with the tools each needs.
fn all(env: &Arc<Env>) -> Vec<(Arc<dyn Module>, &'static [Tool])> {
    vec![
        (Arc::new(noop::Noop), &[]),
        (Arc::new(sleep::Sleep), &[]),
        (Arc::new(fail::Fail), &[]),
        (Arc::new(cad_resolve::CadResolve(env.clone())), &[]),
        (Arc::new(glb_export::GlbExport(env.clone())), &[Tool::Cascadio]),
        (Arc::new(metadata::Metadata(env.clone())), &[]),
        (Arc::new(materials::Materials(env.clone())), &[]),
        (Arc::new(blender_still::BlenderStill(env.clone())), &[Tool::Blender]),
        (Arc::new(blender_turntable::BlenderTurntable(env.clone())), &[Tool::Blender]),
        (Arc::new(blender_blend::BlenderBlend(env.clone())), &[Tool::Blender]),
        (Arc::new(video_encode::VideoEncode(env.clone())), &[Tool::Ffmpeg]),
        (Arc::new(publish::Publish), &[]),
        (Arc::new(compare::Compare(env.clone())), &[]),
        (Arc::new(legacy_render::LegacyRender(env.clone())), &[Tool::Cascadio, Tool::Blender, Tool::Ffmpeg]),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("unknown module `{name}` in the worker's `modules` setting (RENDERFLEET_MODULES); this build has: {known} (or `auto`)")]
    Unknown { name: String, known: String },
    #[error("module `{module}` was asked for (RENDERFLEET_MODULES) but this host cannot run it: {why}")]
    Unrunnable { module: String, why: String },
}

/// The modules to run: those named in the configuration (each must be runnable here), or
/// with `auto`, every module whose tools this host has; the others are logged and left out,
/// so their queues are never bound here.
pub async fn select(names: &[String], env: &Arc<Env>) -> Result<BTreeMap<String, Arc<dyn Module>>, SelectError> {
    let all = all(env);
    let auto = names.iter().any(|n| n == AUTO_MODULES);
    let wanted: Vec<&(Arc<dyn Module>, &[Tool])> = if auto {
        all.iter().collect()
    } else {
        names
            .iter()
            .map(|name| {
                all.iter().find(|(m, _)| m.key() == name).ok_or_else(|| SelectError::Unknown {
                    name: name.clone(),
                    known: all.iter().map(|(m, _)| m.key()).collect::<Vec<_>>().join(", "),
                })
            })
            .collect::<Result<_, _>>()?
    };
    let mut needed: Vec<Tool> = wanted.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    needed.sort();
    needed.dedup();
    let mut missing: BTreeMap<Tool, String> = BTreeMap::new();
    for tool in needed {
        if let Err(why) = tool.probe(&env.tools).await {
            missing.insert(tool, why);
        }
    }
    let mut chosen = BTreeMap::new();
    for (module, tools) in wanted {
        match tools.iter().find_map(|t| missing.get(t)) {
            None => {
                chosen.insert(module.key().to_string(), module.clone());
            }
            Some(why) if auto => tracing::warn!(module = module.key(), "module left out: {why}"),
            Some(why) => return Err(SelectError::Unrunnable { module: module.key().into(), why: why.clone() }),
        }
    }
    Ok(chosen)
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
