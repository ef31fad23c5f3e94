//! A graph of nodes (typed by the [registry](crate::registry)) and edges port → port, and
//! its validation into an executable [`Plan`].
//!
//! Validation returns *every* problem at once, each with a stable `code`, the node, edge
//! or param (JSON pointer) it is about and a message that says how to fix it, so a client
//! fixes a graph in one round trip. It also yields the *normalised* graph: current type
//! names, every edge's ports named, params with their defaults. That is what gets stored.

use crate::registry::{cad_file_problem, ArtifactKind, Context, ExecutionRole, Family, NodeType, Port, Registry};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Larger graphs are refused: a run's node_runs are written in one transaction.
pub const MAX_NODES: usize = 50_000;
/// Refused above this: a task retried more often is a bug, not bad luck.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// The family every node must belong to; inferred from the node types when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    /// 1 to 50,000 nodes.
    #[schema(min_items = 1, max_items = 50_000)]
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique within the graph; not blank.
    #[schema(min_length = 1, pattern = "\\S")]
    pub id: String,
    /// A `type_key` of the registry (`GET /v1/nodes`).
    #[serde(rename = "type")]
    pub node_type: String,
    /// Checked against the node type's `params_schema`; defaults are filled in.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub params: Value,
    /// Attempts before the node fails for good, 1 to 100 (default from the coordinator's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Per-attempt time limit, e.g. "30s" (default: the node type's, else the coordinator's).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "30m")]
    pub timeout: Option<Duration>,
    /// Where an editor drew the node; stored with the graph, read by nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// A node's place on an editor's canvas.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Finite, within ±10,000,000.
    #[schema(minimum = -10_000_000.0, maximum = 10_000_000.0)]
    pub x: f64,
    /// Finite, within ±10,000,000.
    #[schema(minimum = -10_000_000.0, maximum = 10_000_000.0)]
    pub y: f64,
}

/// Coordinates beyond this are refused: no canvas is that large, so such a value is a bug
/// of the editor that wrote it, better found when it is saved than when the graph is opened.
pub const MAX_COORDINATE: f64 = 1e7;

/// Output `from_port` of node `from` feeds input `to_port` of node `to`; `to` starts after
/// `from` has finished. A port may be left out when only one fits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<String>,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One thing wrong with a graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Problem {
    pub code: ProblemCode,
    #[serde(default)]
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Index into `edges`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<usize>,
    /// JSON pointer into the node's params; of an `invalid_subject` problem, into the
    /// request (`/subject/cad_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_path: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The graph cannot run.
    #[default]
    Error,
    /// The graph runs, but probably not as meant.
    Warning,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    EmptyGraph,
    TooLarge,
    EmptyNodeId,
    DuplicateNodeId,
    UnknownNodeType,
    /// Warning: an old type name, resolved through the alias table.
    RenamedNodeType,
    FamilyMismatch,
    InvalidParam,
    InvalidField,
    DanglingEdge,
    DuplicateEdge,
    UnknownPort,
    AmbiguousPort,
    PortKindMismatch,
    MissingRequiredInput,
    InputFedTwice,
    Cycle,
    NoSink,
    /// Warning: a node whose output reaches no sink.
    UnreachableNode,
    /// Found by preflight rather than by the graph itself: no live worker serves a module, a
    /// subject is malformed, an output type is bound elsewhere.
    Preflight,
    /// The run's subject names what no worker could render (a `cad_file` outside `cad_dir`).
    InvalidSubject,
}

impl ProblemCode {
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }
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

/// What validation found, and the graph in canonical shape.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Errors and warnings, in the order found.
    pub problems: Vec<Problem>,
    /// Current type names, ports named where they could be resolved, params with defaults.
    pub normalized: GraphSpec,
    /// The graph's family: declared, or the only one its node types allow (`None` when
    /// the types allow several, or none).
    pub family: Option<Family>,
    /// What the graph's sinks deliver: (sink node id, artifact kind fed into it).
    pub delivers: Vec<(String, ArtifactKind)>,
}

impl Validation {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Error)
    }

    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }

    pub fn warnings(&self) -> Vec<Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Warning).cloned().collect()
    }
}

/// A validated graph, ready to become node_runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In submission order.
    pub nodes: Vec<PlannedNode>,
    /// The normalised graph (what is stored with the run).
    pub graph: GraphSpec,
    pub family: Option<Family>,
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct PlannedNode {
    pub id: String,
    pub module_key: &'static str,
    /// With defaults applied.
    pub params: Value,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// Number of distinct predecessors.
    pub deps: u32,
    /// Indexes into `Plan::nodes`.
    pub successors: Vec<usize>,
    /// Where each artifact input comes from, resolved when the task is built.
    pub inputs: Vec<InputBinding>,
}

/// One input of a node: an upstream node's output, or something of the run's.
#[derive(Debug, Clone, PartialEq)]
pub struct InputBinding {
    pub port: String,
    pub source: InputSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// Output `port` of the node at this index of `Plan::nodes`.
    Node { node: usize, port: String },
    /// A context of the run (see [`Context`]).
    Context(Context),
}

impl Plan {
    /// Indexes of nodes with no predecessors: dispatched when the run is created.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes.iter().enumerate().filter(|(_, n)| n.deps == 0).map(|(i, _)| i)
    }
}

fn problem(code: ProblemCode, message: String) -> Problem {
    Problem { code, severity: Severity::Error, node_id: None, edge: None, param_path: None, message }
}

fn warning(code: ProblemCode, message: String) -> Problem {
    Problem { severity: Severity::Warning, ..problem(code, message) }
}

fn ports(list: &[Port]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter().map(|p| format!("`{}` ({})", p.name, p.kind.as_str())).collect::<Vec<_>>().join(", ")
}

/// What is wrong with a run's subject that would otherwise fail only on a worker: a
/// `cad_file` that cannot name a file inside `cad_dir` (see [`cad_file_problem`]).
pub fn check_subject(subject: &Value) -> Vec<Problem> {
    let Some(file) = subject.get("cad_file") else { return Vec::new() };
    let why = match file.as_str() {
        Some(name) => cad_file_problem(name),
        None => Some(format!("`cad_file` must be a string, the STEP file's path inside cad_dir (e.g. \"bracket.stp\"), not {file}")),
    };
    why.map(|message| Problem { param_path: Some("/subject/cad_file".into()), ..problem(ProblemCode::InvalidSubject, message) })
        .into_iter()
        .collect()
}

/// Validates `graph` against `registry`; see [`Validation`].
pub fn validate(graph: &GraphSpec, registry: &Registry) -> Validation {
    analyse(graph, registry).0
}

