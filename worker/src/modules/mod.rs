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
use renderfleet_shared::cache;
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
    /// How the tool is named in heartbeats and cache fingerprints.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Cascadio => "cascadio",
            Tool::Blender => "blender",
            Tool::Ffmpeg => "ffmpeg",
        }
    }

    /// Checks that the tool is there and works, and reads its version (a fleet upgrading a
    /// tool must never serve one version's output for another's); the error says how to
    /// install it.
    pub async fn probe(self, tools: &ToolsConfig) -> Result<String, String> {
        let limit = Duration::from_secs(60);
        const BLENDER: &str = "import numpy, bpy; h = bpy.app.build_hash; print('RF_VERSION', bpy.app.version_string, h.decode() if isinstance(h, bytes) else h)";
        let (result, fix) = match self {
            Tool::Cascadio => (
                crate::tools::probe(&tools.python, &["-c", "import importlib.metadata as m, cascadio; print('RF_VERSION', m.version('cascadio'))"], limit).await,
                format!("install it with `{} -m pip install cascadio` (and python3-numpy), or point [tools] python (RENDERFLEET_TOOLS__PYTHON) at a Python that has it", tools.python),
            ),
            Tool::Blender => (
                {
                    let args = crate::blender::expr_args(&tools.blender, None, BLENDER);
                    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
                    crate::tools::probe(&tools.blender, &args, limit).await
                },
                format!("install Blender 4.5 LTS as a Python module (`python3.11 -m venv V && V/bin/pip install bpy==4.5.15`, as ops/dev.sh does) and set [tools] blender (RENDERFLEET_TOOLS__BLENDER) to V/bin/python, or give a Blender executable (3.4+, with numpy); tried `{}`", tools.blender),
            ),
            Tool::Ffmpeg => (
                crate::tools::probe(&tools.ffmpeg, &["-hide_banner", "-version"], limit).await,
                format!("install ffmpeg (`apt-get install ffmpeg`), or set [tools] ffmpeg (RENDERFLEET_TOOLS__FFMPEG); tried `{}`", tools.ffmpeg),
            ),
        };
        let out = result.map_err(|e| format!("{e}; {fix}"))?;
        version(self, &out).ok_or_else(|| {
            format!("`{}` answered but did not say its version ({}); {fix}", self.name(), out.trim().lines().last().unwrap_or(""))
        })
    }
}

/// A tool's version from its probe's output: the `RF_VERSION` line our probes print, or
/// ffmpeg's `ffmpeg version X` banner.
fn version(tool: Tool, out: &str) -> Option<String> {
    let line = match tool {
        Tool::Ffmpeg => out.lines().find_map(|l| l.strip_prefix("ffmpeg version "))?,
        Tool::Cascadio | Tool::Blender => out.lines().find_map(|l| l.strip_prefix("RF_VERSION "))?,
    };
    let v = match tool {
        // `5.1.6-0+deb12u1 Copyright (c) 2000-2024 …`: the first word.
        Tool::Ffmpeg => line.split_whitespace().next()?.to_string(),
        _ => line.trim().to_string(),
    };
    (!v.is_empty()).then_some(v)
}

/// The modules chosen for this host, the versions of the tools they use, and per module the
/// fingerprint of its build ([`renderfleet_shared::cache::fingerprint`]).
pub struct Selected {
    pub modules: BTreeMap<String, Arc<dyn Module>>,
    pub tools: BTreeMap<String, String>,
    pub fingerprints: BTreeMap<String, String>,
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
pub async fn select(names: &[String], env: &Arc<Env>) -> Result<Selected, SelectError> {
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
    let mut versions: BTreeMap<Tool, String> = BTreeMap::new();
    for tool in needed {
        match tool.probe(&env.tools).await {
            Ok(v) => {
                versions.insert(tool, v);
            }
            Err(why) => {
                missing.insert(tool, why);
            }
        }
    }
    let mut chosen = Selected { modules: BTreeMap::new(), tools: BTreeMap::new(), fingerprints: BTreeMap::new() };
    for (module, tools) in wanted {
        match tools.iter().find_map(|t| missing.get(t)) {
            None => {
                let used: BTreeMap<String, String> = tools.iter().map(|t| (t.name().to_string(), versions[t].clone())).collect();
                let scripts: Vec<(&str, &str)> = tools.iter().flat_map(|t| crate::scripts::run_by(*t)).copied().collect();
                let fingerprint = cache::fingerprint(module.key(), env!("CARGO_PKG_VERSION"), &scripts, &used);
                chosen.fingerprints.insert(module.key().to_string(), fingerprint);
                chosen.tools.extend(used);
                chosen.modules.insert(module.key().to_string(), module.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions_are_read_from_their_probes() {
        let ffmpeg = "ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000-2024 the FFmpeg developers\nbuilt with gcc 12\n";
        assert_eq!(version(Tool::Ffmpeg, ffmpeg).as_deref(), Some("5.1.6-0+deb12u1"));
        let blender = "Blender 3.4.1\nRead prefs: ...\nRF_VERSION 3.4.1 55485cb379f7\n\nBlender quit\n";
        assert_eq!(version(Tool::Blender, blender).as_deref(), Some("3.4.1 55485cb379f7"));
        assert_eq!(version(Tool::Cascadio, "RF_VERSION 0.1.1\n").as_deref(), Some("0.1.1"));
        assert_eq!(version(Tool::Blender, "Blender 3.4.1\n"), None, "no version line: the probe says so");
    }
}
