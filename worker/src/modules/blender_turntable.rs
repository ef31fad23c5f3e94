//! `blender_turntable` (`render.turntable`): turntable frames with Blender Cycles. A
//! `frame_range` renders only part of the turn, so a long turntable can be split across
//! workers; the frames artifact is a manifest naming each stored frame.

use super::{fatal, input_ref, optional_ref, Env, Module, ModuleError, ModuleFuture};
use crate::blender;
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
            let frames = turntable(&self.0, &input_ref(task, "glb")?, optional_ref(task, "materials")?.as_ref(), &task.params).await?;
            Ok(json!({ "frames": frames }))
        })
    }
}

/// Renders the frames, stores each, and stores their manifest (the `frames` artifact).
pub(crate) async fn turntable(
    env: &Env,
    glb: &ArtifactRef,
    materials: Option<&ArtifactRef>,
    params: &Value,
) -> Result<ArtifactRef, ModuleError> {
    let count = params["frame_count"].as_u64().unwrap_or(36);
    let (start, end) = match params.get("frame_range").filter(|r| !r.is_null()) {
        Some(r) => (r["start"].as_u64().unwrap_or(0), r["end"].as_u64().unwrap_or(count - 1)),
        None => (0, count - 1),
    };
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
    let manifest = json!({
        "version": 1, "width": params["width"], "height": params["height"],
        "frame_count": count, "start": start, "end": end, "frames": frames,
    });
    let meta = json!({"frames": end - start + 1, "width": params["width"], "height": params["height"], "timings": r.timings});
    Ok(env.store.put_bytes(&serde_json::to_vec_pretty(&manifest).expect("JSON"), "frames", "application/json", meta).await?)
}
