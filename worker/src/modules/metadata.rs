//! `metadata` (`cad.extract_metadata`): GLB → part manifest and metadata JSON (bounding
//! box, triangle, part and instance counts), read with the `gltf` crate.

use super::{fatal, input_ref, Env, Module, ModuleFuture};
use crate::geometry;
use renderfleet_shared::registry::module::METADATA;
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;
use std::sync::Arc;

pub(super) struct Metadata(pub(super) Arc<Env>);

impl Module for Metadata {
    fn key(&self) -> &'static str {
        METADATA
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let env = &self.0;
            let glb = env.store.read(&input_ref(task, "glb")?).await?;
            let units = task.params.get("units").and_then(|u| u.as_str()).unwrap_or("mm");
            let (mut meta, manifest) = geometry::metadata(&glb, units).map_err(|e| fatal(e.to_string()))?;
            if task.params.get("include_instances").and_then(|v| v.as_bool()) == Some(false) {
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
            Ok(json!({ "parts": parts, "metadata": metadata }))
        })
    }
}
