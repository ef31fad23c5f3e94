// One-click auto-layout: a layered (Sugiyama) layout by dagre, left to right as data flows.
import dagre from "@dagrejs/dagre";
import type { FlowEdge, FlowNode } from "./model";

const FALLBACK = { width: 200, height: 90 };

export function autoLayout(nodes: FlowNode[], edges: FlowEdge[]): FlowNode[] {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 80, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) {
    g.setNode(n.id, { width: n.measured?.width ?? FALLBACK.width, height: n.measured?.height ?? FALLBACK.height });
  }
  for (const e of edges) if (g.hasNode(e.source) && g.hasNode(e.target)) g.setEdge(e.source, e.target);
  dagre.layout(g);
  return nodes.map((n) => {
    const p = g.node(n.id);
    const w = n.measured?.width ?? FALLBACK.width;
    const h = n.measured?.height ?? FALLBACK.height;
    return { ...n, position: { x: Math.round(p.x - w / 2), y: Math.round(p.y - h / 2) } };
  });
}
