//! `blender_blend` (`export.blend`): the prepared scene (materials, camera, lights, render
//! settings) saved as a .blend file.

use crate::blender;
use crate::module::{input_ref, optional_ref, Env, Module, ModuleError, ModuleFuture};
use crate::tools::Scratch;
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::BLENDER_BLEND;
use renderfleet_shared::registry::registry;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) struct BlenderBlend(pub(super) Arc<Env>);

impl Module for BlenderBlend {
    fn key(&self) -> &'static str {
        BLENDER_BLEND
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let blend = blend(&self.0, &input_ref(task, "glb")?, optional_ref(task, "materials")?.as_ref(), &task.params).await?;
            Ok(json!({ "blend": blend }))
        })
    }
}

/// Prepares the scene and stores the .blend file.
pub(crate) async fn blend(
    env: &Env,
    glb: &ArtifactRef,
    materials: Option<&ArtifactRef>,
    params: &Value,
) -> Result<ArtifactRef, ModuleError> {
    let scratch = Scratch::new(&env.scratch, "blend").await?;
    let (glb_path, map_path) = blender::input_paths(env, glb, materials).await?;
    let out = scratch.dir.join("scene.blend");
    // The scene carries render settings too: a still's defaults, under this node's params.
    let mut settings = registry().with_defaults("render.still", &json!({}));
    if let (Some(s), Some(p)) = (settings.as_object_mut(), params.as_object()) {
        s.extend(p.clone());
    }
    let r = blender::render(env, &scratch.dir, "blend", &glb_path, map_path.as_deref(), &out, &settings).await?;
    let meta =
        json!({"mesh_objects": r.report["mesh_objects"], "materials_assigned": r.report["materials_assigned"], "timings": r.timings});
    Ok(env.store.put_file(&out, "blend", "application/x-blender", meta).await?)
}
