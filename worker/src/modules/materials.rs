//! `materials` (`material.assign`): part manifest + the product's material map + the
//! material library → the `material_map` the renders apply by part key.
//!
//! A map entry names a part key (one occurrence) or a part (every instance of it); a key
//! wins over its part. A part with no material is never dropped silently: it is listed
//! under `missing` and counted, and either fails the node (`on_missing: fail`) or gets
//! `default_material`.

use super::{fatal, input_ref, Env, Module, ModuleError, ModuleFuture};
use crate::geometry::Manifest;
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::MATERIALS;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) struct Materials(pub(super) Arc<Env>);

/// Used when `default_material` is not in the library: a neutral grey.
const BUILT_IN_DEFAULT: &str = "#9A9A9A";

impl Module for Materials {
    fn key(&self) -> &'static str {
        MATERIALS
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let parts = input_ref(task, "parts")?;
            let context = task.inputs.get("product_materials").cloned().unwrap_or(Value::Null);
            let (map, missing) = assign(&self.0, &parts, &context, &task.params).await?;
            // Listed in the node's outputs too, so `material-map/repair` can find them.
            Ok(json!({ "materials": map, "missing": missing }))
        })
    }
}

/// Builds and stores the material map; also returns the part keys that had no material.
pub(crate) async fn assign(env: &Env, parts: &ArtifactRef, context: &Value, params: &Value) -> Result<(ArtifactRef, Value), ModuleError> {
    let manifest: Manifest =
        serde_json::from_slice(&env.store.read(parts).await?).map_err(|e| fatal(format!("the part manifest is not readable ({e})")))?;
    let map = build(&manifest, context, params)?;
    let meta = json!({"assigned": map["counts"]["assigned"], "missing": map["counts"]["missing"], "product": context.get("product")});
    let stored = env.store.put_bytes(&serde_json::to_vec_pretty(&map).expect("JSON"), "material_map", "application/json", meta).await?;
    Ok((stored, map["missing"].clone()))
}

fn build(manifest: &Manifest, context: &Value, params: &Value) -> Result<Value, ModuleError> {
    let empty = Map::new();
    let wanted = context.get("assignments").and_then(Value::as_object).unwrap_or(&empty);
    let library = context.get("library").and_then(Value::as_object).unwrap_or(&empty);
    let on_missing = params.get("on_missing").and_then(Value::as_str).unwrap_or("default");
    let default = params.get("default_material").and_then(Value::as_str).unwrap_or("neutral_grey");
    let mut assignments = BTreeMap::new();
    let mut used = BTreeMap::new();
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for p in &manifest.parts {
        let chosen = wanted.get(&p.key).or_else(|| wanted.get(&p.part)).and_then(Value::as_str);
        match chosen {
            Some(m) if library.contains_key(m) => {
                assignments.insert(p.key.clone(), m.to_string());
                used.insert(m.to_string(), library[m].clone());
            }
            Some(m) => unknown.push(json!({"key": p.key, "material": m})),
            None => missing.push(p.key.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(fatal(format!(
            "{} part(s) are mapped to materials the library does not have (first: {}); add them with `renderctl materials apply` or fix the product's map",
            unknown.len(),
            unknown[0]
        )));
    }
    if !missing.is_empty() && on_missing == "fail" {
        return Err(fatal(format!(
            "{} part(s) have no material (first: `{}`); map them with `renderctl products map-set`, or set `on_missing: default`",
            missing.len(),
            missing[0]
        )));
    }
    for key in &missing {
        assignments.insert(key.clone(), default.to_string());
    }
    if !missing.is_empty() {
        let props =
            library.get(default).cloned().unwrap_or_else(|| json!({"base_color": BUILT_IN_DEFAULT, "metallic": 0.0, "roughness": 0.5}));
        used.insert(default.to_string(), props);
    }
    let matched: std::collections::HashSet<&str> = manifest.parts.iter().flat_map(|p| [p.key.as_str(), p.part.as_str()]).collect();
    let unmatched: Vec<&String> = wanted.keys().filter(|t| !matched.contains(t.as_str())).collect();
    Ok(json!({
        "version": 1,
        "product": context.get("product"),
        "assignments": assignments,
        "materials": used,
        "missing": missing,
        "unmatched_targets": unmatched,
        "counts": {"parts": manifest.parts.len(), "assigned": manifest.parts.len() - missing.len(), "missing": missing.len(), "unmatched_targets": unmatched.len()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ManifestPart;

    fn manifest() -> Manifest {
        let part = |key: &str, part: &str| ManifestPart { key: key.into(), part: part.into(), name: String::new(), node: 0, triangles: 0 };
        Manifest {
            version: 1,
            parts: vec![part("a/bolt_1", "bolt"), part("b/bolt_1", "bolt"), part("a/plate_1", "plate")],
            part_count: 2,
            instance_count: 3,
        }
    }

    fn context() -> Value {
        json!({"product": "p", "assignments": {"bolt": "steel", "b/bolt_1": "red", "ghost": "steel"},
               "library": {"steel": {"base_color": "#888888"}, "red": {"base_color": "#FF0000"}}})
    }

    #[test]
    fn keys_win_over_parts_and_missing_parts_are_listed() {
        let m = build(&manifest(), &context(), &json!({"on_missing": "default", "default_material": "neutral_grey"})).unwrap();
        assert_eq!(m["assignments"]["a/bolt_1"], "steel");
        assert_eq!(m["assignments"]["b/bolt_1"], "red");
        assert_eq!(m["assignments"]["a/plate_1"], "neutral_grey");
        assert_eq!(m["missing"], json!(["a/plate_1"]));
        assert_eq!(m["counts"]["missing"], 1);
        assert_eq!(m["unmatched_targets"], json!(["ghost"]));
        assert_eq!(m["materials"]["neutral_grey"]["base_color"], BUILT_IN_DEFAULT);
    }

    #[test]
    fn on_missing_fail_names_the_part_and_the_fix() {
        let e = build(&manifest(), &context(), &json!({"on_missing": "fail"})).unwrap_err().to_string();
        assert!(e.contains("a/plate_1") && e.contains("renderctl"), "{e}");
    }

    #[test]
    fn a_material_missing_from_the_library_fails() {
        let ctx = json!({"assignments": {"plate": "gold"}, "library": {}});
        let e = build(&manifest(), &ctx, &json!({})).unwrap_err().to_string();
        assert!(e.contains("gold"), "{e}");
    }
}
