//! `GET /v1/nodes`: the node palette, straight from the registry. Everything an editor needs
//! to build a family-safe graph (families, ports with artifact kinds, params schemas)
//! without per-node code of its own.

use axum::extract::Query;
use axum::Json;
use renderfleet_shared::registry::{registry, NodeType};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PaletteQuery {
    /// Also list the node types hidden from editors (`util.*`, `compare.artifacts`).
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", params(PaletteQuery),
    description = "Every node type with its families, module, role, ports and params schema, grouped by family, module and execution role.",
    responses((status = 200, body = Object, description = "`node_types`, `by_family`, `by_module`, `by_execution_role`")))]
pub(super) async fn palette(Query(q): Query<PaletteQuery>) -> Json<Value> {
    let types: Vec<&NodeType> = registry().all().iter().filter(|t| q.all || t.editor_visible).collect();
    let mut by_family = Map::new();
    let mut by_module = Map::new();
    let mut by_role = Map::new();
    for t in &types {
        for f in t.families {
            push(&mut by_family, f.as_str(), t.type_key);
        }
        push(&mut by_module, t.module_key, t.type_key);
        let role = serde_json::to_value(t.execution_role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        push(&mut by_role, &role, t.type_key);
    }
    Json(json!({
        "node_types": types,
        "by_family": by_family,
        "by_module": by_module,
        "by_execution_role": by_role,
    }))
}

fn push(map: &mut Map<String, Value>, key: &str, type_key: &str) {
    if let Value::Array(list) = map.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
        list.push(Value::String(type_key.into()));
    }
}
