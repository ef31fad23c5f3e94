//! `materials` (`material.assign`): part manifest + the product's material map + the
//! material library → the `material_map` the renders apply by part key. The rule (keys win
//! over parts, missing parts listed, never dropped) is `shared::materials::resolve`, which
//! the console's 3D preview colours by too.

use crate::geometry::Manifest;
use crate::module::{fatal, input_ref, Env, Module, ModuleError, ModuleFuture};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::materials::{self, PartRef};
use renderfleet_shared::registry::module::MATERIALS;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) struct Materials(pub(super) Arc<Env>);

impl Module for Materials {
    fn key(&self) -> &'static str {
        MATERIALS
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let parts = input_ref(task, "parts")?;
            let context = task.inputs.get("product_materials").cloned().unwrap_or(Value::Null);
            let (map, missing, unmatched) = assign(&self.0, &parts, &context, &task.params).await?;
            // Listed in the node's outputs too, so `material-map/repair` can find them, and
            // the run (API, renderctl, console) shows what the map did not reach.
            Ok(json!({ "materials": map, "missing": missing, "unmatched_targets": unmatched }))
        })
    }
}

/// Builds and stores the material map; also returns the part keys that had no material and
/// the map's targets that matched no part.
pub(crate) async fn assign(
    env: &Env,
    parts: &ArtifactRef,
    context: &Value,
    params: &Value,
) -> Result<(ArtifactRef, Value, Value), ModuleError> {
    let manifest: Manifest =
        serde_json::from_slice(&env.store.read(parts).await?).map_err(|e| fatal(format!("the part manifest is not readable ({e})")))?;
    let map = build(&manifest, context, params)?;
    let counts = &map["counts"];
    let meta = json!({"assigned": counts["assigned"], "missing": counts["missing"], "unmatched_targets": counts["unmatched_targets"], "product": context.get("product")});
    let stored = env.store.put_bytes(&serde_json::to_vec_pretty(&map).expect("JSON"), "material_map", "application/json", meta).await?;
    Ok((stored, map["missing"].clone(), map["unmatched_targets"].clone()))
}

fn build(manifest: &Manifest, context: &Value, params: &Value) -> Result<Value, ModuleError> {
    let parts: Vec<PartRef> = manifest.parts.iter().map(|p| PartRef { key: &p.key, part: &p.part }).collect();
    materials::resolve(&parts, context, params).map_err(fatal)
}
