//! The graph submitted with a run, and its validation into an executable [`Plan`].
//!
//! Validation returns *every* problem at once, each with a stable `code`, so a client can
//! fix a graph in one round trip. Node types resolve through a [`NodeCatalog`]; the full
//! contract layer (ports, families, JSON Schema params) plugs in there.

use crate::modules::NodeCatalog;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Larger graphs are refused: a run's node_runs are written in one transaction.
pub const MAX_NODES: usize = 50_000;
/// Refused above this: a task retried more often is a bug, not bad luck.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique within the graph.
    pub id: String,
    /// Node type key; today the module key itself (`noop`, `sleep`, `fail`).
    #[serde(rename = "type")]
    pub node_type: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Attempts before the node fails for good (default from the coordinator's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Per-attempt time limit, e.g. "30s" (default from the coordinator's config).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// `from` must finish before `to` starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub from: String,
    pub to: String,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One thing wrong with a graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    pub code: ProblemCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Index into `edges`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<usize>,
    /// JSON pointer into the node's params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_path: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    EmptyGraph,
    TooLarge,
    EmptyNodeId,
    DuplicateNodeId,
    UnknownNodeType,
    InvalidParam,
    InvalidField,
    DanglingEdge,
    DuplicateEdge,
    Cycle,
}

/// Defaults applied to nodes that do not set them, and the fleet's ceiling on timeouts.
#[derive(Debug, Clone, Copy)]
pub struct NodeDefaults {
    pub max_attempts: u32,
    pub timeout: Duration,
    /// No node may ask for more (RabbitMQ's `consumer_timeout` must stay above it, or the
    /// broker would take a long task away from its worker mid-run).
    pub max_timeout: Duration,
}

/// A validated graph, ready to become node_runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In submission order.
    pub nodes: Vec<PlannedNode>,
}

#[derive(Debug, Clone)]
pub struct PlannedNode {
    pub id: String,
    pub module_key: &'static str,
    pub params: Value,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// Number of distinct predecessors.
    pub deps: u32,
    /// Indexes into `Plan::nodes`.
    pub successors: Vec<usize>,
}

impl Plan {
    /// Indexes of nodes with no predecessors: dispatched when the run is created.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes.iter().enumerate().filter(|(_, n)| n.deps == 0).map(|(i, _)| i)
    }
}

fn problem(code: ProblemCode, message: String) -> Problem {
    Problem { code, node_id: None, edge: None, param_path: None, message }
}

