// A form generated from a node type's params JSON Schema: one field per property, nested
// objects as fieldsets, enums as selects, bounds on number inputs, defaults shown, the
// schema's descriptions as help, and the server's problems under the field they point at
// (by JSON pointer). Nothing here knows any node type.
import { useState } from "react";
import type { Problem } from "./types";

type Schema = {
  type?: string | string[];
  enum?: unknown[];
  default?: unknown;
  description?: string;
  title?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  properties?: Record<string, Schema>;
  required?: string[];
};

type Json = unknown;
type Obj = Record<string, Json>;

export function SchemaForm(props: {
  schema: Schema;
  value: Obj;
  problems: Problem[];
  onChange: (v: Obj) => void;
  idPrefix: string;
}) {
  return (
    <ObjectFields
      schema={props.schema}
      value={props.value}
      path=""
      problems={props.problems}
      onChange={props.onChange}
      idPrefix={props.idPrefix}
    />
  );
}

function typeOf(s: Schema): string {
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== "null") : s.type;
  if (t) return t;
  if (s.properties) return "object";
  if (s.enum) return "enum";
  return "json";
}

function ObjectFields(props: {
  schema: Schema;
  value: Obj;
  path: string;
  problems: Problem[];
  onChange: (v: Obj) => void;
  idPrefix: string;
}) {
  const entries = Object.entries(props.schema.properties ?? {});
  if (entries.length === 0) return <p className="muted">This node type has no params.</p>;
  return (
    <>
      {entries.map(([key, sub]) => {
        const path = `${props.path}/${key}`;
        const set = (v: Json | undefined) => {
          const next = { ...props.value };
          if (v === undefined) delete next[key];
          else next[key] = v;
          props.onChange(next);
        };
        return (
          <Field
            key={key}
            name={key}
            schema={sub}
            value={props.value[key]}
            path={path}
            problems={props.problems}
            onChange={set}
            idPrefix={props.idPrefix}
          />
        );
      })}
    </>
  );
}

function Field(props: {
  name: string;
  schema: Schema;
  value: Json;
  path: string;
  problems: Problem[];
  onChange: (v: Json | undefined) => void;
  idPrefix: string;
}) {
  const { schema: s, path } = props;
  const id = `${props.idPrefix}${path.replaceAll("/", "-")}`;
  const mine = props.problems.filter((p) => p.param_path === path);
  const kind = s.enum ? "enum" : typeOf(s);
  const help = s.description ? <small className="help">{s.description}</small> : null;
  const errors = mine.map((p, i) => (
    <small key={i} className="field-problem">
      {p.message}
    </small>
  ));
  const def = s.default !== undefined ? <small className="default">default: {JSON.stringify(s.default)}</small> : null;

  if (kind === "object") {
    const v = (props.value && typeof props.value === "object" ? props.value : {}) as Obj;
    return (
      <fieldset className="nested" data-param={path}>
        <legend>{props.name}</legend>
        {help}
        <ObjectFields
          schema={s}
          value={v}
          path={path}
          problems={props.problems}
          onChange={(o) => props.onChange(Object.keys(o).length ? o : undefined)}
          idPrefix={props.idPrefix}
        />
        {errors}
      </fieldset>
    );
  }

  let input;
  if (kind === "enum") {
    input = (
      <select
        id={id}
        value={props.value === undefined ? "" : JSON.stringify(props.value)}
        onChange={(e) => props.onChange(e.target.value === "" ? undefined : JSON.parse(e.target.value))}
      >
        <option value="">{s.default !== undefined ? `(default: ${String(s.default)})` : "(unset)"}</option>
        {(s.enum ?? []).map((o) => (
          <option key={JSON.stringify(o)} value={JSON.stringify(o)}>
            {String(o)}
          </option>
        ))}
      </select>
    );
  } else if (kind === "boolean") {
    const checked = props.value === undefined ? Boolean(s.default) : Boolean(props.value);
    input = <input id={id} type="checkbox" checked={checked} onChange={(e) => props.onChange(e.target.checked)} />;
  } else if (kind === "integer" || kind === "number") {
    input = (
      <NumberInput
        id={id}
        integer={kind === "integer"}
        schema={s}
        value={typeof props.value === "number" ? props.value : undefined}
        onChange={props.onChange}
      />
    );
  } else if (kind === "string") {
    input = (
      <input
        id={id}
        type="text"
        value={typeof props.value === "string" ? props.value : ""}
        placeholder={s.default !== undefined ? String(s.default) : ""}
        minLength={s.minLength}
        maxLength={s.maxLength}
        onChange={(e) => props.onChange(e.target.value === "" ? undefined : e.target.value)}
      />
    );
  } else {
    input = <JsonInput id={id} value={props.value} onChange={props.onChange} />;
  }
  return (
    <div className={mine.length ? "field bad" : "field"} data-param={path}>
      <label htmlFor={id} title={s.description}>
        {props.name}
        {bounds(s)}
      </label>
      {input}
      {def}
      {help}
      {errors}
    </div>
  );
}

