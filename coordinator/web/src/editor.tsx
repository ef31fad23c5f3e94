// The workflow editor (/console/workflows/{id}/edit and /console/workflows/new). Everything
// it knows about node types, ports, params and the rules of connection comes from the
// coordinator's API (the registry, validation, connection options); it holds no list of
// node types of its own.
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type ConnectionLineComponentProps,
  type EdgeChange,
  type FinalConnectionState,
  type NodeChange,
  type OnConnectStartParams,
  getBezierPath,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import "./editor.css";
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { ApiError, get, post, put } from "./api";
import { History, type Snapshot } from "./history";
import { autoLayout } from "./layout";
import { freshId, toFlow, toFlowEdge, toGraph, typesFor, type FlowEdge, type FlowNode, type Spec } from "./model";
import { FlowNodeView, ViewContext, type NodeView } from "./node";
import { DRAG_MIME, PalettePanel } from "./palette";
import { SchemaForm } from "./schemaform";
import { SearchPopup, type Choice } from "./search";
import type {
  ConnectionOptions,
  Family,
  GraphSpec,
  NodeType,
  Palette,
  PortRef,
  Problem,
  ValidationView,
  WorkflowVersions,
  WorkflowView,
} from "./types";

const root = document.getElementById("editor")!;
const boot = {
  id: root.dataset.workflow || "",
  version: root.dataset.version ? Number(root.dataset.version) : undefined,
  family: (root.dataset.family || "order_line") as Family,
  mayAdmin: root.dataset.admin === "true",
  maySubmit: root.dataset.submit === "true",
  csrf: root.dataset.csrf ?? "",
};
const nodeTypes = { rf: FlowNodeView };

// A script error is shown to the person (and kept on the root for the browser test), not
// left as a blank canvas.
const crashed = (what: string) => {
  root.dataset.crash = what;
  let bar = document.getElementById("editor-crash");
  if (!bar) {
    bar = document.createElement("p");
    bar.id = "editor-crash";
    bar.className = "banner bad";
    document.body.prepend(bar);
  }
  bar.textContent = `The editor hit an error (reload the page; unsaved changes are lost): ${what}`;
};
window.addEventListener("error", (e) => crashed(e.message));
window.addEventListener("unhandledrejection", (e) => crashed(String(e.reason instanceof Error ? e.reason.message : e.reason)));
const VALIDATE_DEBOUNCE_MS = 120;

type OutputType = { key: string; workflow_id?: string | null; invocation_overrides?: Record<string, unknown> };
type Drag = { ref: PortRef; from: boolean; options: Promise<ConnectionOptions>; loaded?: ConnectionOptions };
type Popup = { at: { x: number; y: number }; flow: { x: number; y: number }; title: string; choices: Choice[]; pick: (c: Choice) => void };
type Menu = { at: { x: number; y: number }; node?: string; edge?: string };
type Dialog =
  | { kind: "repair"; report: RepairReport }
  | { kind: "preflight"; report?: PreflightReport; error?: string }
  | { kind: "dispatch" }
  | { kind: "confirm-layout" };
type RepairReport = { changed: boolean; changes: string[]; problems: Problem[]; version: number; from_version: number; mixed_family: boolean };
type PreflightReport = {
  ok: boolean;
  problems: Problem[];
  nodes: { id: string; module: string }[];
  modules: Record<string, { workers: string[] }>;
};

const DragContext = createContext<{ current: Drag | null }>({ current: null });

function reasonFor(drag: Drag | null, node: string | undefined | null, port: string | undefined | null): string | undefined {
  const o = drag?.loaded?.targets.find((t) => t.node === node && t.port === port);
  if (!o) return drag?.loaded ? "not a port this link can reach" : undefined;
  return o.fits ? undefined : (o.reason ?? "does not fit");
}

/// The link being dragged, with the server's reason beside the pointer when it is over a
/// port it cannot join.
function ConnectionLine(p: ConnectionLineComponentProps) {
  const drag = useContext(DragContext);
  const [path] = getBezierPath({
    sourceX: p.fromX,
    sourceY: p.fromY,
    sourcePosition: p.fromPosition,
    targetX: p.toX,
    targetY: p.toY,
    targetPosition: p.toPosition,
  });
  const h = p.toHandle;
  const why = h ? reasonFor(drag.current, h.nodeId, h.id) : undefined;
  return (
    <g>
      <path d={path} fill="none" className={why ? "connection-line bad" : "connection-line"} />
      {why && (
        <text id="connect-why" x={p.toX + 12} y={p.toY - 10} className="connect-why">
          {why}
        </text>
      )}
    </g>
  );
}

