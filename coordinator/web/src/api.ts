// The console's bundles talk to the coordinator's own API, through the console's session:
// the same paths as /v1 under /console/api, authorised by the signed-in session's scopes,
// with the session's CSRF token (the page's `[data-csrf]`) on every write.
import type { ErrorBody } from "./types";

const csrf = document.querySelector<HTMLElement>("[data-csrf]")?.dataset.csrf ?? "";

export class ApiError extends Error {
  constructor(
    public status: number,
    public body: Partial<ErrorBody>,
  ) {
    super(body.message ?? `HTTP ${status}`);
  }
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  const r = await fetch(`/console/api${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await r.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError(r.status, { error: "not_json", message: `${r.status}: ${text.slice(0, 200)}` });
  }
  if (!r.ok) throw new ApiError(r.status, (parsed ?? {}) as Partial<ErrorBody>);
  return parsed as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => call<T>("POST", path, body);
export const put = <T>(path: string, body?: unknown) => call<T>("PUT", path, body);