/// How validation saw a graph's nodes and edges: what [`connection_options`] judges a new
/// edge against, so that the editor and validation cannot disagree.
#[derive(Default)]
struct Wiring<'g, 'r> {
    /// Node id → index; of a duplicated id the last node, which edges then name.
    index: HashMap<&'g str, usize>,
    /// Each node's type (through aliases); `None` when unknown.
    types: Vec<Option<&'r NodeType>>,
    /// Every edge between two nodes of the graph, once per pair, whatever its ports.
    successors: Vec<Vec<usize>>,
    /// The edges whose ports resolved, in order, each once: (from, output, to, input).
    edges: Vec<(usize, &'static str, usize, &'static str)>,
    /// How many of those feed each (node, input).
    fed: HashMap<(usize, &'static str), usize>,
}

fn analyse<'g, 'r>(graph: &'g GraphSpec, registry: &'r Registry) -> (Validation, Wiring<'g, 'r>) {
    let mut problems = Vec::new();
    let mut normalized = graph.clone();
    if graph.nodes.is_empty() {
        problems.push(problem(ProblemCode::EmptyGraph, "the graph has no nodes; add at least one node".into()));
    }
    if graph.nodes.len() > MAX_NODES {
        problems.push(problem(
            ProblemCode::TooLarge,
            format!("the graph has {} nodes; the limit is {MAX_NODES}: split the work into several runs", graph.nodes.len()),
        ));
        return (Validation { problems, normalized, family: graph.family, delivers: Vec::new() }, Wiring::default());
    }

    // Nodes: ids, types (through aliases), params, limits.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(graph.nodes.len());
    let mut types: Vec<Option<&NodeType>> = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let at = |code, message| Problem { node_id: Some(node.id.clone()), ..problem(code, message) };
        if node.id.trim().is_empty() {
            problems.push(problem(ProblemCode::EmptyNodeId, format!("node #{i} has an empty `id`; give every node a unique id")));
        } else if index.insert(node.id.as_str(), i).is_some() {
            problems
                .push(at(ProblemCode::DuplicateNodeId, format!("node id `{}` is used more than once; node ids must be unique", node.id)));
        }
        let (key, renamed) = match registry.alias(&node.node_type) {
            Some(new) => (new, true),
            None => (node.node_type.as_str(), false),
        };
        let ty = registry.get(key);
        match ty {
            None => {
                let hint = match registry.closest(&node.node_type) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "`GET /v1/nodes` lists the node types".into(),
                };
                problems
                    .push(at(ProblemCode::UnknownNodeType, format!("node `{}` has unknown type `{}`; {hint}", node.id, node.node_type)));
            }
            Some(t) => {
                if renamed {
                    problems.push(Problem {
                        node_id: Some(node.id.clone()),
                        ..warning(
                            ProblemCode::RenamedNodeType,
                            format!(
                                "node `{}`: type `{}` is now `{}`; `repair` rewrites stored workflows",
                                node.id, node.node_type, t.type_key
                            ),
                        )
                    });
                }
                normalized.nodes[i].node_type = t.type_key.to_string();
                let param_problems = registry.check_params(t.type_key, &node.params);
                for (path, message) in &param_problems {
                    problems.push(Problem {
                        param_path: Some(path.clone()),
                        ..at(ProblemCode::InvalidParam, format!("node `{}` param `{}`: {message}", node.id, display_path(path)))
                    });
                }
                if param_problems.is_empty() {
                    normalized.nodes[i].params = registry.with_defaults(t.type_key, &node.params);
                }
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
        if node.timeout == Some(Duration::ZERO) {
            problems.push(at(ProblemCode::InvalidField, format!("node `{}`: `timeout` must be positive, e.g. \"30s\"", node.id)));
        }
        if let Some(p) = node.position.filter(|p| ![p.x, p.y].iter().all(|v| v.is_finite() && v.abs() <= MAX_COORDINATE)) {
            problems.push(at(
                ProblemCode::InvalidField,
                format!(
                    "node `{}`: `position` must be finite numbers within ±{MAX_COORDINATE:e}, got x = {}, y = {}; move the node back onto the canvas",
                    node.id, p.x, p.y
                ),
            ));
        }
        types.push(ty);
    }

    let family = check_family(graph, &types, &mut problems);

    // Edges: ends, ports, kinds; then what each input receives.
    let n = graph.nodes.len();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut seen_pairs: HashSet<(usize, usize)> = HashSet::new();
    let mut seen_edges: HashSet<(usize, &str, usize, &str)> = HashSet::new();
    let mut resolved = Vec::new();
    let mut fed: HashMap<(usize, &'static str), usize> = HashMap::new();
    let mut delivers = Vec::new();
    // Nodes with an incoming edge whose ports could not be resolved: their inputs are not
    // reported missing on top of the edge's own problem.
    let mut unresolved_into: HashSet<usize> = HashSet::new();
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
        if seen_pairs.insert((from, to)) {
            successors[from].push(to);
        }
        let (Some(ft), Some(tt)) = (types[from], types[to]) else {
            unresolved_into.insert(to);
            continue;
        };
        let Some((out, inp)) = resolve_ports(e, edge, ft, tt, &mut problems) else {
            unresolved_into.insert(to);
            continue;
        };
        normalized.edges[e].from_port = Some(out.name.to_string());
        normalized.edges[e].to_port = Some(inp.name.to_string());
        if !seen_edges.insert((from, out.name, to, inp.name)) {
            problems.push(at_edge(
                ProblemCode::DuplicateEdge,
                format!("edge #{e} `{}.{}` → `{}.{}` is listed twice; remove one", edge.from, out.name, edge.to, inp.name),
            ));
            continue;
        }
        resolved.push((from, out.name, to, inp.name));
        if tt.execution_role == ExecutionRole::Sink {
            delivers.push((edge.to.clone(), out.kind));
        }
        let count = fed.entry((to, inp.name)).or_insert(0);
        // Reported once, at the first edge too many.
        let refused = *count == 1 && !takes_another(&inp, *count);
        *count += 1;
        if refused {
            problems.push(at_edge(
                ProblemCode::InputFedTwice,
                format!(
                    "edge #{e}: input `{}` of node `{}` is already fed by another edge; an input takes one edge: remove one",
                    inp.name, edge.to
                ),
            ));
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let Some(t) = types[i].filter(|_| !unresolved_into.contains(&i)) else { continue };
        for p in t.inputs.iter().filter(|p| p.required && !fed.contains_key(&(i, p.name))) {
            let feeders: Vec<&str> = registry
                .all()
                .iter()
                .filter(|o| o.editor_visible && o.outputs.iter().any(|out| out.kind == p.kind))
                .map(|o| o.type_key)
                .collect();
            let hint = if feeders.is_empty() { String::new() } else { format!(" (from e.g. {})", feeders.join(", ")) };
            problems.push(Problem {
                node_id: Some(node.id.clone()),
                ..problem(
                    ProblemCode::MissingRequiredInput,
                    format!(
                        "node `{}` ({}) needs input `{}` ({}): add an edge into it{hint}",
                        node.id,
                        t.type_key,
                        p.name,
                        p.kind.as_str()
                    ),
                )
            });
        }
    }

    let deps = in_degrees(&successors);
    let on_cycle = nodes_on_cycles(&successors, &deps);
    if !on_cycle.is_empty() {
        let names: Vec<&str> = on_cycle.iter().map(|&i| graph.nodes[i].id.as_str()).collect();
        problems.push(problem(
            ProblemCode::Cycle,
            format!("the graph has a cycle through nodes {}; a graph must be acyclic: remove an edge between them", names.join(", ")),
        ));
    }
    check_sinks(graph, &types, &successors, &mut problems);
    let wiring = Wiring { index, types, successors, edges: resolved, fed };
    (Validation { problems, normalized, family, delivers }, wiring)
}

/// Whether output `out` may feed input `inp` (by artifact kind).
fn fits(out: &Port, inp: &Port) -> bool {
    out.kind.fits(inp.kind)
}

/// Why output `out` of node `from` cannot feed input `inp` of node `to` by kind, if it cannot.
fn kind_refusal(from: &str, out: &Port, to: &str, inp: &Port) -> Option<String> {
    (!fits(out, inp)).then(|| format!("`{from}.{}` gives {}; `{to}.{}` takes {}", out.name, out.kind.as_str(), inp.name, inp.kind.as_str()))
}

/// Whether input `inp`, already fed by `feeds` edges, takes another: only `many` inputs
/// take several.
fn takes_another(inp: &Port, feeds: usize) -> bool {
    inp.many || feeds == 0
}

/// Why node `id` of type `t` cannot be in a graph of `family`, if it cannot.
fn outside_family(id: &str, t: &NodeType, family: Family) -> Option<String> {
    (!t.allows(family)).then(|| {
        let allowed: Vec<&str> = t.families.iter().map(|f| f.as_str()).collect();
        format!(
            "node `{id}` ({}) belongs to {}, not to this `{}` graph: remove it or use a `{}` graph",
            t.type_key,
            allowed.join(", "),
            family.as_str(),
            allowed.join("` or `")
        )
    })
}

fn display_path(pointer: &str) -> String {
    if pointer.is_empty() {
        "(all)".into()
    } else {
        pointer.trim_start_matches('/').replace('/', ".")
    }
}

/// Declared family: every node must allow it. Otherwise: the families all nodes allow.
fn check_family(graph: &GraphSpec, types: &[Option<&NodeType>], problems: &mut Vec<Problem>) -> Option<Family> {
    if let Some(f) = graph.family {
        for (node, t) in graph.nodes.iter().zip(types) {
            if let Some(message) = t.and_then(|t| outside_family(&node.id, t, f)) {
                problems.push(Problem { node_id: Some(node.id.clone()), ..problem(ProblemCode::FamilyMismatch, message) });
            }
        }
        return Some(f);
    }
    let possible: Vec<Family> = Family::ALL.into_iter().filter(|f| types.iter().flatten().all(|t| t.allows(*f))).collect();
    if possible.is_empty() && types.iter().any(Option::is_some) {
        let only = |f: Family| -> Vec<&str> {
            graph.nodes.iter().zip(types).filter(|(_, t)| t.is_some_and(|t| t.families == [f])).map(|(n, _)| n.id.as_str()).collect()
        };
        problems.push(problem(
            ProblemCode::FamilyMismatch,
            format!(
                "the graph mixes families: cad_file-only nodes {:?} and order_line-only nodes {:?}; a graph has one family: split it in two",
                only(Family::CadFile),
                only(Family::OrderLine)
            ),
        ));
    }
    match possible.as_slice() {
        [f] => Some(*f),
        _ => None,
    }
}

/// Picks the ports an edge connects: the named ones, or the only pair whose kinds fit
/// (an exact kind match wins over `any`).
fn resolve_ports(e: usize, edge: &EdgeSpec, ft: &NodeType, tt: &NodeType, problems: &mut Vec<Problem>) -> Option<(Port, Port)> {
    let at_edge = |code, message| Problem { edge: Some(e), ..problem(code, message) };
    let outs: Vec<Port> = match &edge.from_port {
        Some(name) => match ft.output(name) {
            Some(p) => vec![*p],
            None => {
                problems.push(at_edge(
                    ProblemCode::UnknownPort,
                    format!("edge #{e}: `{}` ({}) has no output `{name}`; its outputs: {}", edge.from, ft.type_key, ports(ft.outputs)),
                ));
                return None;
            }
        },
        None => ft.outputs.to_vec(),
    };
    let ins: Vec<Port> = match &edge.to_port {
        Some(name) => match tt.input(name) {
            Some(p) => vec![*p],
            None => {
                problems.push(at_edge(
                    ProblemCode::UnknownPort,
                    format!("edge #{e}: `{}` ({}) has no input `{name}`; its inputs: {}", edge.to, tt.type_key, ports(tt.inputs)),
                ));
                return None;
            }
        },
        None => tt.inputs.to_vec(),
    };
    if outs.is_empty() || ins.is_empty() {
        let (node, ty, what) = if outs.is_empty() { (&edge.from, ft, "outputs") } else { (&edge.to, tt, "inputs") };
        problems.push(at_edge(
            ProblemCode::UnknownPort,
            format!(
                "edge #{e}: `{node}` ({}) has no {what}, so no edge can {} it",
                ty.type_key,
                if outs.is_empty() { "leave" } else { "enter" }
            ),
        ));
        return None;
    }
    let pairs: Vec<(Port, Port)> = outs.iter().flat_map(|o| ins.iter().map(move |i| (*o, *i))).filter(|(o, i)| fits(o, i)).collect();
    let exact: Vec<(Port, Port)> = pairs.iter().copied().filter(|(o, i)| o.kind == i.kind && o.kind != ArtifactKind::Any).collect();
    match (pairs.len(), exact.len()) {
        (0, _) => {
            problems.push(at_edge(
                ProblemCode::PortKindMismatch,
                format!(
                    "edge #{e} `{}` → `{}`: no output of {} fits an input of {}; outputs {} cannot feed inputs {}",
                    edge.from,
                    edge.to,
                    ft.type_key,
                    tt.type_key,
                    ports(&outs),
                    ports(&ins)
                ),
            ));
            None
        }
        (1, _) => Some(pairs[0]),
        (_, 1) => Some(exact[0]),
        _ => {
            let options: Vec<String> = pairs.iter().map(|(o, i)| format!("{}→{}", o.name, i.name)).collect();
            problems.push(at_edge(
                ProblemCode::AmbiguousPort,
                format!("edge #{e} `{}` → `{}` could connect {}; name `from_port` and `to_port`", edge.from, edge.to, options.join(", ")),
            ));
            None
        }
    }
}

/// A graph of real nodes must deliver something (a sink); nodes whose output reaches no
/// sink get a warning. Graphs of test nodes only deliver nothing, by design.
fn check_sinks(graph: &GraphSpec, types: &[Option<&NodeType>], successors: &[Vec<usize>], problems: &mut Vec<Problem>) {
    let role = |i: usize| types[i].map(|t| t.execution_role);
    let real = (0..graph.nodes.len()).any(|i| role(i).is_some_and(|r| r != ExecutionRole::Test));
    if !real {
        return;
    }
    let sinks: Vec<usize> = (0..graph.nodes.len()).filter(|&i| role(i) == Some(ExecutionRole::Sink)).collect();
    if sinks.is_empty() {
        problems.push(problem(
            ProblemCode::NoSink,
            "the graph delivers nothing: add an `output.publish` node fed by the artifact to deliver".into(),
        ));
        return;
    }
    // Walk back from the sinks.
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); successors.len()];
    for (i, succ) in successors.iter().enumerate() {
        for &s in succ {
            predecessors[s].push(i);
        }
    }
    let mut reaches = vec![false; successors.len()];
    let mut stack = sinks;
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut reaches[i], true) {
            stack.extend(predecessors[i].iter().copied());
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if !reaches[i] && role(i).is_some_and(|r| r != ExecutionRole::Test) {
            problems.push(Problem {
                node_id: Some(node.id.clone()),
                ..warning(
                    ProblemCode::UnreachableNode,
                    format!(
                        "node `{}` feeds no sink, so its work is thrown away: connect it towards an `output.publish` or remove it",
                        node.id
                    ),
                )
            });
        }
    }
}