function Editor() {
  const flow = useReactFlow<FlowNode, FlowEdge>();
  const [palette, setPalette] = useState<Palette | null>(null);
  const [loadError, setLoadError] = useState("");
  const [nodes, setNodes] = useState<FlowNode[]>([]);
  const [edges, setEdges] = useState<FlowEdge[]>([]);
  const [family, setFamily] = useState<Family>(boot.family);
  const [name, setName] = useState("");
  const [workflow, setWorkflow] = useState<WorkflowView | null>(null);
  const [versions, setVersions] = useState<WorkflowVersions | null>(null);
  const [outputTypes, setOutputTypes] = useState<OutputType[]>([]);
  const [message, setMessage] = useState("");
  const [problems, setProblems] = useState<Problem[]>([]);
  const [problemsTotal, setProblemsTotal] = useState(0);
  const [validating, setValidating] = useState(true);
  const [popup, setPopup] = useState<Popup | null>(null);
  const [menu, setMenu] = useState<Menu | null>(null);
  const [dialog, setDialog] = useState<Dialog | null>(null);
  const [toast, setToast] = useState("");
  const [saving, setSaving] = useState(false);
  const [savedGraph, setSavedGraph] = useState("");
  const [preflight, setPreflight] = useState<Map<string, string>>(new Map());
  const [, setTick] = useState(0);
  const history = useRef(new History());
  const drag = useRef<Drag | null>(null);
  const clipboard = useRef<Spec | null>(null);
  const pointer = useRef({ x: 0, y: 0 });
  const latest = useRef<Snapshot>({ nodes, edges });
  latest.current = { nodes, edges };
  const coalesce = useRef<{ key: string; at: number } | null>(null);
  const validateSeq = useRef(0);

  const types = useMemo(() => new Map((palette?.node_types ?? []).map((t) => [t.type_key, t])), [palette]);
  const familyTypes = useMemo(() => (palette ? typesFor(palette, family) : []), [palette, family]);
  const graph = useMemo(() => toGraph(family, nodes, edges), [family, nodes, edges]);
  // What validation depends on: everything but where nodes stand.
  const graphKey = useMemo(() => JSON.stringify({ ...graph, nodes: graph.nodes.map(({ position, ...n }) => n) }), [graph]);
  const errors = problems.filter((p) => p.severity !== "warning");
  const errorCount = Math.max(errors.length, problemsTotal > problems.length ? problemsTotal : 0);
  const dirty = JSON.stringify(graph) !== savedGraph || (workflow !== null && name !== workflow.name);

  // A change to the graph, undoable. `key` coalesces a run of edits of one field.
  const commit = useCallback((change: (s: Snapshot) => Snapshot, key?: string) => {
    const now = Date.now();
    const c = coalesce.current;
    if (!(key && c && c.key === key && now - c.at < 1500)) history.current.push(latest.current);
    coalesce.current = key ? { key, at: now } : null;
    const next = change(latest.current);
    latest.current = next;
    setNodes(next.nodes);
    setEdges(next.edges);
  }, []);

  const show = useCallback((s: Snapshot) => {
    latest.current = s;
    setNodes(s.nodes);
    setEdges(s.edges);
  }, []);

  const say = useCallback((text: string) => {
    setToast(text);
    window.setTimeout(() => setToast((t) => (t === text ? "" : t)), 6000);
  }, []);

  const loadGraph = useCallback(
    (g: GraphSpec, fit = true) => {
      let { nodes: n, edges: e } = toFlow(g);
      if (g.nodes.some((x) => !x.position)) n = autoLayout(n, e);
      show({ nodes: n, edges: e });
      if (fit) window.setTimeout(() => flow.fitView({ padding: 0.15 }), 50);
      return toGraph(g.family ?? family, n, e);
    },
    [flow, show, family],
  );

  // Load: the palette, then the workflow (or the family's starter), its versions, output types.
  useEffect(() => {
    const t0 = performance.now();
    (async () => {
      try {
        const p = await get<Palette>("/v1/nodes");
        setPalette(p);
        if (boot.id) {
          const q = boot.version ? `?version=${boot.version}` : "";
          const w = await get<WorkflowView>(`/v1/workflows/${boot.id}${q}`);
          setWorkflow(w);
          setName(w.name);
          setFamily(w.family as Family);
          const shown = loadGraph({ ...(w.graph as GraphSpec), family: w.family as Family });
          setSavedGraph(JSON.stringify(shown));
          setVersions(await get<WorkflowVersions>(`/v1/workflows/${boot.id}/versions`));
        } else {
          const s = await get<GraphSpec>(`/v1/workflows/starters/${boot.family}`);
          setName(`new ${boot.family} workflow`);
          loadGraph(s);
        }
        const ots = await get<{ items: OutputType[] }>("/v1/output-types");
        setOutputTypes(ots.items ?? []);
        root.dataset.loadMs = String(Math.round(performance.now() - t0));
      } catch (e) {
        setLoadError(e instanceof Error ? e.message : String(e));
      }
    })();
    // Once per page: the workflow's own family is set by what it loads.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  // Live validation: every edit goes to the server's validation, newest answer wins.
  useEffect(() => {
    if (!palette) return;
    const seq = ++validateSeq.current;
    setValidating(true);
    root.dataset.state = "validating";
    const timer = window.setTimeout(async () => {
      const t0 = performance.now();
      try {
        const v = await post<ValidationView>("/v1/workflows/validate", JSON.parse(graphKey));
        if (seq !== validateSeq.current) return;
        setProblems(v.problems);
        setProblemsTotal(v.problems_total ?? v.problems.length);
        root.dataset.validateMs = String(Math.round(performance.now() - t0));
      } catch (e) {
        if (seq !== validateSeq.current) return;
        const body = e instanceof ApiError ? e.body : {};
        setProblems(body.problems ?? [{ code: "preflight", severity: "error", message: e instanceof Error ? e.message : String(e) } as Problem]);
        setProblemsTotal(body.problems_total ?? body.problems?.length ?? 1);
      }
      setValidating(false);
      root.dataset.state = "ready";
    }, VALIDATE_DEBOUNCE_MS);
    return () => window.clearTimeout(timer);
  }, [graphKey, palette]);

  useEffect(() => {
    root.dataset.errors = String(errorCount);
  }, [errorCount]);
  // What the model holds, for scripts and tests: React Flow draws an edge only once both of
  // its nodes have been measured, so the page can lag the model by a frame or two.
  useEffect(() => {
    root.dataset.nodeCount = String(nodes.length);
    root.dataset.edgeCount = String(edges.length);
  }, [nodes.length, edges.length]);

  const view: NodeView = useMemo(() => {
    const byNode = new Map<string, Problem[]>();
    for (const p of problems) {
      const id = p.node_id ?? (p.edge !== undefined && p.edge !== null ? undefined : undefined);
      if (id) byNode.set(id, [...(byNode.get(id) ?? []), p]);
    }
    const usedPorts = new Map<string, { inputs: Set<string>; outputs: Set<string> }>();
    const used = (id: string) => {
      const u = usedPorts.get(id) ?? { inputs: new Set<string>(), outputs: new Set<string>() };
      usedPorts.set(id, u);
      return u;
    };
    for (const e of edges) {
      if (e.sourceHandle) used(e.source).outputs.add(e.sourceHandle);
      if (e.targetHandle) used(e.target).inputs.add(e.targetHandle);
    }
    return { types, problems: byNode, usedPorts, preflight };
  }, [problems, edges, types, preflight]);

  // Edges as drawn: flagged with the server's problem when it points at them.
  const shownEdges = useMemo(
    () =>
      edges.map((e, i) => {
        const mine = problems.filter((p) => p.edge === i);
        if (!mine.length) return { ...e, className: undefined, label: undefined };
        return { ...e, className: "bad", label: mine[0].code, data: { problems: mine } };
      }),
    [edges, problems],
  );

  const onNodesChange = useCallback((changes: NodeChange<FlowNode>[]) => {
    const kept = changes.filter((c) => c.type !== "remove");
    const next = applyNodeChanges(kept, latest.current.nodes);
    latest.current = { ...latest.current, nodes: next };
    setNodes(next);
  }, []);
  const onEdgesChange = useCallback((changes: EdgeChange<FlowEdge>[]) => {
    const kept = changes.filter((c) => c.type !== "remove");
    const next = applyEdgeChanges(kept, latest.current.edges);
    latest.current = { ...latest.current, edges: next };
    setEdges(next);
  }, []);

  const remove = useCallback(
    (nodeIds: Set<string>, edgeIds: Set<string>) => {
      if (!nodeIds.size && !edgeIds.size) return;
      commit((s) => ({
        nodes: s.nodes.filter((n) => !nodeIds.has(n.id)),
        edges: s.edges.filter((e) => !edgeIds.has(e.id) && !nodeIds.has(e.source) && !nodeIds.has(e.target)),
      }));
    },
    [commit],
  );

  const addNode = useCallback(
    (type: string, at: { x: number; y: number }, params: Record<string, unknown> = {}, wire?: (id: string) => FlowEdge[]) => {
      const id = freshId(type, latest.current.nodes.map((n) => n.id));
      commit((s) => ({
        nodes: [...s.nodes.map((n) => ({ ...n, selected: false })), { id, type: "rf", position: at, selected: true, data: { spec: { id, type, params } } }],
        edges: [...s.edges, ...(wire ? wire(id) : [])],
      }));
      return id;
    },
    [commit],
  );

  const connections = useCallback(
    (g: GraphSpec, end: { from?: PortRef; to?: PortRef }) => post<ConnectionOptions>("/v1/workflows/connections", { graph: g, ...end }),
    [],
  );

  // Inserting into an edge: the new (or loose) node must take the edge's output on one of
  // its inputs and give the edge's input on one of its outputs; the server says which fit.
  const insertIntoEdge = useCallback(
    async (edgeId: string, node: { type: string; at: { x: number; y: number } } | { id: string }) => {
      const s = latest.current;
      const e = s.edges.find((x) => x.id === edgeId);
      if (!e || !e.sourceHandle || !e.targetHandle) return false;
      const id = "id" in node ? node.id : freshId(node.type, s.nodes.map((n) => n.id));
      const type = "id" in node ? s.nodes.find((n) => n.id === node.id)?.data.spec.type : node.type;
      if (!type) return false;
      const without = s.edges.filter((x) => x.id !== edgeId);
      const withNode =
        "id" in node ? s.nodes : [...s.nodes, { id, type: "rf" as const, position: node.at, data: { spec: { id, type, params: {} } } }];
      const g = toGraph(family, withNode, without);
      const [inOpts, outOpts] = await Promise.all([
        connections(g, { from: { node: e.source, port: e.sourceHandle } }),
        connections(g, { to: { node: e.target, port: e.targetHandle } }),
      ]);
      const inPort = inOpts.targets.find((t) => t.node === id && t.fits);
      const outPort = outOpts.targets.find((t) => t.node === id && t.fits);
      if (!inPort || !outPort) {
        const why = inOpts.targets.find((t) => t.node === id)?.reason ?? outOpts.targets.find((t) => t.node === id)?.reason;
        say(`\`${type}\` does not fit into ${e.source}.${e.sourceHandle} → ${e.target}.${e.targetHandle}${why ? `: ${why}` : ""}`);
        return false;
      }
      commit(() => ({
        nodes: withNode.map((n) => ({ ...n, selected: n.id === id })),
        edges: [
          ...without,
          toFlowEdge({ from: e.source, from_port: e.sourceHandle!, to: id, to_port: inPort.port }),
          toFlowEdge({ from: id, from_port: outPort.port, to: e.target, to_port: e.targetHandle! }),
        ],
      }));
      say(`inserted ${id} into ${e.source} → ${e.target}`);
      return true;
    },
    [commit, connections, family, say],
  );

  const edgeAt = (clientX: number, clientY: number): string | undefined => {
    for (const el of document.elementsFromPoint(clientX, clientY)) {
      const g = el.closest(".react-flow__edge");
      if (g instanceof Element && g.getAttribute("data-id")) return g.getAttribute("data-id")!;
    }
    return undefined;
  };

  const choicesOf = (list: NodeType[]): Choice[] =>
    list.map((t) => ({ key: t.type_key, label: t.type_key, hint: `${t.palette_group} · ${t.execution_role}`, group: t.palette_group }));

  const openSearch = (clientX: number, clientY: number) => {
    const flowAt = flow.screenToFlowPosition({ x: clientX, y: clientY });
    setMenu(null);
    setPopup({
      at: { x: clientX, y: clientY },
      flow: flowAt,
      title: `add a node (${family})`,
      choices: choicesOf(familyTypes),
      pick: (c) => {
        setPopup(null);
        addNode(c.key, flowAt);
      },
    });
  };

  // Connecting: the server's options for this port, fetched as the drag starts.
  const onConnectStart = useCallback(
    (_: unknown, p: OnConnectStartParams) => {
      if (!p.nodeId || !p.handleId) return;
      const ref = { node: p.nodeId, port: p.handleId };
      const from = p.handleType === "source";
      const g = toGraph(family, latest.current.nodes, latest.current.edges);
      const d: Drag = { ref, from, options: connections(g, from ? { from: ref } : { to: ref }) };
      d.options.then((o) => {
        d.loaded = o;
        setTick((t) => t + 1);
      });
      drag.current = d;
    },
    [connections, family],
  );

  const isValidConnection = useCallback((c: Connection | FlowEdge) => {
    const d = drag.current;
    if (!d?.loaded) return false;
    const [node, port] = d.from ? [c.target, c.targetHandle] : [c.source, c.sourceHandle];
    return d.loaded.targets.some((t) => t.node === node && t.port === port && t.fits);
  }, []);

  const onConnect = useCallback(
    (c: Connection) => {
      if (!c.sourceHandle || !c.targetHandle) return;
      commit((s) => ({ ...s, edges: [...s.edges, toFlowEdge({ from: c.source, from_port: c.sourceHandle!, to: c.target, to_port: c.targetHandle! })] }));
    },
    [commit],
  );

  const onConnectEnd = useCallback(
    async (event: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      const d = drag.current;
      drag.current = null;
      if (!d || state.isValid) return;
      if (state.toHandle) {
        const options = await d.options;
        const to = state.toHandle;
        const o = options.targets.find((t) => t.node === to.nodeId && t.port === to.id);
        // A hand faster than the server's answer: the port fits, so the link is made.
        if (o?.fits && to.id) {
          const [a, b] = d.from ? [d.ref, { node: to.nodeId, port: to.id }] : [{ node: to.nodeId, port: to.id }, d.ref];
          onConnect({ source: a.node, sourceHandle: a.port, target: b.node, targetHandle: b.port });
          return;
        }
        say(`refused: ${d.ref.node}.${d.ref.port} → ${state.toHandle.nodeId}.${state.toHandle.id}: ${o?.reason ?? "does not fit"}`);
        return;
      }
      const target = event.target as Element | null;
      if (!target?.classList.contains("react-flow__pane")) return;
      const point = "changedTouches" in event ? event.changedTouches[0] : (event as MouseEvent);
      const flowAt = flow.screenToFlowPosition({ x: point.clientX, y: point.clientY });
      const options = await d.options;
      const allowed = new Set(familyTypes.map((t) => t.type_key));
      const choices: Choice[] = options.node_types
        .filter((t) => allowed.has(t.type_key))
        .map((t) => ({ key: t.type_key, label: t.type_key, hint: `${d.from ? "into" : "from"} ${t.port}`, group: "" }));
      setPopup({
        at: { x: point.clientX, y: point.clientY },
        flow: flowAt,
        title: `${d.from ? "feed" : "fed by"} ${d.ref.node}.${d.ref.port}`,
        choices,
        pick: (c) => {
          setPopup(null);
          const port = options.node_types.find((t) => t.type_key === c.key && c.hint.endsWith(` ${t.port}`))?.port;
          if (!port) return;
          addNode(c.key, flowAt, {}, (id) => [
            toFlowEdge(d.from ? { from: d.ref.node, from_port: d.ref.port, to: id, to_port: port } : { from: id, from_port: port, to: d.ref.node, to_port: d.ref.port }),
          ]);
        },
      });
    },
    [addNode, familyTypes, flow, onConnect, say],
  );

  // Keyboard: delete, undo/redo, copy/paste; not while typing in a field.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const el = e.target as HTMLElement;
      if (el.closest("input, textarea, select")) return;
      const mod = e.ctrlKey || e.metaKey;
      const s = latest.current;
      if (e.key === "Delete" || e.key === "Backspace") {
        remove(new Set(s.nodes.filter((n) => n.selected).map((n) => n.id)), new Set(s.edges.filter((x) => x.selected).map((x) => x.id)));
      } else if (mod && e.key.toLowerCase() === "z" && !e.shiftKey) {
        const prev = history.current.undo(s);
        if (prev) show(prev);
      } else if (mod && ((e.key.toLowerCase() === "z" && e.shiftKey) || e.key.toLowerCase() === "y")) {
        const next = history.current.redo(s);
        if (next) show(next);
      } else if (mod && e.key.toLowerCase() === "c") {
        const n = s.nodes.find((x) => x.selected);
        if (n) {
          clipboard.current = structuredClone(n.data.spec);
          say(`copied ${n.id}`);
        }
      } else if (mod && e.key.toLowerCase() === "v") {
        const c = clipboard.current;
        if (!c) return;
        const at = flow.screenToFlowPosition(pointer.current);
        addNode(c.type, at, structuredClone(c.params as Record<string, unknown>));
      } else return;
      e.preventDefault();
      setTick((t) => t + 1);
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [addNode, flow, remove, say, show]);

  const selectedNodes = nodes.filter((n) => n.selected);
  const selectedEdges = edges.filter((e) => e.selected);
  const selected = selectedNodes.length === 1 ? selectedNodes[0] : undefined;

  const save = async () => {
    setSaving(true);
    try {
      const body = { name, family, graph, ...(message.trim() ? { message: message.trim() } : {}) };
      if (!workflow) {
        const r = await post<{ id: string; version: number }>("/v1/workflows", body);
        window.location.assign(`/console/workflows/${r.id}/edit`);
        return;
      }
      const r = await put<{ version: number }>(`/v1/workflows/${workflow.id}`, body);
      const w = await get<WorkflowView>(`/v1/workflows/${workflow.id}`);
      setWorkflow(w);
      setSavedGraph(JSON.stringify(graph));
      setMessage("");
      setVersions(await get<WorkflowVersions>(`/v1/workflows/${workflow.id}/versions`));
      history.current = new History();
      window.history.replaceState(null, "", `/console/workflows/${workflow.id}/edit`);
      say(`saved as version ${r.version}`);
    } catch (e) {
      const body = e instanceof ApiError ? e.body : {};
      if (body.problems) setProblems(body.problems);
      say(`not saved: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      setSaving(false);
    }
  };

  const runRepair = async (apply: boolean) => {
    if (!workflow) return;
    try {
      const r = await post<RepairReport>(`/v1/workflows/${workflow.id}/repair${apply ? "" : "?dry_run=true"}`);
      if (!apply) {
        setDialog({ kind: "repair", report: r });
        return;
      }
      setDialog(null);
      const w = await get<WorkflowView>(`/v1/workflows/${workflow.id}`);
      setWorkflow(w);
      const shown = loadGraph({ ...(w.graph as GraphSpec), family: w.family as Family }, false);
      setSavedGraph(JSON.stringify(shown));
      setVersions(await get<WorkflowVersions>(`/v1/workflows/${workflow.id}/versions`));
      say(r.changed ? `repaired: version ${r.version} (${r.changes.length} change(s))` : "repair changed nothing");
    } catch (e) {
      say(`repair failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  const runPreflight = async (subject: string, outputType: string) => {
    if (!workflow) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(subject);
    } catch (e) {
      setDialog({ kind: "preflight", error: `the subject is not JSON: ${e instanceof Error ? e.message : e}` });
      return;
    }
    try {
      const report = await post<PreflightReport>(`/v1/workflows/${workflow.id}/preflight`, {
        subject: parsed,
        ...(outputType ? { output_type: outputType } : {}),
        version: workflow.version,
      });
      const marks = new Map<string, string>();
      for (const n of report.nodes) {
        const who = report.modules[n.module]?.workers ?? [];
        marks.set(n.id, who.length ? `✓ ${n.module}: ${who.join(", ")}` : `✗ no live worker for ${n.module}`);
      }
      for (const p of report.problems) if (p.node_id && p.code === "preflight") marks.set(p.node_id, `✗ ${p.message}`);
      setPreflight(marks);
      setDialog({ kind: "preflight", report });
    } catch (e) {
      setDialog({ kind: "preflight", error: e instanceof Error ? e.message : String(e) });
    }
  };

  const selectProblem = (p: Problem) => {
    const edgeId = p.edge !== undefined && p.edge !== null ? edges[p.edge]?.id : undefined;
    setNodes((ns) => ns.map((n) => ({ ...n, selected: n.id === p.node_id && !edgeId })));
    setEdges((es) => es.map((e) => ({ ...e, selected: e.id === edgeId })));
  };

  if (loadError) return <p className="error">The editor could not load: {loadError}</p>;
  if (!palette) return <p className="muted">loading the registry…</p>;

  const boundTypes = outputTypes.filter((o) => workflow && o.workflow_id === workflow.id);
  const older = workflow && versions && versions.items.length && versions.items[0].version !== workflow.version;
  const familySafe = !problems.some((p) => p.code === "family_mismatch");

  return (
    <div className="editor-shell">
      <header className="editor-bar">
        <input id="workflow-name" value={name} onChange={(e) => setName(e.target.value)} aria-label="workflow name" />
        <span className="badge" id="workflow-family">
          {family}
        </span>
        {workflow && (
          <select
            id="versions"
            aria-label="version"
            value={workflow.version}
            onChange={(e) => window.location.assign(`/console/workflows/${workflow.id}/edit?version=${e.target.value}`)}
          >
            {(versions?.items ?? []).map((v) => (
              <option key={v.version} value={v.version}>
                v{v.version}
                {v.message ? ` — ${v.message}` : ""}
              </option>
            ))}
          </select>
        )}
        <button id="undo" disabled={!history.current.canUndo} title={history.current.canUndo ? "undo (Ctrl+Z)" : "nothing to undo"} onClick={() => { const p = history.current.undo(latest.current); if (p) show(p); setTick((t) => t + 1); }}>
          Undo
        </button>
        <button id="redo" disabled={!history.current.canRedo} title={history.current.canRedo ? "redo (Ctrl+Shift+Z)" : "nothing to redo"} onClick={() => { const p = history.current.redo(latest.current); if (p) show(p); setTick((t) => t + 1); }}>
          Redo
        </button>
        <button
          id="auto-layout"
          onClick={() => {
            commit((s) => ({ ...s, nodes: autoLayout(s.nodes, s.edges) }));
            window.setTimeout(() => flow.fitView({ padding: 0.15 }), 30);
          }}
        >
          Auto-layout
        </button>
        <button id="fit" onClick={() => flow.fitView({ padding: 0.15 })}>
          Fit
        </button>
        <button
          id="starter"
          onClick={async () => {
            const s = await get<GraphSpec>(`/v1/workflows/starters/${family}`);
            const f = toFlow(s);
            commit(() => ({ nodes: autoLayout(f.nodes, f.edges), edges: f.edges }));
            window.setTimeout(() => flow.fitView({ padding: 0.15 }), 30);
            say(`replaced by the ${family} starter (Ctrl+Z brings the graph back)`);
          }}
        >
          Starter
        </button>
        {workflow && (
          <>
            <button id="repair" onClick={() => runRepair(false)} disabled={!boot.mayAdmin} title={boot.mayAdmin ? "see what repair would change" : "repair needs the admin scope"}>
              Repair…
            </button>
            <button id="preflight" onClick={() => setDialog({ kind: "preflight" })}>
              Preflight…
            </button>
            <button id="dispatch" onClick={() => setDialog({ kind: "dispatch" })} disabled={!boot.maySubmit} title={boot.maySubmit ? "dispatch a render request" : "dispatch needs the submit scope"}>
              Dispatch…
            </button>
          </>
        )}
        <span className="spacer" />
        <input id="save-message" placeholder="what changed (version message)" value={message} maxLength={500} onChange={(e) => setMessage(e.target.value)} />
        <button
          id="save"
          className="primary"
          disabled={!boot.mayAdmin || saving || validating || errorCount > 0 || (!dirty && !!workflow)}
          title={
            !boot.mayAdmin
              ? "saving needs the admin scope"
              : errorCount > 0
                ? "the server's problems must be fixed first (listed on the right)"
                : validating
                  ? "the server is checking the latest edit"
                  : !dirty && workflow
                    ? "nothing changed since this version"
                    : "store the graph as a new version"
          }
          onClick={save}
        >
          {errorCount > 0 ? `Save (${errorCount} problem${errorCount === 1 ? "" : "s"})` : workflow ? "Save as new version" : "Save workflow"}
        </button>
      </header>
      {older && (
        <div className="banner" id="older-version">
          Viewing version {workflow!.version} of {versions!.items[0].version}: saving stores it as a new version.
        </div>
      )}
      {!familySafe && (
        <div className="banner bad" id="migration-banner">
          This graph mixes families: the flagged nodes and edges are not allowed in a {family} workflow. {workflow && "Run Repair, then "}delete or replace
          them; Save is refused until the graph is family-safe.
        </div>
      )}
      <div className="editor-main">
        <PalettePanel family={family} types={familyTypes} onAdd={(t) => {
          // In the middle of the view, moved down past any node already there.
          const r = document.querySelector(".react-flow")!.getBoundingClientRect();
          const at = flow.screenToFlowPosition({ x: r.left + r.width / 2, y: r.top + r.height / 2 });
          const taken = (p: { x: number; y: number }) =>
            latest.current.nodes.some((n) => Math.abs(n.position.x - p.x) < (n.measured?.width ?? 200) && Math.abs(n.position.y - p.y) < (n.measured?.height ?? 90));
          for (let i = 0; i < 30 && taken(at); i++) at.y += 60;
          addNode(t.type_key, at);
        }} />
        <div
          className="canvas"
          onMouseMove={(e) => (pointer.current = { x: e.clientX, y: e.clientY })}
          onDoubleClick={(e) => {
            if ((e.target as Element).classList.contains("react-flow__pane")) openSearch(e.clientX, e.clientY);
          }}
          onDragOver={(e) => {
            if (e.dataTransfer.types.includes(DRAG_MIME)) {
              e.preventDefault();
              e.dataTransfer.dropEffect = "copy";
            }
          }}
          onDrop={async (e) => {
            const type = e.dataTransfer.getData(DRAG_MIME);
            if (!type) return;
            e.preventDefault();
            const at = flow.screenToFlowPosition({ x: e.clientX, y: e.clientY });
            const onEdge = edgeAt(e.clientX, e.clientY);
            if (onEdge && (await insertIntoEdge(onEdge, { type, at }))) return;
            addNode(type, at);
          }}
        >
          <ViewContext.Provider value={view}>
            <DragContext.Provider value={drag}>
              <ReactFlow<FlowNode, FlowEdge>
                nodes={nodes}
                edges={shownEdges}
                nodeTypes={nodeTypes}
                onNodesChange={onNodesChange}
                onEdgesChange={onEdgesChange}
                onConnect={onConnect}
                onConnectStart={onConnectStart}
                onConnectEnd={onConnectEnd}
                isValidConnection={isValidConnection}
                connectionLineComponent={ConnectionLine}
                connectionRadius={24}
                deleteKeyCode={null}
                zoomOnDoubleClick={false}
                onNodeDragStart={() => history.current.push(latest.current)}
                onNodeDragStop={async (e, node) => {
                  const loose = !latest.current.edges.some((x) => x.source === node.id || x.target === node.id);
                  const at = "changedTouches" in e ? e.changedTouches[0] : e;
                  const onEdge = loose ? edgeAt(at.clientX, at.clientY) : undefined;
                  if (onEdge) await insertIntoEdge(onEdge, { id: node.id });
                  setTick((t) => t + 1);
                }}
                onPaneContextMenu={(e) => {
                  e.preventDefault();
                  openSearch(e.clientX, e.clientY);
                }}
                onNodeContextMenu={(e, n) => {
                  e.preventDefault();
                  setPopup(null);
                  setMenu({ at: { x: e.clientX, y: e.clientY }, node: n.id });
                }}
                onEdgeContextMenu={(e, x) => {
                  e.preventDefault();
                  setPopup(null);
                  setMenu({ at: { x: e.clientX, y: e.clientY }, edge: x.id });
                }}
                onPaneClick={() => {
                  setMenu(null);
                  setPopup(null);
                }}
                fitView
                minZoom={0.1}
                proOptions={{ hideAttribution: true }}
              >
                <Background />
                <Controls showInteractive={false} />
                <MiniMap pannable zoomable nodeClassName={(n) => (view.problems.get(n.id)?.length ? "minimap-bad" : "")} />
              </ReactFlow>
            </DragContext.Provider>
          </ViewContext.Provider>
        </div>
        <Inspector
          node={selected}
          edge={selectedEdges.length === 1 && selectedNodes.length === 0 ? selectedEdges[0] : undefined}
          edgeIndex={selectedEdges.length === 1 ? edges.indexOf(selectedEdges[0]) : -1}
          types={types}
          problems={problems}
          problemsTotal={problemsTotal}
          outputTypes={boundTypes}
          onSelectProblem={selectProblem}
          onParams={(id, params) =>
            commit((s) => ({ ...s, nodes: s.nodes.map((n) => (n.id === id ? { ...n, data: { spec: { ...n.data.spec, params } } } : n)) }), `params:${id}`)
          }
          onSpec={(id, spec) => commit((s) => ({ ...s, nodes: s.nodes.map((n) => (n.id === id ? { ...n, data: { spec } } : n)) }), `spec:${id}`)}
          onRename={(id, to) => {
            if (!to.trim() || latest.current.nodes.some((n) => n.id === to)) {
              say(to.trim() ? `a node \`${to}\` exists already` : "a node id cannot be blank");
              return;
            }
            commit((s) => ({
              nodes: s.nodes.map((n) => (n.id === id ? { ...n, id: to, data: { spec: { ...n.data.spec, id: to } } } : n)),
              edges: s.edges.map((e) => {
                const x = { ...e, source: e.source === id ? to : e.source, target: e.target === id ? to : e.target };
                return { ...x, id: toFlowEdge({ from: x.source, from_port: x.sourceHandle!, to: x.target, to_port: x.targetHandle! }).id };
              }),
            }));
          }}
          onDelete={(nodeIds, edgeIds) => remove(new Set(nodeIds), new Set(edgeIds))}
        />
      </div>
      <footer className="editor-status" id="status">
        {validating ? "validating…" : errorCount ? `${errorCount} problem(s)` : "valid"} · {nodes.length} nodes · {edges.length} edges
        {dirty ? " · unsaved changes" : ""}
      </footer>
      {popup && <SearchPopup at={popup.at} title={popup.title} choices={popup.choices} onPick={popup.pick} onClose={() => setPopup(null)} />}
      {menu && (
        <ul className="context-menu" id="context-menu" style={{ left: menu.at.x, top: menu.at.y }}>
          {menu.node && (
            <li
              id="menu-copy"
              onClick={() => {
                const n = latest.current.nodes.find((x) => x.id === menu.node);
                if (n) clipboard.current = structuredClone(n.data.spec);
                setMenu(null);
                say(`copied ${menu.node}`);
              }}
            >
              Copy
            </li>
          )}
          <li
            id="menu-delete"
            onClick={() => {
              remove(new Set(menu.node ? [menu.node] : []), new Set(menu.edge ? [menu.edge] : []));
              setMenu(null);
            }}
          >
            Delete {menu.node ? `node ${menu.node}` : "edge"}
          </li>
        </ul>
      )}
      {toast && (
        <div className="toast" id="toast" role="status">
          {toast}
        </div>
      )}
      {dialog && (
        <DialogView
          dialog={dialog}
          workflow={workflow}
          outputTypes={boundTypes}
          csrf={boot.csrf}
          onClose={() => setDialog(null)}
          onApplyRepair={() => runRepair(true)}
          onPreflight={runPreflight}
        />
      )}
    </div>
  );
}

function Inspector(props: {
  node?: FlowNode;
  edge?: FlowEdge;
  edgeIndex: number;
  types: Map<string, NodeType>;
  problems: Problem[];
  problemsTotal: number;
  outputTypes: OutputType[];
  onSelectProblem: (p: Problem) => void;
  onParams: (id: string, params: Record<string, unknown>) => void;
  onSpec: (id: string, spec: Spec) => void;
  onRename: (id: string, to: string) => void;
  onDelete: (nodes: string[], edges: string[]) => void;
}) {
  const [rename, setRename] = useState("");
  const n = props.node;
  useEffect(() => setRename(n?.id ?? ""), [n?.id]);
  if (n) {
    const t = props.types.get(n.data.spec.type);
    const mine = props.problems.filter((p) => p.node_id === n.id);
    const overrides = props.outputTypes.filter((o) => o.invocation_overrides && n.id in o.invocation_overrides);
    const spec = n.data.spec;
    return (
      <aside className="inspector" id="inspector" data-node={n.id}>
        <h3>
          <input
            id="node-id"
            value={rename}
            aria-label="node id"
            onChange={(e) => setRename(e.target.value)}
            onBlur={() => rename !== n.id && props.onRename(n.id, rename)}
            onKeyDown={(e) => e.key === "Enter" && rename !== n.id && props.onRename(n.id, rename)}
          />
        </h3>
        <p>
          <code>{spec.type}</code> {t && <span className="muted">· {t.module_key} · {t.execution_role}</span>}
        </p>
        {t ? <p className="help">{t.description}</p> : <p className="error">unknown node type: run Repair, or replace the node</p>}
        {t && (
          <p className="ports">
            in: {t.inputs.map((p) => `${p.name} (${p.kind}${p.required ? ", required" : ""}${p.many ? ", many" : ""})`).join(", ") || "—"}
            <br />
            out: {t.outputs.map((p) => `${p.name} (${p.kind})`).join(", ") || "—"}
          </p>
        )}
        <ProblemList problems={mine} onSelect={props.onSelectProblem} />
        <h4>Params</h4>
        {t && (
          <SchemaForm
            schema={t.params_schema as object}
            value={(spec.params ?? {}) as Record<string, unknown>}
            problems={mine}
            onChange={(v) => props.onParams(n.id, v)}
            idPrefix={`param-${n.id}`}
          />
        )}
        <div className="field">
          <label htmlFor="max-attempts">max_attempts (1–100)</label>
          <input
            id="max-attempts"
            type="number"
            min={1}
            max={100}
            placeholder="coordinator default"
            value={spec.max_attempts ?? ""}
            onChange={(e) => props.onSpec(n.id, { ...spec, max_attempts: e.target.value === "" ? undefined : Number(e.target.value) })}
          />
        </div>
        <div className="field">
          <label htmlFor="timeout">timeout (e.g. 30s, 10m)</label>
          <input
            id="timeout"
            placeholder={t?.default_timeout_s ? `${t.default_timeout_s}s` : "coordinator default"}
            value={spec.timeout ?? ""}
            onChange={(e) => props.onSpec(n.id, { ...spec, timeout: e.target.value === "" ? undefined : e.target.value })}
          />
        </div>
        <h4>Output types</h4>
        <p className="help">
          An output type bound to this workflow may override any of these params for node <code>{n.id}</code> (its
          <code> invocation_overrides</code>, checked against this schema when it is saved).
        </p>
        {overrides.length ? (
          <ul id="overrides">
            {overrides.map((o) => (
              <li key={o.key}>
                <b>{o.key}</b> overrides <code>{JSON.stringify(o.invocation_overrides![n.id])}</code>
              </li>
            ))}
          </ul>
        ) : (
          <p className="muted">no bound output type overrides this node</p>
        )}
        <button id="delete-node" onClick={() => props.onDelete([n.id], [])}>
          Delete node
        </button>
      </aside>
    );
  }
  if (props.edge) {
    const e = props.edge;
    const mine = props.problems.filter((p) => p.edge === props.edgeIndex);
    return (
      <aside className="inspector" id="inspector" data-edge={e.id}>
        <h3>Edge</h3>
        <p>
          <code>
            {e.source}.{e.sourceHandle}
          </code>{" "}
          →{" "}
          <code>
            {e.target}.{e.targetHandle}
          </code>
        </p>
        <ProblemList problems={mine} onSelect={props.onSelectProblem} />
        <button id="delete-edge" onClick={() => props.onDelete([], [e.id])}>
          Delete edge
        </button>
      </aside>
    );
  }
  return (
    <aside className="inspector" id="inspector">
      <h3>Problems</h3>
      {props.problems.length === 0 ? <p className="muted">The server finds no problem with this graph.</p> : null}
      <ProblemList problems={props.problems} onSelect={props.onSelectProblem} />
      {props.problemsTotal > props.problems.length && <p className="muted">and {props.problemsTotal - props.problems.length} more</p>}
      <p className="help">
        Drag from a port to another to connect; drop a link on empty canvas to pick a node that fits; right-click or double-click the canvas to search;
        drop a node on an edge to insert it. Delete, Ctrl+Z / Ctrl+Shift+Z, Ctrl+C / Ctrl+V.
      </p>
    </aside>
  );
}

function ProblemList(props: { problems: Problem[]; onSelect: (p: Problem) => void }) {
  if (!props.problems.length) return null;
  return (
    <ul className="problems" id="problems">
      {props.problems.map((p, i) => (
        <li key={i} className={p.severity === "warning" ? "warning" : "error"} data-code={p.code} onClick={() => props.onSelect(p)}>
          <b>{p.code}</b>
          {p.node_id ? ` · ${p.node_id}` : ""}
          {p.edge !== undefined && p.edge !== null ? ` · edge #${p.edge}` : ""}
          {p.param_path ? ` · ${p.param_path}` : ""}: {p.message}
        </li>
      ))}
    </ul>
  );
}

function DialogView(props: {
  dialog: Dialog;
  workflow: WorkflowView | null;
  outputTypes: OutputType[];
  csrf: string;
  onClose: () => void;
  onApplyRepair: () => void;
  onPreflight: (subject: string, outputType: string) => void;
}) {
  const [subject, setSubject] = useState('{"cad_file": "as1.stp"}');
  const [ot, setOt] = useState(props.outputTypes[0]?.key ?? "");
  const d = props.dialog;
  return (
    <div className="dialog-backdrop" onClick={props.onClose}>
      <div className="dialog" id="dialog" onClick={(e) => e.stopPropagation()}>
        {d.kind === "repair" && (
          <>
            <h3>Repair of version {d.report.from_version}</h3>
            {d.report.changes.length ? (
              <ul id="repair-changes">
                {d.report.changes.map((c, i) => (
                  <li key={i}>{c}</li>
                ))}
              </ul>
            ) : (
              <p id="repair-changes">Nothing to normalise.</p>
            )}
            {d.report.mixed_family && <p className="error">Still mixes families: repair flags such nodes, a person replaces them.</p>}
            <ProblemList problems={d.report.problems} onSelect={() => {}} />
            <button id="apply-repair" className="primary" disabled={!d.report.changed} title={d.report.changed ? "" : "repair would change nothing"} onClick={props.onApplyRepair}>
              Store the repaired version
            </button>
          </>
        )}
        {(d.kind === "preflight" || d.kind === "dispatch") && (
          <>
            <h3>{d.kind === "preflight" ? "Preflight" : "Dispatch"} of version {props.workflow?.version}</h3>
            <form method="post" action={`/console/workflows/${props.workflow?.id}/dispatch`} onSubmit={(e) => d.kind === "preflight" && (e.preventDefault(), props.onPreflight(subject, ot))}>
              <input type="hidden" name="csrf" value={props.csrf} />
              <label htmlFor="subject">subject (JSON)</label>
              <textarea id="subject" name="subject" rows={3} value={subject} onChange={(e) => setSubject(e.target.value)} />
              <label htmlFor="output-type">output type</label>
              <select id="output-type" name="output_type" value={ot} onChange={(e) => setOt(e.target.value)}>
                {d.kind === "preflight" && <option value="">(none)</option>}
                {props.outputTypes.map((o) => (
                  <option key={o.key}>{o.key}</option>
                ))}
              </select>
              {d.kind === "dispatch" && !props.outputTypes.length && <p className="error">No output type is bound to this workflow: bind one to dispatch it.</p>}
              <button
                id={d.kind === "preflight" ? "run-preflight" : "run-dispatch"}
                className="primary"
                type="submit"
                disabled={d.kind === "dispatch" && !ot}
                title={d.kind === "dispatch" && !ot ? "bind an output type to this workflow first" : ""}
              >
                {d.kind === "preflight" ? "Check" : "Dispatch a render request"}
              </button>
            </form>
            {d.kind === "preflight" && d.error && <p className="error">{d.error}</p>}
            {d.kind === "preflight" && d.report && (
              <div id="preflight-report">
                <p className={d.report.ok ? "ok" : "error"}>{d.report.ok ? "would run: every module has a live worker" : "would not run"}</p>
                <ProblemList problems={d.report.problems} onSelect={() => {}} />
              </div>
            )}
          </>
        )}
        <button id="close-dialog" onClick={props.onClose}>
          Close
        </button>
      </div>
    </div>
  );
}

createRoot(root, { onUncaughtError: (e) => crashed(e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e)) }).render(
  <ReactFlowProvider>
    <Editor />
  </ReactFlowProvider>,
);
