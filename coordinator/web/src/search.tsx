// The search that opens where the hand is: on a right-click or double-click on the canvas
// (every node type of the family) and on a link dropped on empty canvas (only the node
// types with a port that fits it). Type to filter, Enter or a click inserts, Escape closes.
import { useEffect, useRef, useState } from "react";

export type Choice = { key: string; label: string; hint: string; group: string };

export function SearchPopup(props: {
  at: { x: number; y: number };
  title: string;
  choices: Choice[];
  onPick: (c: Choice) => void;
  onClose: () => void;
}) {
  const [q, setQ] = useState("");
  const [active, setActive] = useState(0);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const shown = filter(props.choices, q);
  const pick = (c: Choice | undefined) => c && props.onPick(c);
  return (
    <div
      className="search-popup"
      id="search-popup"
      style={{ left: props.at.x, top: props.at.y }}
      onContextMenu={(e) => e.preventDefault()}
    >
      <div className="search-title">{props.title}</div>
      <input
        ref={input}
        id="search-popup-input"
        placeholder="search node types"
        value={q}
        onChange={(e) => {
          setQ(e.target.value);
          setActive(0);
        }}
        onKeyDown={(e) => {
          if (e.key === "Escape") props.onClose();
          else if (e.key === "Enter") pick(shown[active]);
          else if (e.key === "ArrowDown") setActive((a) => Math.min(a + 1, shown.length - 1));
          else if (e.key === "ArrowUp") setActive((a) => Math.max(a - 1, 0));
          else return;
          e.preventDefault();
        }}
      />
      <ul>
        {shown.length === 0 && <li className="muted">nothing fits</li>}
        {shown.map((c, i) => (
          <li
            key={c.key + c.hint}
            className={i === active ? "active" : ""}
            data-choice={c.key}
            onMouseDown={(e) => {
              e.preventDefault();
              pick(c);
            }}
          >
            <b>{c.label}</b> <span className="muted">{c.hint}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}

/// Substring match on the key, label and hint; key matches first.
export function filter(choices: Choice[], q: string): Choice[] {
  const needle = q.trim().toLowerCase();
  if (!needle) return choices;
  const hits = choices.filter((c) => `${c.key} ${c.label} ${c.hint}`.toLowerCase().includes(needle));
  return hits.sort((a, b) => Number(!a.key.includes(needle)) - Number(!b.key.includes(needle)));
}
