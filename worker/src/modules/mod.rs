//! The catalogue: every module this build has, one file each behind the
//! [`Module`](crate::module::Module) trait (the contract is `module.rs`), the tools each
//! needs, and the start-up probes that decide which of them this host runs. A module's key
//! must be one the registry (`shared::registry`) names; a test checks the two agree.

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

use crate::module::{Env, Module};
use renderfleet_shared::cache;
use renderfleet_shared::config::{ToolsConfig, AUTO_MODULES};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A new module is one the registry names and one file here; neither without the other.
    #[tokio::test]
    async fn the_catalogue_and_the_registry_name_the_same_modules() {
        let dir = std::env::temp_dir().join(format!("rf-catalogue-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()));
        let env = Arc::new(Env {
            store: crate::artifacts::Store::open(dir.join("artifacts")).await.unwrap(),
            cad_dir: dir.clone(),
            scratch: dir.clone(),
            tools: Default::default(),
            scripts: crate::scripts::Scripts::install(&dir).await.unwrap(),
            blender: Default::default(),
            warm_blender: None,
        });
        let ours: std::collections::BTreeSet<&str> = all(&env).iter().map(|(m, _)| m.key()).collect();
        let registry: std::collections::BTreeSet<&str> = renderfleet_shared::registry::registry().module_keys().into_iter().collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(ours, registry, "modules in the worker's catalogue (left) and in the registry (right)");
    }

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