/// Validates `graph` and turns it into a plan, or lists every problem found.
pub fn plan(graph: &GraphSpec, catalog: &dyn NodeCatalog, defaults: NodeDefaults) -> Result<Plan, Vec<Problem>> {
    let mut problems = Vec::new();
    if graph.nodes.is_empty() {
        problems.push(problem(ProblemCode::EmptyGraph, "the graph has no nodes; add at least one node".into()));
    }
    if graph.nodes.len() > MAX_NODES {
        problems.push(problem(
            ProblemCode::TooLarge,
            format!("the graph has {} nodes; the limit is {MAX_NODES}: split the work into several runs", graph.nodes.len()),
        ));
        return Err(problems);
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(graph.nodes.len());
    let mut modules: Vec<Option<&'static str>> = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let at = |code, message| Problem { node_id: Some(node.id.clone()), ..problem(code, message) };
        if node.id.trim().is_empty() {
            problems.push(problem(ProblemCode::EmptyNodeId, format!("node #{i} has an empty `id`; give every node a unique id")));
        } else if index.insert(node.id.as_str(), i).is_some() {
            problems
                .push(at(ProblemCode::DuplicateNodeId, format!("node id `{}` is used more than once; node ids must be unique", node.id)));
        }
        let module = catalog.module_for(&node.node_type);
        if module.is_none() {
            problems.push(at(
                ProblemCode::UnknownNodeType,
                format!("node `{}` has unknown type `{}`; known types: {}", node.id, node.node_type, catalog.node_types().join(", ")),
            ));
        } else {
            for (path, message) in catalog.check_params(&node.node_type, &node.params) {
                problems
                    .push(Problem { param_path: Some(path), ..at(ProblemCode::InvalidParam, format!("node `{}`: {message}", node.id)) });
            }
        }
        if let Some(n) = node.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS_LIMIT {
                problems.push(at(
                    ProblemCode::InvalidField,
                    format!("node `{}`: `max_attempts` must be 1 to {MAX_ATTEMPTS_LIMIT}, got {n}", node.id),
                ));
            }
        }
        match node.timeout {
            Some(Duration::ZERO) => {
                problems.push(at(ProblemCode::InvalidField, format!("node `{}`: `timeout` must be positive, e.g. \"30s\"", node.id)));
            }
            Some(t) if t > defaults.max_timeout => problems.push(at(
                ProblemCode::InvalidField,
                format!(
                    "node `{}`: `timeout` {} is above this fleet's limit of {}; split the work, or raise `nodes.max_timeout` (and RabbitMQ's consumer_timeout with it)",
                    node.id,
                    humantime_serde::re::humantime::format_duration(t),
                    humantime_serde::re::humantime::format_duration(defaults.max_timeout)
                ),
            )),
            _ => {}
        }
        modules.push(module);
    }

    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); graph.nodes.len()];
    let mut deps = vec![0u32; graph.nodes.len()];
    let mut seen_edges: HashSet<(usize, usize)> = HashSet::new();
    for (e, edge) in graph.edges.iter().enumerate() {
        let at_edge = |code, message| Problem { edge: Some(e), ..problem(code, message) };
        let from = index.get(edge.from.as_str()).copied();
        let to = index.get(edge.to.as_str()).copied();
        for (end, name, found) in [("from", &edge.from, from), ("to", &edge.to, to)] {
            if found.is_none() {
                problems.push(at_edge(
                    ProblemCode::DanglingEdge,
                    format!("edge #{e} {end} `{name}` names no node of this graph; fix the id or add the node"),
                ));
            }
        }
        let (Some(from), Some(to)) = (from, to) else { continue };
        if !seen_edges.insert((from, to)) {
            problems.push(at_edge(
                ProblemCode::DuplicateEdge,
                format!("edge #{e} `{}` → `{}` is listed twice; remove one", edge.from, edge.to),
            ));
            continue;
        }
        successors[from].push(to);
        deps[to] += 1;
    }

    let on_cycle = nodes_on_cycles(&successors, &deps);
    if !on_cycle.is_empty() {
        let names: Vec<&str> = on_cycle.iter().map(|&i| graph.nodes[i].id.as_str()).collect();
        problems.push(problem(
            ProblemCode::Cycle,
            format!("the graph has a cycle through nodes {}; a run graph must be acyclic: remove an edge between them", names.join(", ")),
        ));
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let nodes = graph
        .nodes
        .iter()
        .zip(modules)
        .zip(successors)
        .zip(deps)
        .map(|(((node, module), successors), deps)| PlannedNode {
            id: node.id.clone(),
            module_key: module.expect("checked above"),
            params: node.params.clone(),
            max_attempts: node.max_attempts.unwrap_or(defaults.max_attempts),
            timeout: node.timeout.unwrap_or(defaults.timeout),
            deps,
            successors,
        })
        .collect();
    Ok(Plan { nodes })
}