fn in_degrees(successors: &[Vec<usize>]) -> Vec<u32> {
    let mut deps = vec![0u32; successors.len()];
    for succ in successors {
        for &s in succ {
            deps[s] += 1;
        }
    }
    deps
}

/// Validates `graph` and turns it into a plan, or lists every problem found (warnings
/// included, so the caller can show them together).
pub fn plan(graph: &GraphSpec, registry: &Registry, defaults: NodeDefaults) -> Result<Plan, Vec<Problem>> {
    let mut v = validate(graph, registry);
    for (node, spec) in graph.nodes.iter().zip(&v.normalized.nodes) {
        if let Some(t) = node.timeout.filter(|t| *t > defaults.max_timeout) {
            v.problems.push(Problem {
                node_id: Some(node.id.clone()),
                ..problem(
                    ProblemCode::InvalidField,
                    format!(
                        "node `{}`: `timeout` {} is above this fleet's limit of {}; split the work, or raise `nodes.max_timeout` (and RabbitMQ's consumer_timeout with it)",
                        spec.id,
                        humantime_serde::re::humantime::format_duration(t),
                        humantime_serde::re::humantime::format_duration(defaults.max_timeout)
                    ),
                )
            });
        }
    }
    if !v.is_valid() {
        return Err(v.problems);
    }
    let index: HashMap<&str, usize> = v.normalized.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); v.normalized.nodes.len()];
    let mut inputs: Vec<Vec<InputBinding>> = vec![Vec::new(); v.normalized.nodes.len()];
    for e in &v.normalized.edges {
        let (from, to) = (index[e.from.as_str()], index[e.to.as_str()]);
        if !successors[from].contains(&to) {
            successors[from].push(to);
        }
        // Ports are named in the normalised graph. A `many` port only orders test nodes:
        // nothing travels along it, so the task needs no lookup for it.
        let (Some(from_port), Some(to_port)) = (&e.from_port, &e.to_port) else { continue };
        let target = registry.get(&v.normalized.nodes[to].node_type).and_then(|t| t.input(to_port));
        if target.is_some_and(|p| !p.many) {
            inputs[to].push(InputBinding { port: to_port.clone(), source: InputSource::Node { node: from, port: from_port.clone() } });
        }
    }
    let deps = in_degrees(&successors);
    let nodes = v
        .normalized
        .nodes
        .iter()
        .zip(successors)
        .zip(deps)
        .zip(inputs)
        .map(|(((node, successors), deps), mut inputs)| {
            let t = registry.get(&node.node_type).expect("validated above");
            inputs.extend(t.context.iter().map(|&c| InputBinding { port: c.port().into(), source: InputSource::Context(c) }));
            let type_timeout = t.default_timeout_s.map(|s| Duration::from_secs(s).min(defaults.max_timeout));
            PlannedNode {
                id: node.id.clone(),
                module_key: t.module_key,
                params: node.params.clone(),
                max_attempts: node.max_attempts.unwrap_or(defaults.max_attempts),
                timeout: node.timeout.or(type_timeout).unwrap_or(defaults.timeout),
                deps,
                successors,
                inputs,
            }
        })
        .collect();
    let warnings = v.warnings();
    Ok(Plan { nodes, graph: v.normalized, family: v.family, warnings })
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

