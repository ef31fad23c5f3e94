//! Turntables split across workers. A `render.turntable` node with `chunking`
//! (`{"frames_per_chunk": N}`, the chunk size of Deadline and Flamenco) becomes, when its
//! run is dispatched, one task per chunk of frames that any worker of the module can take
//! and retry on its own (`<node>.frames-<start>-<end>`, the node's params with that
//! `frame_range` and without `chunking`), and the node itself, which then joins the chunks'
//! frame manifests in frame order instead of rendering. Its successors (the encode) see one
//! `frames` output as before; the joined manifest is byte-identical to the one a single task
//! would have written, so the video is too.

use crate::graph::{InputBinding, InputSource, Plan, PlannedNode};
use crate::registry::module;
use serde_json::{json, Value};

/// The input port of the joining node that chunk `k` feeds.
pub fn chunk_port(k: usize) -> String {
    format!("chunk_{k:03}")
}

/// The frames `(count, start, end)` a turntable with `params` renders: its `frame_range`,
/// or the whole turn.
pub fn frames(params: &Value) -> (u64, u64, u64) {
    let count = params["frame_count"].as_u64().unwrap_or(36);
    match params.get("frame_range").filter(|r| !r.is_null()) {
        Some(r) => (count, r["start"].as_u64().unwrap_or(0), r["end"].as_u64().unwrap_or(count.saturating_sub(1))),
        None => (count, 0, count.saturating_sub(1)),
    }
}

/// The frames `(start, end)` of each chunk of a turntable with `params`, or `None` when it
/// is not chunked.
pub fn chunks_of(params: &Value) -> Option<Vec<(u64, u64)>> {
    let size = params.get("chunking")?.get("frames_per_chunk")?.as_u64()?.max(1);
    let (_, start, end) = frames(params);
    let mut out = Vec::new();
    let mut s = start;
    while s <= end {
        let e = (s + size - 1).min(end);
        out.push((s, e));
        s = e + 1;
    }
    Some(out)
}

/// Whether any node of `plan` is a chunked turntable (a cheap look before [`expand`]).
pub fn any(plan: &Plan) -> bool {
    plan.nodes.iter().any(|n| n.module_key == module::BLENDER_TURNTABLE && chunks_of(&n.params).is_some_and(|c| c.len() > 1))
}

/// `plan` with every chunked turntable split; the chunk nodes are appended after the
/// others, so every existing index stays valid.
pub fn expand(mut plan: Plan) -> Plan {
    let original = plan.nodes.len();
    for i in 0..original {
        let node = &plan.nodes[i];
        if node.module_key != module::BLENDER_TURNTABLE {
            continue;
        }
        let Some(chunks) = chunks_of(&node.params).filter(|c| c.len() > 1) else { continue };
        let mut chunk_params = node.params.clone();
        if let Some(p) = chunk_params.as_object_mut() {
            p.remove("chunking");
        }
        let template = node.clone();
        let first = plan.nodes.len();
        let mut join_inputs = Vec::new();
        for (k, (start, end)) in chunks.iter().enumerate() {
            let mut params = chunk_params.clone();
            params["frame_range"] = json!({"start": start, "end": end});
            plan.nodes.push(PlannedNode {
                id: format!("{}.frames-{start:03}-{end:03}", template.id),
                params,
                deps: template.deps,
                successors: vec![i],
                ..template.clone()
            });
            join_inputs.push(InputBinding { port: chunk_port(k), source: InputSource::Node { node: first + k, port: "frames".into() } });
        }
        let chunk_ids: Vec<usize> = (first..plan.nodes.len()).collect();
        // The predecessors now release the chunks instead of the node.
        for p in plan.nodes.iter_mut().take(original) {
            if let Some(at) = p.successors.iter().position(|&s| s == i) {
                p.successors.remove(at);
                p.successors.extend(&chunk_ids);
            }
        }
        let join = &mut plan.nodes[i];
        join.deps = chunk_ids.len() as u32;
        // Contexts and the glb/materials inputs go to the chunks; the join needs only them.
        join.inputs = join_inputs;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{plan, GraphSpec, NodeDefaults};
    use crate::registry::registry;

    fn turntable_plan(chunking: Value) -> Plan {
        let mut params = json!({"frame_count": 10});
        if !chunking.is_null() {
            params["chunking"] = chunking;
        }
        let graph: GraphSpec = serde_json::from_value(json!({
            "nodes": [
                {"id": "resolve", "type": "cad.resolve"},
                {"id": "export", "type": "cad.export_glb"},
                {"id": "turntable", "type": "render.turntable", "params": params},
                {"id": "encode", "type": "video.encode"},
                {"id": "publish", "type": "output.publish"}
            ],
            "edges": [
                {"from": "resolve", "to": "export"},
                {"from": "export", "from_port": "glb", "to": "turntable", "to_port": "glb"},
                {"from": "turntable", "to": "encode"},
                {"from": "encode", "to": "publish"}
            ]
        }))
        .unwrap();
        let defaults = NodeDefaults {
            max_attempts: 3,
            timeout: std::time::Duration::from_secs(60),
            max_timeout: std::time::Duration::from_secs(7200),
        };
        plan(&graph, registry(), defaults).unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn a_chunked_turntable_becomes_its_chunks_and_a_join() {
        let p = expand(turntable_plan(json!({"frames_per_chunk": 4})));
        let ids: Vec<&str> = p.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "resolve",
                "export",
                "turntable",
                "encode",
                "publish",
                "turntable.frames-000-003",
                "turntable.frames-004-007",
                "turntable.frames-008-009"
            ]
        );
        let ranges: Vec<&Value> = p.nodes[5..].iter().map(|n| &n.params["frame_range"]).collect();
        assert_eq!(ranges, [&json!({"start": 0, "end": 3}), &json!({"start": 4, "end": 7}), &json!({"start": 8, "end": 9})]);
        assert!(p.nodes[5..].iter().all(|n| n.params.get("chunking").is_none() && n.deps == 1 && n.successors == [2]));
        assert!(p.nodes[5].inputs.iter().any(|b| b.port == "glb"), "a chunk renders from the export's GLB");
        assert_eq!(p.nodes[1].successors, [5, 6, 7], "the export releases the chunks");
        let join = &p.nodes[2];
        assert_eq!((join.deps, join.successors.as_slice()), (3, &[3usize][..]), "the join waits for every chunk and feeds the encode");
        let ports: Vec<&str> = join.inputs.iter().map(|b| b.port.as_str()).collect();
        assert_eq!(ports, ["chunk_000", "chunk_001", "chunk_002"]);
        assert!(any(&turntable_plan(json!({"frames_per_chunk": 4}))));
    }

    #[test]
    fn a_turntable_in_one_chunk_or_without_chunking_stays_one_task() {
        for chunking in [Value::Null, json!({"frames_per_chunk": 10}), json!({"frames_per_chunk": 99})] {
            let before = turntable_plan(chunking.clone());
            assert!(!any(&before), "{chunking}");
            assert_eq!(expand(before).nodes.len(), 5, "{chunking}");
        }
    }
}
