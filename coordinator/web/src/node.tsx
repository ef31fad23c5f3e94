// How a node looks on the canvas: its id, type, the ports the registry gives it (inputs
// left, outputs right, each with its artifact kind), and the problems the server found on
// it. A node of an unknown type still shows the ports its edges use, so an old graph can
// be seen and repaired.
import { Handle, Position, type NodeProps } from "@xyflow/react";
import { createContext, useContext } from "react";
import type { FlowNode } from "./model";
import type { NodeType, Problem } from "./types";

export type NodeView = {
  types: Map<string, NodeType>;
  problems: Map<string, Problem[]>;
  /// Port names edges use, per node (for nodes whose type is unknown).
  usedPorts: Map<string, { inputs: Set<string>; outputs: Set<string> }>;
  /// Preflight's word per node: the workers serving its module.
  preflight: Map<string, string>;
};

export const ViewContext = createContext<NodeView>({
  types: new Map(),
  problems: new Map(),
  usedPorts: new Map(),
  preflight: new Map(),
});

export function FlowNodeView({ id, data, selected }: NodeProps<FlowNode>) {
  const view = useContext(ViewContext);
  const t = view.types.get(data.spec.type);
  const problems = view.problems.get(id) ?? [];
  const errors = problems.filter((p) => p.severity !== "warning");
  const used = view.usedPorts.get(id);
  const inputs = t ? t.inputs.map((p) => ({ name: p.name, kind: p.kind, required: p.required })) : [...(used?.inputs ?? [])].map((name) => ({ name, kind: "?", required: false }));
  const outputs = t ? t.outputs.map((p) => ({ name: p.name, kind: p.kind })) : [...(used?.outputs ?? [])].map((name) => ({ name, kind: "?" }));
  // One full-width row per port, outputs first (as Blender draws them): long names never
  // collide with the port across.
  const rows = inputs.length + outputs.length;
  const cls = ["rf-node", t ? `role-${t.execution_role}` : "unknown", errors.length ? "bad" : problems.length ? "warn" : "", selected ? "selected" : ""];
  const pre = view.preflight.get(id);
  return (
    <div className={cls.join(" ")} data-node={id} title={t?.description ?? "unknown node type"}>
      <div className="rf-node-head">
        <b>{id}</b>
        <span className="rf-node-type">{data.spec.type}</span>
      </div>
      <div className="rf-ports" style={{ height: rows * 22 }}>
        {inputs.map((p, i) => (
          <div key={`in-${p.name}`} className="rf-port in" style={{ top: (outputs.length + i) * 22 }}>
            <Handle type="target" position={Position.Left} id={p.name} data-port={`${id}.${p.name}`} />
            <span>
              {p.name}
              {p.required ? "*" : ""} <i>{p.kind}</i>
            </span>
          </div>
        ))}
        {outputs.map((p, i) => (
          <div key={`out-${p.name}`} className="rf-port out" style={{ top: i * 22 }}>
            <span>
              <i>{p.kind}</i> {p.name}
            </span>
            <Handle type="source" position={Position.Right} id={p.name} data-port={`${id}.${p.name}`} />
          </div>
        ))}
      </div>
      {pre && <div className="rf-node-preflight">{pre}</div>}
      {problems.length > 0 && (
        <ul className="rf-node-problems">
          {problems.slice(0, 3).map((p, i) => (
            <li key={i} className={p.severity === "warning" ? "warning" : "error"} data-code={p.code}>
              {p.code}
            </li>
          ))}
          {problems.length > 3 && <li>+{problems.length - 3} more</li>}
        </ul>
      )}
    </div>
  );
}
