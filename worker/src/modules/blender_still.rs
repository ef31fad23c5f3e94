//! `blender_still` (`render.still`): a still of the product with Blender Cycles on CPU,
//! material map applied by part key. See `crate::blender` for the driver.

use crate::blender;
use crate::module::{input_ref, optional_ref, Env, Module, ModuleError, ModuleFuture};
use crate::tools::Scratch;
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::BLENDER_STILL;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) struct BlenderStill(pub(super) Arc<Env>);

impl Module for BlenderStill {
    fn key(&self) -> &'static str {
        BLENDER_STILL
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let image = still(&self.0, &input_ref(task, "glb")?, optional_ref(task, "materials")?.as_ref(), &task.params).await?;
            Ok(json!({ "image": image }))
        })
    }
}

/// Renders and stores the still.
pub(crate) async fn still(
    env: &Env,
    glb: &ArtifactRef,
    materials: Option<&ArtifactRef>,
    params: &Value,
) -> Result<ArtifactRef, ModuleError> {
    let scratch = Scratch::new(&env.scratch, "still").await?;
    let (glb_path, map_path) = blender::input_paths(env, glb, materials).await?;
    let out = scratch.dir.join("still.png");
    let r = blender::render(env, &scratch.dir, "still", &glb_path, map_path.as_deref(), &out, params).await?;
    let meta = json!({
        "width": params["width"], "height": params["height"], "samples": params["samples"],
        "mesh_objects": r.report["mesh_objects"], "materials_assigned": r.report["materials_assigned"],
        "timings": r.timings,
    });
    Ok(env.store.put_file(&out, "image_png", "image/png", meta).await?)
}
