// The palette: the node types the registry allows in this workflow's family, grouped by
// family → palette group → execution role, with a search box. Drag one onto the canvas (or
// onto an edge, to insert it there), or click it to add it in the middle of the view.
import { useState } from "react";
import type { Family, NodeType } from "./types";

export const DRAG_MIME = "application/x-renderfleet-node-type";

export function PalettePanel(props: { family: Family; types: NodeType[]; onAdd: (t: NodeType) => void }) {
  const [q, setQ] = useState("");
  const needle = q.trim().toLowerCase();
  const shown = props.types.filter(
    (t) => !needle || `${t.type_key} ${t.description} ${t.palette_group}`.toLowerCase().includes(needle),
  );
  const groups = new Map<string, Map<string, NodeType[]>>();
  for (const t of shown) {
    const g = groups.get(t.palette_group) ?? new Map<string, NodeType[]>();
    const r = g.get(t.execution_role) ?? [];
    r.push(t);
    g.set(t.execution_role, r);
    groups.set(t.palette_group, g);
  }
  return (
    <aside className="palette" id="palette">
      <input id="palette-search" placeholder="search node types" value={q} onChange={(e) => setQ(e.target.value)} />
      <h3 className="family" data-family={props.family}>
        {props.family}
      </h3>
      {shown.length === 0 && <p className="muted">no node type matches</p>}
      {[...groups].map(([group, roles]) => (
        <section key={group} data-group={group}>
          <h4>{group}</h4>
          {[...roles].map(([role, types]) => (
            <div key={role} className="role" data-role={role}>
              <h5>{role}</h5>
              {types.map((t) => (
                <div
                  key={t.type_key}
                  className="palette-item"
                  data-type={t.type_key}
                  draggable
                  title={t.description}
                  onDragStart={(e) => {
                    e.dataTransfer.setData(DRAG_MIME, t.type_key);
                    e.dataTransfer.effectAllowed = "copy";
                  }}
                  onClick={() => props.onAdd(t)}
                >
                  <b>{t.type_key}</b>
                  <small>
                    {t.inputs.map((p) => p.kind).join(", ") || "—"} → {t.outputs.map((p) => p.kind).join(", ") || "—"}
                  </small>
                </div>
              ))}
            </div>
          ))}
        </section>
      ))}
    </aside>
  );
}
