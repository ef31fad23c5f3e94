//! Invocation overrides of an output type: per node id, params merged over the workflow's,
//! e.g. `{"still": {"width": 1000, "camera": {"azimuth_deg": 90}}}`. Checked against the
//! params the bound workflow exposes (its nodes' schemas), so a typo is refused when the
//! output type is saved, not when an order comes in.

use crate::graph::{GraphSpec, Problem, ProblemCode, Severity};
use crate::registry::Registry;
use serde_json::Value;

/// `graph` with `overrides` merged into its nodes' params, or every problem: an override for
/// a node the workflow lacks, or a merged value its node type's schema refuses (the
/// `param_path` is then `/NODE_ID/PARAM/...`).
pub fn apply(graph: &GraphSpec, overrides: &Value, registry: &Registry) -> Result<GraphSpec, Vec<Problem>> {
    let refuse = |path: String, node: Option<&str>, message: String| Problem {
        code: ProblemCode::InvalidParam,
        severity: Severity::Error,
        node_id: node.map(String::from),
        edge: None,
        param_path: Some(path),
        message,
    };
    let Some(per_node) = overrides.as_object() else {
        return Err(vec![refuse(
            String::new(),
            None,
            "`invocation_overrides` must be an object of node id → params, e.g. {\"still\": {\"width\": 1000}}".into(),
        )]);
    };
    let mut out = graph.clone();
    let mut problems = Vec::new();
    for (node_id, params) in per_node {
        let Some(node) = out.nodes.iter_mut().find(|n| &n.id == node_id) else {
            let ids: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
            problems.push(refuse(
                format!("/{node_id}"),
                Some(node_id),
                format!("the workflow has no node `{node_id}` to override; its nodes: {}", ids.join(", ")),
            ));
            continue;
        };
        if !params.is_object() {
            problems.push(refuse(format!("/{node_id}"), Some(node_id), format!("overrides of `{node_id}` must be an object of params")));
            continue;
        }
        let mut merged = node.params.clone();
        merge(&mut merged, params);
        for (path, message) in registry.check_params(&node.node_type, &merged) {
            problems.push(refuse(format!("/{node_id}{path}"), Some(node_id), format!("override of `{node_id}`: {message}")));
        }
        node.params = registry.with_defaults(&node.node_type, &merged);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Deep merge: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{registry, Family};
    use crate::starters::starter;
    use serde_json::json;

    #[test]
    fn merges_deeply_and_keeps_the_rest() {
        let g = apply(&starter(Family::OrderLine), &json!({"still": {"width": 1000, "camera": {"azimuth_deg": 90}}}), registry()).unwrap();
        let still = g.nodes.iter().find(|n| n.id == "still").unwrap();
        assert_eq!(still.params["width"], 1000);
        assert_eq!(still.params["height"], 2000);
        assert_eq!(still.params["camera"]["azimuth_deg"], 90);
        assert_eq!(still.params["camera"]["elevation_deg"], 25.0);
    }

    #[test]
    fn refuses_unknown_nodes_and_bad_values_with_paths() {
        let p = apply(&starter(Family::OrderLine), &json!({"stil": {}, "still": {"sampels": 3, "width": 0}}), registry()).unwrap_err();
        let paths: Vec<&str> = p.iter().filter_map(|p| p.param_path.as_deref()).collect();
        assert!(paths.contains(&"/stil") && paths.contains(&"/still/sampels") && paths.contains(&"/still/width"), "{p:?}");
    }
}