function bounds(s: Schema): string {
  const lo = s.minimum ?? s.exclusiveMinimum;
  const hi = s.maximum ?? s.exclusiveMaximum;
  if (lo === undefined && hi === undefined) return "";
  return ` (${lo ?? "…"}–${hi ?? "…"})`;
}

/// A number field that keeps what is typed until it parses, and refuses (does not send)
/// a value outside the schema's bounds: the server would refuse it too.
function NumberInput(props: {
  id: string;
  integer: boolean;
  schema: Schema;
  value: number | undefined;
  onChange: (v: Json | undefined) => void;
}) {
  const [text, setText] = useState<string | null>(null);
  const [why, setWhy] = useState("");
  const s = props.schema;
  const shown = text ?? (props.value === undefined ? "" : String(props.value));
  return (
    <>
      <input
        id={props.id}
        type="number"
        step={props.integer ? 1 : "any"}
        min={s.minimum}
        max={s.maximum}
        value={shown}
        placeholder={s.default !== undefined ? String(s.default) : ""}
        onChange={(e) => {
          const t = e.target.value;
          setText(t);
          if (t === "") {
            setWhy("");
            props.onChange(undefined);
            return;
          }
          const n = Number(t);
          const problem = outOfBounds(n, props.integer, s);
          setWhy(problem);
          if (!problem) props.onChange(n);
        }}
        onBlur={() => {
          setText(null);
          setWhy("");
        }}
      />
      {why && <small className="field-problem">{why}</small>}
    </>
  );
}

function outOfBounds(n: number, integer: boolean, s: Schema): string {
  if (!Number.isFinite(n)) return "not a number";
  if (integer && !Number.isInteger(n)) return "a whole number";
  if (s.minimum !== undefined && n < s.minimum) return `at least ${s.minimum}`;
  if (s.maximum !== undefined && n > s.maximum) return `at most ${s.maximum}`;
  if (s.exclusiveMinimum !== undefined && n <= s.exclusiveMinimum) return `more than ${s.exclusiveMinimum}`;
  if (s.exclusiveMaximum !== undefined && n >= s.exclusiveMaximum) return `less than ${s.exclusiveMaximum}`;
  return "";
}

function JsonInput(props: { id: string; value: Json; onChange: (v: Json | undefined) => void }) {
  const [text, setText] = useState<string | null>(null);
  const shown = text ?? (props.value === undefined ? "" : JSON.stringify(props.value));
  return (
    <textarea
      id={props.id}
      rows={2}
      value={shown}
      onChange={(e) => {
        setText(e.target.value);
        try {
          props.onChange(e.target.value === "" ? undefined : JSON.parse(e.target.value));
        } catch {
          /* keep typing */
        }
      }}
      onBlur={() => setText(null)}
    />
  );
}