/// A port of a node of the graph, by the node's `id` and the port's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRef {
    pub node: String,
    pub port: String,
}

/// What an editor asks while an edge is dragged from a port: the graph as drawn, and the
/// port the drag started at, an output (`from`) or an input (`to`); exactly one of them.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionQuery {
    pub graph: GraphSpec,
    /// An output port: which inputs may it feed?
    #[serde(default)]
    pub from: Option<PortRef>,
    /// An input port: which outputs may feed it?
    #[serde(default)]
    pub to: Option<PortRef>,
}

/// The end of a drag, out of a [`ConnectionQuery`].
#[derive(Debug, Clone, Copy)]
pub enum DragEnd<'a> {
    /// From this output, towards inputs.
    From(&'a PortRef),
    /// Into this input, from outputs.
    To(&'a PortRef),
}

impl ConnectionQuery {
    pub fn end(&self) -> Result<DragEnd<'_>, ConnectionError> {
        match (&self.from, &self.to) {
            (Some(p), None) => Ok(DragEnd::From(p)),
            (None, Some(p)) => Ok(DragEnd::To(p)),
            _ => Err(ConnectionError::OneEnd),
        }
    }
}

/// Where a dragged edge may go: every port on the other side in the graph (fitting or not,
/// and why not), and the node types a new node could be inserted from.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ConnectionOptions {
    /// Every input (dragging from an output) or output (dragging into an input) of the
    /// graph's nodes of a known type, in graph order; the drag's own node too.
    pub targets: Vec<PortOption>,
    /// The editor-visible node types of the graph's family with a port the drag fits, one
    /// entry per fitting port: what a drop on empty canvas may insert.
    pub node_types: Vec<TypeOption>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PortOption {
    pub node: String,
    pub port: String,
    /// Whether the edge would be accepted by validation.
    pub fits: bool,
    /// Why it does not fit, for a person (`null` when it fits).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TypeOption {
    pub type_key: String,
    pub port: String,
}

/// A [`ConnectionQuery`] that names nothing to connect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectionError {
    #[error(r#"give exactly one of `from` (an output port) and `to` (an input port), e.g. {{"graph": {{...}}, "from": {{"node": "still", "port": "image"}}}}"#)]
    OneEnd,
    #[error("the graph has {0} nodes; the limit is {MAX_NODES}")]
    TooLarge(usize),
    #[error("no node `{0}` in the graph; name the node by its `id`")]
    UnknownNode(String),
    #[error(
        "node `{node}` has unknown type `{node_type}`, so it has no ports to connect; fix its type first (`GET /v1/nodes` lists them)"
    )]
    UnknownType { node: String, node_type: String },
    #[error("node `{node}` ({type_key}) has no {side} `{port}`; its {side}s: {known}")]
    UnknownPort { node: String, type_key: &'static str, side: &'static str, port: String, known: String },
}

impl ConnectionError {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectionError::OneEnd => "invalid_request",
            ConnectionError::TooLarge(_) => "too_large",
            ConnectionError::UnknownNode(_) => "unknown_node",
            ConnectionError::UnknownType { .. } => "unknown_node_type",
            ConnectionError::UnknownPort { .. } => "unknown_port",
        }
    }
}

/// The server's rules for an editor's drag (see [`ConnectionOptions`]): a new edge fits when
/// validation would accept it, judged against the graph as validation sees it (its resolved
/// edges, its family), with validation's own checks of kind, family and bound inputs. The
/// graph's other problems do not matter here; validation reports them.
pub fn connection_options(graph: &GraphSpec, registry: &Registry, end: DragEnd<'_>) -> Result<ConnectionOptions, ConnectionError> {
    if graph.nodes.len() > MAX_NODES {
        return Err(ConnectionError::TooLarge(graph.nodes.len()));
    }
    let (v, w) = analyse(graph, registry);
    let (forwards, at) = match end {
        DragEnd::From(p) => (true, p),
        DragEnd::To(p) => (false, p),
    };
    let a = *w.index.get(at.node.as_str()).ok_or_else(|| ConnectionError::UnknownNode(at.node.clone()))?;
    let ta =
        w.types[a].ok_or_else(|| ConnectionError::UnknownType { node: at.node.clone(), node_type: graph.nodes[a].node_type.clone() })?;
    let (own, side) = if forwards { (ta.outputs, "output") } else { (ta.inputs, "input") };
    let port = own.iter().find(|p| p.name == at.port).ok_or_else(|| ConnectionError::UnknownPort {
        node: at.node.clone(),
        type_key: ta.type_key,
        side,
        port: at.port.clone(),
        known: ports(own),
    })?;
    // An edge from `a` into a node upstream of it (or from a node downstream of it into `a`)
    // closes a cycle.
    let closes_cycle = reached(&w.successors, a, forwards);
    let id = |i: usize| graph.nodes[i].id.as_str();
    let refusal = |other: usize, other_type: &NodeType, other_port: &Port| -> Option<String> {
        let (from, out, to, inp) = if forwards { (a, port, other, other_port) } else { (other, other_port, a, port) };
        if from == to {
            return Some(format!("`{}` cannot feed itself: that edge would be a cycle", id(a)));
        }
        if let Some(why) = kind_refusal(id(from), out, id(to), inp) {
            return Some(why);
        }
        if let Some(why) = graph.family.and_then(|f| outside_family(id(other), other_type, f)) {
            return Some(why);
        }
        if w.edges.contains(&(from, out.name, to, inp.name)) {
            return Some(format!("`{}.{}` → `{}.{}` is already connected", id(from), out.name, id(to), inp.name));
        }
        let feeds = w.fed.get(&(to, inp.name)).copied().unwrap_or(0);
        if !takes_another(inp, feeds) {
            let feeder = w.edges.iter().find(|e| (e.2, e.3) == (to, inp.name)).map(|e| format!(" by `{}.{}`", id(e.0), e.1));
            return Some(format!(
                "`{}.{}` is already fed{}; an input takes one edge: remove that one first",
                id(to),
                inp.name,
                feeder.unwrap_or_default()
            ));
        }
        if closes_cycle[other] {
            return Some(format!("that edge would make a cycle: `{}` already runs after `{}`", id(from), id(to)));
        }
        None
    };
    let mut targets = Vec::new();
    for (b, node) in graph.nodes.iter().enumerate() {
        // A node whose id a later node repeats cannot be reached by an edge.
        let (Some(tb), Some(&i)) = (w.types[b], w.index.get(node.id.as_str())) else { continue };
        if i != b {
            continue;
        }
        for p in if forwards { tb.inputs } else { tb.outputs } {
            let reason = refusal(b, tb, p);
            targets.push(PortOption { node: node.id.clone(), port: p.name.into(), fits: reason.is_none(), reason });
        }
    }
    let node_types = registry
        .all()
        .iter()
        .filter(|t| t.editor_visible && v.family.is_none_or(|f| t.allows(f)))
        .flat_map(|t| {
            let other = if forwards { t.inputs } else { t.outputs };
            other
                .iter()
                .filter(move |p| if forwards { fits(port, p) } else { fits(p, port) })
                .map(move |p| TypeOption { type_key: t.type_key.into(), port: p.name.into() })
        })
        .collect();
    Ok(ConnectionOptions { targets, node_types })
}

