// The graph as React Flow holds it, and back. React Flow's nodes and edges are the editor's
// one copy of the graph: each node carries its NodeSpec, each edge its two ports, and the
// GraphSpec sent to the server is read off them in order (a problem's `edge` index is an
// index into that order).
import type { Edge, Node } from "@xyflow/react";
import type { EdgeSpec, Family, GraphSpec, NodeSpec, NodeType, Palette } from "./types";

export type Spec = Omit<NodeSpec, "position">;
export type FlowNode = Node<{ spec: Spec }, "rf">;
export type FlowEdge = Edge;

export function edgeId(e: EdgeSpec): string {
  return `${e.from}.${e.from_port ?? ""}->${e.to}.${e.to_port ?? ""}`;
}

export function toFlow(graph: GraphSpec): { nodes: FlowNode[]; edges: FlowEdge[] } {
  const nodes: FlowNode[] = graph.nodes.map((n, i) => {
    const { position, ...spec } = n;
    return {
      id: n.id,
      type: "rf",
      position: position ? { x: position.x, y: position.y } : { x: 260 * i, y: 0 },
      data: { spec },
    };
  });
  const edges: FlowEdge[] = (graph.edges ?? []).map((e) => toFlowEdge(e));
  return { nodes, edges };
}

export function toFlowEdge(e: EdgeSpec): FlowEdge {
  return {
    id: edgeId(e),
    source: e.from,
    sourceHandle: e.from_port ?? null,
    target: e.to,
    targetHandle: e.to_port ?? null,
  };
}

export function toGraph(family: Family, nodes: FlowNode[], edges: FlowEdge[]): GraphSpec {
  return {
    family,
    nodes: nodes.map((n) => ({
      ...n.data.spec,
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    })),
    edges: edges.map((e) => ({
      from: e.source,
      from_port: e.sourceHandle ?? undefined,
      to: e.target,
      to_port: e.targetHandle ?? undefined,
    })),
  };
}

/// A fresh node id for a node of `type`: its last dotted word, numbered when taken.
export function freshId(type: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  const base = type.split(".").pop() || "node";
  if (!used.has(base)) return base;
  for (let i = 2; ; i++) if (!used.has(`${base}_${i}`)) return `${base}_${i}`;
}

export function typeOf(palette: Palette, key: string): NodeType | undefined {
  return palette.node_types.find((t) => t.type_key === key);
}

/// Node types an editor of `family` may offer: the registry's `by_family` list.
export function typesFor(palette: Palette, family: Family): NodeType[] {
  const keys = new Set(palette.by_family[family] ?? []);
  return palette.node_types.filter((t) => keys.has(t.type_key));
}
