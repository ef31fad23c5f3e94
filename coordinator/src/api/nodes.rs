//! `GET /v1/nodes`: the node palette, straight from the registry. Everything an editor needs
//! to build a family-safe graph (families, ports with artifact kinds, params schemas)
//! without per-node code of its own.

use axum::extract::Query;
use axum::Json;
use renderfleet_shared::registry::{registry, NodeType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PaletteQuery {
    /// Also list the node types hidden from editors (`util.*`, `compare.artifacts`).
    #[serde(default)]
    all: bool,
}

/// The registry's node types, and their keys grouped three ways (each list in palette order).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Palette {
    /// In palette order.
    #[schema(value_type = Vec<NodeType>)]
    node_types: Vec<&'static NodeType>,
    /// Family (`cad_file`, `order_line`) → the type keys allowed in it.
    by_family: BTreeMap<&'static str, Vec<&'static str>>,
    /// Module key → the type keys it runs.
    by_module: BTreeMap<&'static str, Vec<&'static str>>,
    /// Execution role (`source`, `transform`, ...) → type keys.
    by_execution_role: BTreeMap<String, Vec<&'static str>>,
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", params(PaletteQuery),
    description = "Every node type with its families, module, role, ports and params schema, grouped by family, module and execution role.",
    responses((status = 200, body = Palette)))]
pub(super) async fn palette(Query(q): Query<PaletteQuery>) -> Json<Palette> {
    let node_types: Vec<&'static NodeType> = registry().all().iter().filter(|t| q.all || t.editor_visible).collect();
    let mut palette =
        Palette { node_types: Vec::new(), by_family: BTreeMap::new(), by_module: BTreeMap::new(), by_execution_role: BTreeMap::new() };
    for t in &node_types {
        for f in t.families {
            palette.by_family.entry(f.as_str()).or_default().push(t.type_key);
        }
        palette.by_module.entry(t.module_key).or_default().push(t.type_key);
        let role = serde_json::to_value(t.execution_role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        palette.by_execution_role.entry(role).or_default().push(t.type_key);
    }
    palette.node_types = node_types;
    Json(palette)
}