/// Nodes that lie on a cycle (sorted), found by peeling off nodes with no remaining
/// predecessors (Kahn) and then nodes with no remaining successors: what is left of both
/// peelings sits on, or between, cycles.
fn nodes_on_cycles(successors: &[Vec<usize>], deps: &[u32]) -> Vec<usize> {
    let n = successors.len();
    let mut indeg = deps.to_vec();
    let mut alive = vec![true; n];
    let mut stack: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    while let Some(i) = stack.pop() {
        alive[i] = false;
        for &s in &successors[i] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                stack.push(s);
            }
        }
    }
    if !alive.iter().any(|&a| a) {
        return Vec::new();
    }
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut outdeg = vec![0usize; n];
    for (i, succ) in successors.iter().enumerate() {
        for &s in succ {
            if alive[i] && alive[s] {
                predecessors[s].push(i);
                outdeg[i] += 1;
            }
        }
    }
    let mut stack: Vec<usize> = (0..n).filter(|&i| alive[i] && outdeg[i] == 0).collect();
    while let Some(i) = stack.pop() {
        alive[i] = false;
        for &p in &predecessors[i] {
            outdeg[p] -= 1;
            if outdeg[p] == 0 && alive[p] {
                stack.push(p);
            }
        }
    }
    (0..n).filter(|&i| alive[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::Builtins;
    use serde_json::json;

    const DEFAULTS: NodeDefaults =
        NodeDefaults { max_attempts: 3, timeout: Duration::from_secs(60), max_timeout: Duration::from_secs(7200) };

    fn graph(v: Value) -> GraphSpec {
        serde_json::from_value(v).unwrap()
    }

    fn codes(r: Result<Plan, Vec<Problem>>) -> Vec<ProblemCode> {
        r.unwrap_err().into_iter().map(|p| p.code).collect()
    }

    #[test]
    fn diamond_plans_with_dependency_counts() {
        let g = graph(json!({
            "nodes": [{"id":"a","type":"noop"},{"id":"b","type":"sleep","params":{"ms":1}},
                      {"id":"c","type":"noop","max_attempts":5,"timeout":"2s"},{"id":"d","type":"noop"}],
            "edges": [{"from":"a","to":"b"},{"from":"a","to":"c"},{"from":"b","to":"d"},{"from":"c","to":"d"}]
        }));
        let plan = plan(&g, &Builtins, DEFAULTS).unwrap();
        let deps: Vec<u32> = plan.nodes.iter().map(|n| n.deps).collect();
        assert_eq!(deps, vec![0, 1, 1, 2]);
        assert_eq!(plan.ready().collect::<Vec<_>>(), vec![0]);
        assert_eq!(plan.nodes[0].successors, vec![1, 2]);
        assert_eq!(plan.nodes[2].max_attempts, 5);
        assert_eq!(plan.nodes[2].timeout, Duration::from_secs(2));
        assert_eq!(plan.nodes[3].max_attempts, 3);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let g = graph(json!({
            "nodes": [{"id":"a","type":"noop"},{"id":"b","type":"render"},{"id":"c","type":"noop"},
                      {"id":"a","type":"sleep"},{"id":"e","type":"noop","max_attempts":0}],
            "edges": [{"from":"a","to":"c"},{"from":"c","to":"a"},{"from":"c","to":"zz"}]
        }));
        let got = codes(plan(&g, &Builtins, DEFAULTS));
        for want in [
            ProblemCode::UnknownNodeType,
            ProblemCode::DuplicateNodeId,
            ProblemCode::InvalidParam,
            ProblemCode::InvalidField,
            ProblemCode::DanglingEdge,
            ProblemCode::Cycle,
        ] {
            assert!(got.contains(&want), "missing {want:?} in {got:?}");
        }
    }

    #[test]
    fn cycle_names_only_nodes_on_it() {
        let g = graph(json!({
            "nodes": [{"id":"s","type":"noop"},{"id":"x","type":"noop"},{"id":"y","type":"noop"},{"id":"t","type":"noop"}],
            "edges": [{"from":"s","to":"x"},{"from":"x","to":"y"},{"from":"y","to":"x"},{"from":"y","to":"t"}]
        }));
        let problems = plan(&g, &Builtins, DEFAULTS).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("nodes x, y;"), "{}", problems[0].message);
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let g = graph(json!({"nodes":[{"id":"a","type":"noop"}],"edges":[{"from":"a","to":"a"}]}));
        assert_eq!(codes(plan(&g, &Builtins, DEFAULTS)), vec![ProblemCode::Cycle]);
    }

    #[test]
    fn timeouts_above_the_fleet_limit_are_refused() {
        let g = graph(json!({"nodes":[{"id":"a","type":"noop","timeout":"3h"}]}));
        let problems = plan(&g, &Builtins, DEFAULTS).unwrap_err();
        assert_eq!(problems[0].code, ProblemCode::InvalidField);
        assert!(problems[0].message.contains("above this fleet's limit of 2h"), "{}", problems[0].message);
    }

    #[test]
    fn empty_graph_is_refused() {
        let g = graph(json!({"nodes":[]}));
        assert_eq!(codes(plan(&g, &Builtins, DEFAULTS)), vec![ProblemCode::EmptyGraph]);
    }

    #[test]
    fn unknown_fields_are_refused_by_the_parser() {
        let r: Result<GraphSpec, _> = serde_json::from_value(json!({"nodes":[{"id":"a","type":"noop","parms":{}}]}));
        assert!(r.unwrap_err().to_string().contains("parms"));
    }
}
