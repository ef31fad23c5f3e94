//! `metadata` (`cad.extract_metadata`): GLB → part manifest and metadata JSON (bounding
//! box, triangle, part and instance counts), read with the `gltf` crate.

use crate::geometry;
use crate::module::{fatal, input_ref, Env, Module, ModuleError, ModuleFuture};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::METADATA;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) struct Metadata(pub(super) Arc<Env>);

impl Module for Metadata {
    fn key(&self) -> &'static str {
        METADATA
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let (parts, metadata) = describe(&self.0, &input_ref(task, "glb")?, &task.params).await?;
            Ok(json!({ "parts": parts, "metadata": metadata }))
        })
    }
}

/// Stores the part manifest and the metadata of a stored GLB (the legacy pipeline calls
/// this too, so both deliver the same metadata for the same params).
pub(crate) async fn describe(env: &Env, glb: &ArtifactRef, params: &Value) -> Result<(ArtifactRef, ArtifactRef), ModuleError> {
    let bytes = env.store.read(glb).await?;
    let units = params.get("units").and_then(Value::as_str).unwrap_or("mm");
    let (mut meta, manifest) = geometry::metadata(&bytes, units).map_err(|e| fatal(e.to_string()))?;
    if params.get("include_instances").and_then(Value::as_bool) == Some(false) {
        meta["instances_listed"] = json!(false);
    } else {
        meta["instances"] = json!(manifest.parts);
    }
    let summary = json!({"part_count": manifest.part_count, "instance_count": manifest.instance_count});
    let parts = env
        .store
        .put_bytes(&serde_json::to_vec_pretty(&manifest).expect("JSON"), "part_manifest", "application/json", summary.clone())
        .await?;
    let metadata =
        env.store.put_bytes(&serde_json::to_vec_pretty(&meta).expect("JSON"), "metadata_json", "application/json", summary).await?;
    Ok((parts, metadata))
}
