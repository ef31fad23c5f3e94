//! The canonical starter graph of each family (DESIGN §6): what
//! `GET /v1/workflows/starters/{family}` returns and what an editor opens on "new".

use crate::graph::{EdgeSpec, GraphSpec, NodeSpec};
use crate::registry::Family;
use serde_json::json;

fn node(id: &str, ty: &str, params: serde_json::Value) -> NodeSpec {
    NodeSpec { id: id.into(), node_type: ty.into(), params, max_attempts: None, timeout: None, position: None }
}

fn edge(from: &str, from_port: &str, to: &str, to_port: &str) -> EdgeSpec {
    EdgeSpec { from: from.into(), from_port: Some(from_port.into()), to: to.into(), to_port: Some(to_port.into()) }
}

/// The starter of `family`, in canonical shape (ports named; params as the defaults fill them).
pub fn starter(family: Family) -> GraphSpec {
    match family {
        // STEP → GLB → metadata; both delivered.
        Family::CadFile => GraphSpec {
            family: Some(family),
            nodes: vec![
                node("resolve", "cad.resolve", json!({})),
                node("export", "cad.export_glb", json!({})),
                node("metadata", "cad.extract_metadata", json!({})),
                node("publish_glb", "output.publish", json!({"name": "glb"})),
                node("publish_metadata", "output.publish", json!({"name": "metadata"})),
            ],
            edges: vec![
                edge("resolve", "step", "export", "step"),
                edge("export", "glb", "metadata", "glb"),
                edge("export", "glb", "publish_glb", "artifact"),
                edge("metadata", "metadata", "publish_metadata", "artifact"),
            ],
        },
        // STEP → GLB → materials → a still on white, delivered.
        Family::OrderLine => GraphSpec {
            family: Some(family),
            nodes: vec![
                node("resolve", "cad.resolve", json!({})),
                node("export", "cad.export_glb", json!({})),
                node("assign", "material.assign", json!({})),
                node("still", "render.still", json!({})),
                node("publish", "output.publish", json!({"name": "still"})),
            ],
            edges: vec![
                edge("resolve", "step", "export", "step"),
                edge("export", "parts", "assign", "parts"),
                edge("export", "glb", "still", "glb"),
                edge("assign", "materials", "still", "materials"),
                edge("still", "image", "publish", "artifact"),
            ],
        },
    }
}
