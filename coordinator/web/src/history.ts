// Undo/redo across every change: snapshots of the graph (nodes and edges), pushed before a
// change is made. A drag pushes once, when it starts, not per pixel.
import type { FlowEdge, FlowNode } from "./model";

export type Snapshot = { nodes: FlowNode[]; edges: FlowEdge[] };
const LIMIT = 200;

export class History {
  private past: Snapshot[] = [];
  private future: Snapshot[] = [];

  push(s: Snapshot) {
    this.past.push(strip(s));
    if (this.past.length > LIMIT) this.past.shift();
    this.future = [];
  }

  undo(current: Snapshot): Snapshot | undefined {
    const s = this.past.pop();
    if (s) this.future.push(strip(current));
    return s;
  }

  redo(current: Snapshot): Snapshot | undefined {
    const s = this.future.pop();
    if (s) this.past.push(strip(current));
    return s;
  }

  get canUndo() {
    return this.past.length > 0;
  }
  get canRedo() {
    return this.future.length > 0;
  }
}

/// Selection is not part of the history.
function strip(s: Snapshot): Snapshot {
  return {
    nodes: s.nodes.map((n) => ({ ...n, selected: false, dragging: false })),
    edges: s.edges.map((e) => ({ ...e, selected: false })),
  };
}
