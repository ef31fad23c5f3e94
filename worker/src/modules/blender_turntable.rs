//! `blender_turntable` (`render.turntable`): turntable frames with Blender Cycles. A
//! `frame_range` renders only part of the turn, so a long turntable can be split across
//! workers (`shared::chunks` does that at dispatch for a node with `chunking`, and the node
//! itself then joins the chunks); the frames artifact is a manifest naming each stored frame.

use crate::blender;
use crate::module::{fatal, input_ref, optional_ref, Env, Module, ModuleError, ModuleFuture};
use crate::tools::Scratch;
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::BLENDER_TURNTABLE;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) struct BlenderTurntable(pub(super) Arc<Env>);

impl Module for BlenderTurntable {
    fn key(&self) -> &'static str {
        BLENDER_TURNTABLE
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            // A chunked turntable's own node joins what its chunk tasks rendered
            // (`shared::chunks`); the inputs are named in frame order.
            let chunks: Vec<&str> = task.inputs.keys().filter(|k| k.starts_with("chunk_")).map(String::as_str).collect();
            let frames = if chunks.is_empty() {
                turntable(&self.0, &input_ref(task, "glb")?, optional_ref(task, "materials")?.as_ref(), &task.params).await?
            } else {
                let refs = chunks.iter().map(|port| input_ref(task, port)).collect::<Result<Vec<_>, _>>()?;
                join(&self.0, &refs, &task.params).await?
            };
            Ok(json!({ "frames": frames }))
        })
    }
}

/// The frames manifest: the same bytes whether one task rendered the frames or chunks did.
fn manifest(params: &Value, count: u64, start: u64, end: u64, frames: Vec<Value>) -> Vec<u8> {
    let manifest = json!({
        "version": 1, "width": params["width"], "height": params["height"],
        "frame_count": count, "start": start, "end": end, "frames": frames,
    });
    serde_json::to_vec_pretty(&manifest).expect("JSON")
}

/// Joins the chunks' frame manifests, in order, into the turntable's one manifest.
async fn join(env: &Env, chunks: &[ArtifactRef], params: &Value) -> Result<ArtifactRef, ModuleError> {
    let (count, start, end) = renderfleet_shared::chunks::frames(params);
    let mut frames: Vec<Value> = Vec::new();
    let mut next = start;
    for (k, c) in chunks.iter().enumerate() {
        let m: Value = serde_json::from_slice(&env.store.read(c).await?)
            .map_err(|e| fatal(format!("the frames manifest of chunk {k} is not readable ({e})")))?;
        let (from, to) = (m["start"].as_u64(), m["end"].as_u64());
        if from != Some(next) || m["width"] != params["width"] || m["height"] != params["height"] {
            return Err(fatal(format!(
                "chunk {k} holds frames {from:?}..={to:?} at {}x{}, but frame {next} at {}x{} comes next; the chunks do not make up this turntable",
                m["width"], m["height"], params["width"], params["height"]
            )));
        }
        frames.extend(m["frames"].as_array().cloned().unwrap_or_default());
        next = to.unwrap_or(next) + 1;
    }
    if next != end + 1 || frames.len() as u64 != end - start + 1 {
        return Err(fatal(format!("the chunks end before frame {end} (at {next}); a chunk is missing")));
    }
    let meta = json!({"frames": frames.len(), "width": params["width"], "height": params["height"], "chunks": chunks.len()});
    Ok(env.store.put_bytes(&manifest(params, count, start, end, frames), "frames", "application/json", meta).await?)
}

/// Renders the frames, stores each, and stores their manifest (the `frames` artifact).
pub(crate) async fn turntable(
    env: &Env,
    glb: &ArtifactRef,
    materials: Option<&ArtifactRef>,
    params: &Value,
) -> Result<ArtifactRef, ModuleError> {
    let (count, start, end) = renderfleet_shared::chunks::frames(params);
    if start > end || end >= count {
        return Err(fatal(format!("frame_range {start}..={end} does not fit a turntable of {count} frames; use 0..={}", count - 1)));
    }
    let scratch = Scratch::new(&env.scratch, "turntable").await?;
    let (glb_path, map_path) = blender::input_paths(env, glb, materials).await?;
    let dir = scratch.dir.join("frames");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| fatal(format!("cannot create {}: {e}", dir.display())))?;
    let r = blender::render(env, &scratch.dir, "turntable", &glb_path, map_path.as_deref(), &dir, params).await?;
    let mut frames = Vec::new();
    for index in start..=end {
        let path = dir.join(format!("frame_{index:04}.png"));
        if tokio::fs::metadata(&path).await.is_err() {
            return Err(fatal(format!("Blender did not write frame {index} ({})", path.display())));
        }
        let f = env.store.put_file(&path, "image_png", "image/png", json!({"frame": index})).await?;
        frames.push(json!({"index": index, "sha256": f.sha256, "bytes": f.bytes}));
    }
    let meta = json!({"frames": end - start + 1, "width": params["width"], "height": params["height"], "timings": r.timings});
    Ok(env.store.put_bytes(&manifest(params, count, start, end, frames), "frames", "application/json", meta).await?)
}