/// The nodes reached from `start` (itself included) along `successors`, or against them
/// when `backwards`.
fn reached(successors: &[Vec<usize>], start: usize, backwards: bool) -> Vec<bool> {
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); successors.len()];
    for (i, succ) in successors.iter().enumerate() {
        for &s in succ {
            if backwards {
                next[s].push(i);
            } else {
                next[i].push(s);
            }
        }
    }
    let mut seen = vec![false; successors.len()];
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend(next[i].iter().copied());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::registry;
    use crate::starters::starter;
    use serde_json::json;

    const DEFAULTS: NodeDefaults =
        NodeDefaults { max_attempts: 3, timeout: Duration::from_secs(60), max_timeout: Duration::from_secs(7200) };

    fn graph(v: Value) -> GraphSpec {
        serde_json::from_value(v).unwrap()
    }

    fn codes(v: &Validation) -> Vec<ProblemCode> {
        v.problems.iter().map(|p| p.code).collect()
    }

    fn check(v: Value) -> Validation {
        validate(&graph(v), registry())
    }

    /// The order-line starter with `f` applied to its JSON.
    fn order_line(f: impl FnOnce(&mut Value)) -> Value {
        let mut v = serde_json::to_value(starter(Family::OrderLine)).unwrap();
        f(&mut v);
        v
    }

    fn node_index(v: &Value, id: &str) -> usize {
        v["nodes"].as_array().unwrap().iter().position(|n| n["id"] == id).unwrap()
    }

    fn edge_index(v: &Value, from: &str, to: &str) -> usize {
        v["edges"].as_array().unwrap().iter().position(|e| e["from"] == from && e["to"] == to).unwrap()
    }

    #[test]
    fn starters_validate_cleanly_in_their_family() {
        for f in Family::ALL {
            let v = validate(&starter(f), registry());
            assert!(v.problems.is_empty(), "{f:?}: {:?}", v.problems);
            assert_eq!(v.family, Some(f));
        }
    }

    #[test]
    fn diamond_of_test_nodes_plans_with_dependency_counts() {
        let g = graph(json!({
            "nodes": [{"id":"a","type":"util.noop"},{"id":"b","type":"util.sleep","params":{"ms":1}},
                      {"id":"c","type":"util.noop","max_attempts":5,"timeout":"2s"},{"id":"d","type":"util.noop"}],
            "edges": [{"from":"a","to":"b"},{"from":"a","to":"c"},{"from":"b","to":"d"},{"from":"c","to":"d"}]
        }));
        let plan = plan(&g, registry(), DEFAULTS).unwrap();
        let deps: Vec<u32> = plan.nodes.iter().map(|n| n.deps).collect();
        assert_eq!(deps, vec![0, 1, 1, 2]);
        assert_eq!(plan.ready().collect::<Vec<_>>(), vec![0]);
        assert_eq!(plan.nodes[0].successors, vec![1, 2]);
        assert_eq!(plan.nodes[2].max_attempts, 5);
        assert_eq!(plan.nodes[2].timeout, Duration::from_secs(2));
        assert_eq!(plan.nodes[3].max_attempts, 3);
        assert_eq!(plan.graph.edges[0].from_port.as_deref(), Some("done"));
    }

    #[test]
    fn old_type_names_still_plan_with_a_warning_and_are_normalised() {
        let g = graph(json!({"nodes":[{"id":"a","type":"noop"}]}));
        let plan = plan(&g, registry(), DEFAULTS).unwrap();
        assert_eq!(plan.graph.nodes[0].node_type, "util.noop");
        assert_eq!(plan.nodes[0].module_key, "noop");
        assert_eq!(plan.warnings[0].code, ProblemCode::RenamedNodeType);
    }

    #[test]
    fn defaults_are_applied_and_ports_named_in_the_normalised_graph() {
        let plan = plan(&starter(Family::OrderLine), registry(), DEFAULTS).unwrap();
        let still = plan.graph.nodes.iter().find(|n| n.node_type == "render.still").unwrap();
        assert_eq!(still.params["samples"], 64);
        assert_eq!(still.params["camera"]["auto_frame"], true);
        assert!(plan.graph.edges.iter().all(|e| e.from_port.is_some() && e.to_port.is_some()));
        let t = plan.nodes.iter().find(|n| n.module_key == "blender_still").unwrap();
        assert_eq!(t.timeout, Duration::from_secs(3600), "the node type's default timeout");
    }

    #[test]
    fn unknown_node_type_suggests_the_closest() {
        let v = check(order_line(|v| v["nodes"][0]["type"] = json!("cad.reslove")));
        assert_eq!(codes(&v), vec![ProblemCode::UnknownNodeType]);
        assert!(v.problems[0].message.contains("did you mean `cad.resolve`?"), "{}", v.problems[0].message);
    }

    #[test]
    fn family_mismatch_against_the_declared_family() {
        let v = check(json!({"family":"cad_file","nodes":[
            {"id":"r","type":"cad.resolve"},{"id":"g","type":"cad.export_glb"},{"id":"m","type":"material.assign"},
            {"id":"p","type":"output.publish"}],
            "edges":[{"from":"r","to":"g"},{"from":"g","from_port":"parts","to":"m"},{"from":"m","to":"p"}]}));
        assert_eq!(codes(&v), vec![ProblemCode::FamilyMismatch]);
        assert_eq!(v.problems[0].node_id.as_deref(), Some("m"));
    }

    #[test]
    fn family_mismatch_when_inferred_families_do_not_meet() {
        let v = check(json!({"nodes":[
            {"id":"r","type":"cad.resolve"},{"id":"g","type":"cad.export_glb"},{"id":"meta","type":"cad.extract_metadata"},
            {"id":"m","type":"material.assign"},{"id":"p1","type":"output.publish"},{"id":"p2","type":"output.publish"}],
            "edges":[{"from":"r","to":"g"},{"from":"g","from_port":"glb","to":"meta"},{"from":"g","from_port":"parts","to":"m"},
                     {"from":"meta","from_port":"metadata","to":"p1"},{"from":"m","to":"p2"}]}));
        assert_eq!(codes(&v), vec![ProblemCode::FamilyMismatch]);
        assert!(
            v.problems[0].message.contains(r#"cad_file-only nodes ["meta"] and order_line-only nodes ["m"]"#),
            "{}",
            v.problems[0].message
        );
        let util = check(json!({"family":"cad_file","nodes":[{"id":"a","type":"util.noop"}]}));
        assert!(util.problems.is_empty(), "util nodes belong to both families");
    }

    #[test]
    fn duplicate_node_id() {
        let v = check(order_line(|v| {
            let i = node_index(v, "publish");
            v["nodes"][i]["id"] = json!("still");
        }));
        assert!(codes(&v).contains(&ProblemCode::DuplicateNodeId), "{:?}", v.problems);
    }

    #[test]
    fn dangling_edge() {
        let v = check(order_line(|v| v["edges"].as_array_mut().unwrap().push(json!({"from":"still","to":"nowhere"}))));
        assert_eq!(codes(&v), vec![ProblemCode::DanglingEdge]);
        assert!(v.problems[0].message.contains("`nowhere`"));
    }

    #[test]
    fn unknown_port_lists_the_real_ones() {
        let v = check(order_line(|v| {
            let e = edge_index(v, "export", "still");
            v["edges"][e]["from_port"] = json!("mesh");
        }));
        assert!(codes(&v).contains(&ProblemCode::UnknownPort), "{:?}", v.problems);
        let p = v.problems.iter().find(|p| p.code == ProblemCode::UnknownPort).unwrap();
        assert!(p.message.contains("no output `mesh`") && p.message.contains("`glb` (glb)"), "{}", p.message);
    }

    #[test]
    fn ambiguous_port_asks_for_names() {
        let v =
            check(json!({"nodes":[{"id":"r","type":"cad.resolve"},{"id":"g","type":"cad.export_glb"},{"id":"p","type":"output.publish"}],
                             "edges":[{"from":"r","to":"g"},{"from":"g","to":"p"}]}));
        assert_eq!(codes(&v), vec![ProblemCode::AmbiguousPort]);
        assert!(v.problems[0].message.contains("glb→artifact, parts→artifact"), "{}", v.problems[0].message);
    }

    #[test]
    fn port_kind_mismatch() {
        let v = check(order_line(|v| {
            let e = edge_index(v, "export", "still");
            v["edges"][e]["from_port"] = json!("parts");
            v["edges"][e]["to_port"] = json!("glb");
        }));
        assert!(codes(&v).contains(&ProblemCode::PortKindMismatch), "{:?}", v.problems);
    }

    #[test]
    fn missing_required_input_names_a_feeder() {
        let v = check(order_line(|v| {
            let e = edge_index(v, "export", "still");
            v["edges"].as_array_mut().unwrap().remove(e);
        }));
        assert_eq!(codes(&v), vec![ProblemCode::MissingRequiredInput]);
        assert!(v.problems[0].message.contains("needs input `glb`") && v.problems[0].message.contains("cad.export_glb"));
    }

    #[test]
    fn input_fed_twice() {
        let v = check(order_line(|v| {
            v["nodes"].as_array_mut().unwrap().push(json!({"id":"export2","type":"cad.export_glb"}));
            v["edges"].as_array_mut().unwrap().push(json!({"from":"resolve","to":"export2"}));
            v["edges"].as_array_mut().unwrap().push(json!({"from":"export2","from_port":"glb","to":"still"}));
        }));
        assert!(codes(&v).contains(&ProblemCode::InputFedTwice), "{:?}", v.problems);
    }

    #[test]
    fn cycle_names_only_nodes_on_it() {
        let g = graph(json!({
            "nodes": [{"id":"s","type":"util.noop"},{"id":"x","type":"util.noop"},{"id":"y","type":"util.noop"},{"id":"t","type":"util.noop"}],
            "edges": [{"from":"s","to":"x"},{"from":"x","to":"y"},{"from":"y","to":"x"},{"from":"y","to":"t"}]
        }));
        let problems = plan(&g, registry(), DEFAULTS).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, ProblemCode::Cycle);
        assert!(problems[0].message.contains("nodes x, y;"), "{}", problems[0].message);
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let v = check(json!({"nodes":[{"id":"a","type":"util.noop"}],"edges":[{"from":"a","to":"a"}]}));
        assert_eq!(codes(&v), vec![ProblemCode::Cycle]);
    }

    #[test]
    fn no_sink() {
        let v = check(order_line(|v| {
            let i = node_index(v, "publish");
            v["nodes"].as_array_mut().unwrap().remove(i);
            let e = edge_index(v, "still", "publish");
            v["edges"].as_array_mut().unwrap().remove(e);
        }));
        assert_eq!(codes(&v), vec![ProblemCode::NoSink]);
    }

    #[test]
    fn invalid_param_carries_the_json_pointer() {
        let v = check(order_line(|v| {
            let i = node_index(v, "still");
            v["nodes"][i]["params"] = json!({"camera": {"elevation_deg": 120}});
        }));
        assert_eq!(codes(&v), vec![ProblemCode::InvalidParam]);
        assert_eq!(v.problems[0].param_path.as_deref(), Some("/camera/elevation_deg"));
        assert!(v.problems[0].message.contains("camera.elevation_deg"), "{}", v.problems[0].message);
    }

    #[test]
    fn unreachable_node_is_a_warning() {
        let v = check(order_line(|v| {
            v["nodes"].as_array_mut().unwrap().push(json!({"id":"extra","type":"export.blend"}));
            v["edges"].as_array_mut().unwrap().push(json!({"from":"export","from_port":"glb","to":"extra"}));
        }));
        assert_eq!(codes(&v), vec![ProblemCode::UnreachableNode]);
        assert!(v.is_valid());
        assert_eq!(v.problems[0].severity, Severity::Warning);
    }

    #[test]
    fn timeouts_above_the_fleet_limit_are_refused() {
        let g = graph(json!({"nodes":[{"id":"a","type":"util.noop","timeout":"3h"}]}));
        let problems = plan(&g, registry(), DEFAULTS).unwrap_err();
        assert_eq!(problems[0].code, ProblemCode::InvalidField);
        assert!(problems[0].message.contains("above this fleet's limit of 2h"), "{}", problems[0].message);
    }

    #[test]
    fn too_large() {
        let nodes: Vec<Value> = (0..=MAX_NODES).map(|i| json!({"id": format!("n{i}"), "type": "util.noop"})).collect();
        let v = check(json!({ "nodes": nodes }));
        assert_eq!(codes(&v), vec![ProblemCode::TooLarge]);
        assert!(v.problems[0].message.contains("split the work"));
    }

    #[test]
    fn empty_node_id() {
        assert_eq!(codes(&check(json!({"nodes":[{"id":" ","type":"util.noop"}]}))), vec![ProblemCode::EmptyNodeId]);
    }

    #[test]
    fn duplicate_edge() {
        let v = check(json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"}],
                             "edges":[{"from":"a","to":"b"},{"from":"a","from_port":"done","to":"b","to_port":"after"}]}));
        assert_eq!(codes(&v), vec![ProblemCode::DuplicateEdge]);
        assert_eq!(v.problems[0].edge, Some(1));
    }

    #[test]
    fn invalid_field_for_attempts_and_timeouts() {
        let v = check(json!({"nodes":[{"id":"a","type":"util.noop","max_attempts":0},{"id":"b","type":"util.noop","timeout":"0s"}]}));
        assert_eq!(codes(&v), vec![ProblemCode::InvalidField, ProblemCode::InvalidField]);
    }

    #[test]
    fn invalid_subject_names_the_cad_file() {
        for bad in [json!({"cad_file": "/etc/passwd"}), json!({"cad_file": "../x.stp"}), json!({"cad_file": ""}), json!({"cad_file": 7})] {
            let p = check_subject(&bad);
            assert_eq!(p.len(), 1, "{bad}");
            assert_eq!((p[0].code, p[0].param_path.as_deref()), (ProblemCode::InvalidSubject, Some("/subject/cad_file")), "{bad}");
        }
        for good in [json!({"cad_file": "as1/as1-oc-214.stp", "product": "as1"}), json!({"product": "as1"}), json!("anything")] {
            assert!(check_subject(&good).is_empty(), "{good}");
        }
    }

    #[test]
    fn positions_pass_through_and_must_be_on_a_canvas() {
        let v = check(order_line(|v| v["nodes"][0]["position"] = json!({"x": -120.5, "y": 40})));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.normalized.nodes[0].position, Some(Position { x: -120.5, y: 40.0 }));
        assert!(serde_json::to_value(&v.normalized).unwrap()["nodes"][1].get("position").is_none(), "absent stays absent");
        let mut g = starter(Family::OrderLine);
        g.nodes[1].position = Some(Position { x: f64::NAN, y: 0.0 });
        g.nodes[2].position = Some(Position { x: 0.0, y: 2e7 });
        let v = validate(&g, registry());
        assert_eq!(codes(&v), vec![ProblemCode::InvalidField, ProblemCode::InvalidField]);
        assert_eq!(v.problems[0].node_id.as_deref(), Some("export"));
        assert!(v.problems[1].message.contains("y = 20000000") && v.problems[1].message.contains("±1e7"), "{}", v.problems[1].message);
        let r: Result<GraphSpec, _> =
            serde_json::from_value(json!({"nodes":[{"id":"a","type":"util.noop","position":{"x":1,"y":2,"z":3}}]}));
        assert!(r.unwrap_err().to_string().contains('z'));
    }

    /// The order-line starter with a turntable, its encode, a second export and an unfed publish.
    fn drawn() -> GraphSpec {
        graph(order_line(|v| {
            let nodes = v["nodes"].as_array_mut().unwrap();
            nodes.push(json!({"id":"turntable","type":"render.turntable"}));
            nodes.push(json!({"id":"encode","type":"video.encode"}));
            nodes.push(json!({"id":"export2","type":"cad.export_glb"}));
            nodes.push(json!({"id":"publish2","type":"output.publish"}));
            let edges = v["edges"].as_array_mut().unwrap();
            edges.push(json!({"from":"export","from_port":"glb","to":"turntable"}));
            edges.push(json!({"from":"turntable","to":"encode"}));
            edges.push(json!({"from":"resolve","to":"export2"}));
        }))
    }

    fn options(g: &GraphSpec, end: DragEnd<'_>) -> ConnectionOptions {
        connection_options(g, registry(), end).unwrap()
    }

    fn port(node: &str, port: &str) -> PortRef {
        PortRef { node: node.into(), port: port.into() }
    }

    fn target<'a>(o: &'a ConnectionOptions, node: &str, port: &str) -> &'a PortOption {
        o.targets.iter().find(|t| t.node == node && t.port == port).unwrap_or_else(|| panic!("no target {node}.{port} in {o:?}"))
    }

    #[test]
    fn an_output_lists_every_input_with_why_it_does_not_fit() {
        let g = drawn();
        let o = options(&g, DragEnd::From(&port("still", "image")));
        let fitting: Vec<(&str, &str)> = o.targets.iter().filter(|t| t.fits).map(|t| (t.node.as_str(), t.port.as_str())).collect();
        assert_eq!(fitting, [("publish2", "artifact")]);
        let inputs: usize = g.nodes.iter().map(|n| registry().get(&n.node_type).unwrap().inputs.len()).sum();
        assert_eq!(o.targets.len(), inputs, "every input of the graph");
        assert_eq!(target(&o, "encode", "frames").reason.as_deref(), Some("`still.image` gives image_png; `encode.frames` takes frames"));
        assert_eq!(target(&o, "publish", "artifact").reason.as_deref(), Some("`still.image` → `publish.artifact` is already connected"));
        assert!(target(&o, "still", "glb").reason.as_deref().unwrap().contains("cannot feed itself"));
        assert!(target(&o, "publish2", "artifact").reason.is_none());
        let types: Vec<(&str, &str)> = o.node_types.iter().map(|t| (t.type_key.as_str(), t.port.as_str())).collect();
        assert_eq!(types, [("output.publish", "artifact")]);
    }

    #[test]
    fn a_bound_input_names_its_feeder() {
        let o = options(&drawn(), DragEnd::From(&port("export2", "glb")));
        assert_eq!(
            target(&o, "still", "glb").reason.as_deref(),
            Some("`still.glb` is already fed by `export.glb`; an input takes one edge: remove that one first")
        );
        assert!(target(&o, "publish2", "artifact").fits);
        let types: Vec<&str> = o.node_types.iter().map(|t| t.type_key.as_str()).collect();
        assert_eq!(types, ["render.still", "render.turntable", "export.blend", "output.publish"], "order_line types taking a glb");
    }

    #[test]
    fn an_input_lists_every_output_that_could_feed_it() {
        let mut g = drawn();
        g.edges.retain(|e| e.to != "encode");
        let o = options(&g, DragEnd::To(&port("encode", "frames")));
        let fitting: Vec<(&str, &str)> = o.targets.iter().filter(|t| t.fits).map(|t| (t.node.as_str(), t.port.as_str())).collect();
        assert_eq!(fitting, [("turntable", "frames")]);
        assert_eq!(target(&o, "still", "image").reason.as_deref(), Some("`still.image` gives image_png; `encode.frames` takes frames"));
        assert_eq!(o.node_types, [TypeOption { type_key: "render.turntable".into(), port: "frames".into() }]);
    }

    #[test]
    fn an_edge_that_closes_a_cycle_does_not_fit() {
        let g = graph(
            json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"},{"id":"c","type":"util.noop"},{"id":"d","type":"util.noop"}],
                             "edges":[{"from":"a","to":"b"},{"from":"b","to":"c"}]}),
        );
        let o = options(&g, DragEnd::From(&port("c", "done")));
        assert_eq!(target(&o, "a", "after").reason.as_deref(), Some("that edge would make a cycle: `c` already runs after `a`"));
        assert!(target(&o, "d", "after").fits);
        let o = options(&g, DragEnd::To(&port("a", "after")));
        assert_eq!(target(&o, "b", "done").reason.as_deref(), Some("that edge would make a cycle: `b` already runs after `a`"));
        assert!(target(&o, "d", "done").fits, "a `many` input takes another edge");
        assert!(o.node_types.iter().any(|t| t.type_key == "render.still"), "an `any` input takes every kind");
        assert!(!o.node_types.iter().any(|t| t.type_key.starts_with("util.")), "test nodes are not offered");
    }

    #[test]
    fn nodes_outside_the_family_do_not_fit_and_are_not_offered() {
        let mut g = drawn();
        g.nodes.push(NodeSpec { position: None, ..serde_json::from_value(json!({"id":"meta","type":"cad.extract_metadata"})).unwrap() });
        let o = options(&g, DragEnd::From(&port("export", "glb")));
        let why = target(&o, "meta", "glb").reason.clone().unwrap();
        assert!(why.contains("belongs to cad_file, not to this `order_line` graph"), "{why}");
        assert!(!o.node_types.iter().any(|t| t.type_key == "cad.extract_metadata"));
        let mut cad = starter(Family::CadFile);
        cad.family = None;
        let o = options(&cad, DragEnd::From(&port("export", "glb")));
        assert!(o.node_types.iter().any(|t| t.type_key == "cad.extract_metadata"), "the inferred family: cad_file");
        assert!(!o.node_types.iter().any(|t| t.type_key == "render.turntable"));
    }

    #[test]
    fn a_query_naming_nothing_is_refused_naming_it() {
        let g = drawn();
        let err = |forwards: bool, node: &str, name: &str| {
            let at = port(node, name);
            connection_options(&g, registry(), if forwards { DragEnd::From(&at) } else { DragEnd::To(&at) }).unwrap_err()
        };
        assert_eq!(err(true, "ghost", "x"), ConnectionError::UnknownNode("ghost".into()));
        let e = err(true, "still", "glb");
        assert_eq!(e.code(), "unknown_port");
        assert_eq!(e.to_string(), "node `still` (render.still) has no output `glb`; its outputs: `image` (image_png)");
        assert!(err(false, "still", "image").to_string().contains("its inputs: `glb` (glb), `materials` (material_map)"));
        let mut bad = g.clone();
        bad.nodes[0].node_type = "cad.nope".into();
        let e = connection_options(&bad, registry(), DragEnd::From(&port("resolve", "step"))).unwrap_err();
        assert_eq!(e.code(), "unknown_node_type");
        let q: ConnectionQuery = serde_json::from_value(json!({"graph": {"nodes": [{"id":"a","type":"util.noop"}]}})).unwrap();
        assert_eq!(q.end().unwrap_err(), ConnectionError::OneEnd);
    }

    /// The editor and validation cannot disagree: every edge `connection_options` says fits
    /// validates with no new error, and every one it refuses adds one (or, refused for the
    /// family, sits on a node validation already flags).
    #[test]
    fn what_fits_is_what_validates() {
        let mut mixed = drawn();
        mixed.nodes.push(serde_json::from_value(json!({"id":"meta","type":"cad.extract_metadata"})).unwrap());
        let tests = graph(json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"},{"id":"c","type":"util.noop"}],
                                 "edges":[{"from":"a","to":"b"},{"from":"b","to":"c"}]}));
        let mut checked = 0;
        for g in [drawn(), mixed, starter(Family::CadFile), tests] {
            let before = validate(&g, registry());
            for node in &g.nodes {
                let t = registry().get(&node.node_type).unwrap();
                let ends = t.outputs.iter().map(|p| (true, p)).chain(t.inputs.iter().map(|p| (false, p)));
                for (forwards, p) in ends {
                    let at = port(&node.id, p.name);
                    let o = options(&g, if forwards { DragEnd::From(&at) } else { DragEnd::To(&at) });
                    for option in &o.targets {
                        let (from, from_port, to, to_port) = if forwards {
                            (&node.id, p.name.to_string(), &option.node, option.port.clone())
                        } else {
                            (&option.node, option.port.clone(), &node.id, p.name.to_string())
                        };
                        let mut with = g.clone();
                        with.edges.push(EdgeSpec {
                            from: from.clone(),
                            from_port: Some(from_port),
                            to: to.clone(),
                            to_port: Some(to_port),
                        });
                        let after = validate(&with, registry());
                        let new_error = after.errors().any(|e| !before.problems.contains(e));
                        let family = option.reason.as_deref().is_some_and(|r| r.contains("not to this"));
                        assert_eq!(option.fits, !new_error && !family, "{from} → {to}: {option:?}; {:?}", after.problems);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn empty_graph_is_refused() {
        assert_eq!(codes(&check(json!({"nodes":[]}))), vec![ProblemCode::EmptyGraph]);
    }

    #[test]
    fn unknown_fields_are_refused_by_the_parser() {
        let r: Result<GraphSpec, _> = serde_json::from_value(json!({"nodes":[{"id":"a","type":"util.noop","parms":{}}]}));
        assert!(r.unwrap_err().to_string().contains("parms"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let v = check(json!({
            "family": "cad_file",
            "nodes": [{"id":"r","type":"cad.resolve"},{"id":"g","type":"cad.export_glb","params":{"tol_linear":-1}},
                      {"id":"r","type":"cad.resolv"},{"id":"m","type":"material.assign"},{"id":"s","type":"render.still"},
                      {"id":"x","type":"util.noop"},{"id":"y","type":"util.noop"},{"id":"meta","type":"cad.extract_metadata"}],
            "edges": [{"from":"r","to":"g"},{"from":"g","from_port":"mesh","to":"m"},{"from":"x","to":"y"},{"from":"y","to":"x"},
                      {"from":"g","to":"ghost"},{"from":"g","from_port":"parts","to":"s","to_port":"glb"}]
        }));
        let got = codes(&v);
        for want in [
            ProblemCode::DuplicateNodeId,
            ProblemCode::UnknownNodeType,
            ProblemCode::InvalidParam,
            ProblemCode::FamilyMismatch,
            ProblemCode::UnknownPort,
            ProblemCode::DanglingEdge,
            ProblemCode::PortKindMismatch,
            ProblemCode::MissingRequiredInput,
            ProblemCode::Cycle,
            ProblemCode::NoSink,
        ] {
            assert!(got.contains(&want), "missing {want:?} in {got:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A random valid graph of `family`: a chain of real stages from the starter's
        /// source, some extra branches, each ending in a publish.
        fn valid_graph(family: Family, branches: &[u8]) -> GraphSpec {
            let mut g = starter(family);
            for (b, kind) in branches.iter().enumerate() {
                let (ty, port) = match (family, kind % 3) {
                    (Family::OrderLine, 0) => ("render.turntable", "frames"),
                    (Family::OrderLine, 1) => ("export.blend", "blend"),
                    (Family::CadFile, 0) => ("cad.extract_metadata", "metadata"),
                    _ => ("render.still", "image"),
                };
                let (from, from_port) = ("export", "glb");
                let id = format!("b{b}");
                let publish = format!("p{b}");
                g.nodes.push(NodeSpec {
                    id: id.clone(),
                    node_type: ty.into(),
                    params: json!({}),
                    max_attempts: None,
                    timeout: None,
                    position: None,
                });
                g.nodes.push(NodeSpec {
                    id: publish.clone(),
                    node_type: "output.publish".into(),
                    params: json!({"name": format!("out{b}")}),
                    max_attempts: None,
                    timeout: None,
                    position: None,
                });
                g.edges.push(EdgeSpec { from: from.into(), from_port: Some(from_port.into()), to: id.clone(), to_port: None });
                g.edges.push(EdgeSpec { from: id, from_port: Some(port.into()), to: publish, to_port: None });
            }
            g
        }

        fn family() -> impl Strategy<Value = Family> {
            prop_oneof![Just(Family::CadFile), Just(Family::OrderLine)]
        }

        proptest! {
            #[test]
            fn random_valid_graphs_validate(f in family(), branches in prop::collection::vec(any::<u8>(), 0..6)) {
                let v = validate(&valid_graph(f, &branches), registry());
                prop_assert!(v.problems.is_empty(), "{:?}", v.problems);
            }

            #[test]
            fn one_corruption_is_reported_with_its_code(
                f in family(),
                branches in prop::collection::vec(any::<u8>(), 0..6),
                which in 0u8..4,
                pick in any::<prop::sample::Index>(),
            ) {
                let mut g = valid_graph(f, &branches);
                let e = pick.index(g.edges.len());
                let want = match which {
                    0 => {
                        // Drop an edge: its target loses a required input, or (an optional
                        // input) its source then feeds no sink.
                        let dropped = g.edges.remove(e);
                        let to = g.nodes.iter().find(|n| n.id == dropped.to).unwrap();
                        let port = dropped.to_port.clone().unwrap_or_else(|| {
                            validate(&valid_graph(f, &branches), registry()).normalized.edges[e].to_port.clone().unwrap()
                        });
                        if registry().get(&to.node_type).unwrap().input(&port).unwrap().required {
                            ProblemCode::MissingRequiredInput
                        } else {
                            ProblemCode::UnreachableNode
                        }
                    }
                    1 => {
                        // Retype a port to a name the node does not have.
                        g.edges[e].to_port = Some("bogus".into());
                        ProblemCode::UnknownPort
                    }
                    2 => {
                        // A back edge: reverse a random edge next to it.
                        let back = EdgeSpec { from: g.edges[e].to.clone(), from_port: None, to: g.edges[e].from.clone(), to_port: None };
                        g.edges.push(back);
                        ProblemCode::Cycle
                    }
                    _ => {
                        // Break a param of a random node.
                        let i = pick.index(g.nodes.len());
                        g.nodes[i].params = json!({"no_such_param": 1});
                        ProblemCode::InvalidParam
                    }
                };
                let v = validate(&g, registry());
                let codes: Vec<ProblemCode> = v.problems.iter().map(|p| p.code).collect();
                prop_assert!(codes.contains(&want), "wanted {:?}, got {:?}", want, v.problems);
            }
        }
    }
}
