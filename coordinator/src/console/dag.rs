//! A run's graph drawn as an SVG DAG: nodes in columns by their longest path from a source,
//! edges port to port, each node coloured by its status. Large graphs are cut off at
//! `MAX_NODES` with a note (the node list below stays complete).

use super::html::esc;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;

const MAX_NODES: usize = 300;
const W: i64 = 170;
const H: i64 = 38;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 18;

fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#2e7d32",
        "failed" => "#c62828",
        "running" => "#1565c0",
        "queued" => "#6a1b9a",
        "skipped" => "#b0b0b0",
        _ => "#8d8d8d",
    }
}

/// The SVG of `graph` (a stored, normalised graph) with `statuses` by node id.
pub(super) fn svg(graph: &Value, statuses: &HashMap<String, String>) -> String {
    let nodes: Vec<&str> = graph["nodes"].as_array().into_iter().flatten().filter_map(|n| n["id"].as_str()).collect();
    if nodes.is_empty() {
        return String::new();
    }
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<(usize, usize)> = graph["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((*index.get(e["from"].as_str()?)?, *index.get(e["to"].as_str()?)?)))
        .collect();
    // Longest path from a source (the graph is validated acyclic; the bound guards anyway).
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len().min(10_000) {
        let mut changed = false;
        for &(a, b) in &edges {
            if depth[b] < depth[a] + 1 {
                depth[b] = depth[a] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut row_of = vec![0usize; nodes.len()];
    let mut rows: HashMap<usize, usize> = HashMap::new();
    for (i, d) in depth.iter().enumerate() {
        let r = rows.entry(*d).or_default();
        row_of[i] = *r;
        *r += 1;
    }
    let shown = |i: usize| i < MAX_NODES;
    let pos = |i: usize| (10 + depth[i] as i64 * (W + GAP_X), 10 + row_of[i] as i64 * (H + GAP_Y));
    let width = 20 + (depth.iter().max().copied().unwrap_or(0) as i64 + 1) * (W + GAP_X);
    let height = 20 + (rows.values().max().copied().unwrap_or(1).min(MAX_NODES) as i64) * (H + GAP_Y);
    let mut s = format!("<svg id=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\">");
    for &(a, b) in edges.iter().filter(|(a, b)| shown(*a) && shown(*b)) {
        let ((ax, ay), (bx, by)) = (pos(a), pos(b));
        let (x1, y1, x2, y2) = (ax + W, ay + H / 2, bx, by + H / 2);
        let mid = (x1 + x2) / 2;
        let _ =
            write!(s, "<path d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\" fill=\"none\" stroke=\"#9aa3ad\" stroke-width=\"1.5\"/>");
    }
    for (i, id) in nodes.iter().enumerate().filter(|(i, _)| shown(*i)) {
        let (x, y) = pos(i);
        let status = statuses.get(*id).map(String::as_str).unwrap_or("pending");
        let _ = write!(
            s,
            "<a href=\"#node-{e}\"><g class=\"dag-node\" data-status=\"{st}\"><rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\" fill=\"{c}\"/><text x=\"{tx}\" y=\"{ty}\" fill=\"#fff\" font-size=\"12\" font-family=\"sans-serif\">{e}</text><text x=\"{tx}\" y=\"{ty2}\" fill=\"#eef\" font-size=\"10\" font-family=\"sans-serif\">{st}</text></g></a>",
            e = esc(id),
            st = esc(status),
            c = colour(status),
            tx = x + 8,
            ty = y + 16,
            ty2 = y + 30
        );
    }
    s += "</svg>";
    if nodes.len() > MAX_NODES {
        let _ = write!(
            s,
            "<p class=\"muted\">The drawing shows the first {MAX_NODES} of {} nodes; every node is listed below.</p>",
            nodes.len()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_diamond_is_drawn_in_three_columns_with_its_statuses() {
        let g = json!({"nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}],
                       "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}, {"from": "b", "to": "d"}, {"from": "c", "to": "d"}]});
        let st: HashMap<String, String> =
            [("a", "succeeded"), ("b", "failed")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s = svg(&g, &st);
        assert_eq!(s.matches("<path").count(), 4);
        assert!(s.contains("data-status=\"failed\"") && s.contains("#c62828"));
        // d sits in the third column: x = 10 + 2 * (170 + 60).
        assert!(s.contains("<rect x=\"470\""), "{s}");
    }
}
