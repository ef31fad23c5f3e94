//! `glb_export` (`cad.export_glb`): STEP → GLB with OpenCASCADE through the `cascadio`
//! Python package (tessellation tolerances from params), then every part occurrence gets
//! its instance-aware key, written into the GLB and listed in the `part_manifest`.

use crate::geometry;
use crate::module::{fatal, input_ref, Env, Module, ModuleError, ModuleFuture};
use crate::tools::{self, Scratch};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::GLB_EXPORT;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::sync::Arc;

pub(super) struct GlbExport(pub(super) Arc<Env>);

impl Module for GlbExport {
    fn key(&self) -> &'static str {
        GLB_EXPORT
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let step = input_ref(task, "step")?;
            let (glb, parts) = export(&self.0, &step, &task.params).await?;
            Ok(json!({ "glb": glb, "parts": parts }))
        })
    }
}

/// Converts a stored STEP file; returns the GLB and the part manifest, both stored.
pub(crate) async fn export(env: &Env, step: &ArtifactRef, params: &Value) -> Result<(ArtifactRef, ArtifactRef), ModuleError> {
    let input = env.store.path(step).await?;
    let scratch = Scratch::new(&env.scratch, "glb").await?;
    let output = scratch.dir.join("model.glb");
    let mut job = params.as_object().cloned().unwrap_or_default();
    job.insert("input".into(), json!(input));
    job.insert("output".into(), json!(output));
    let job_path = scratch.dir.join("params.json");
    tokio::fs::write(&job_path, serde_json::to_vec(&Value::Object(job)).expect("JSON"))
        .await
        .map_err(|e| ModuleError::host(format!("cannot write {}: {e}", job_path.display())))?;
    let args: [&OsStr; 2] = [env.scripts.step_to_glb.as_os_str(), job_path.as_os_str()];
    let ran = tools::run(&env.tools.python, &args, &scratch.dir, "STEP → GLB (OpenCASCADE)", true).await.map_err(with_converter_message)?;
    let raw = tokio::fs::read(&output).await.map_err(|e| fatal(format!("the converter wrote no GLB ({e})")))?;
    let (glb, manifest) = geometry::annotate(&raw).map_err(|e| ModuleError::Fatal { message: e.to_string(), log_tail: Some(ran.tail) })?;
    if manifest.instance_count == 0 {
        return Err(fatal("the STEP file converted to a GLB without any geometry; check that the file holds solids, not only a drawing"));
    }
    let meta = json!({"part_count": manifest.part_count, "instance_count": manifest.instance_count, "source_sha256": step.sha256});
    let glb = env.store.put_bytes(&glb, "glb", "model/gltf-binary", meta.clone()).await?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("JSON");
    let parts = env.store.put_bytes(&manifest_bytes, "part_manifest", "application/json", meta).await?;
    Ok((glb, parts))
}

/// Puts OpenCASCADE's own words (its `ERR` and `Error:` lines) into the message, so the
/// node's error says what is wrong with the file without opening the log.
fn with_converter_message(e: ModuleError) -> ModuleError {
    let ModuleError::Fatal { message, log_tail: Some(tail) } = e else { return e };
    let said: Vec<String> = tail
        .lines()
        .map(strip_ansi)
        .map(|l| l.trim().trim_matches('*').trim().to_string())
        .filter(|l| l.contains("ERR") || l.starts_with("Error"))
        .collect();
    if said.is_empty() {
        return ModuleError::Fatal { message, log_tail: Some(tail) };
    }
    ModuleError::Fatal { message: format!("{message} — converter: {}", said.join(" / ")), log_tail: Some(tail) }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip "ESC [ ... letter".
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
