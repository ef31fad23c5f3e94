//! Runs: the list (filtered and paged on the server by keyset, so a large table stays fast)
//! and one run (its graph drawn as a DAG, every node's attempts, params, errors, log tail and
//! artifacts with previews; Cancel and Retry).

use super::dag;
use super::html::{self, esc, status_badge};
use super::session::Viewer;
use super::{db_err, forbidden, oops, some, stored_json};
use crate::api::auth::Scope;
use crate::db::sql;
use crate::dispatch::operate;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;
use uuid::Uuid;

/// Runs per page of the list.
const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub(super) struct RunFilter {
    status: Option<String>,
    output_type: Option<String>,
    pipeline: Option<String>,
    role: Option<String>,
    /// Created in the last N hours (an empty box is no filter).
    hours: Option<String>,
    /// Cursor: the last row of the previous page, `RFC3339_TIME,UUID`.
    after: Option<String>,
}

fn ms(a: DateTime<Utc>, b: Option<DateTime<Utc>>) -> String {
    b.map(|b| html::duration((b - a).num_milliseconds())).unwrap_or_default()
}

pub(super) async fn runs(State(state): State<AppState>, Query(f): Query<RunFilter>, viewer: axum::Extension<Viewer>) -> Response {
    let cursor: Option<(DateTime<Utc>, Uuid)> = some(&f.after).and_then(|c| {
        let (t, id) = c.split_once(',')?;
        Some((DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc), id.parse().ok()?))
    });
    let hours = some(&f.hours).and_then(|h| h.parse::<f64>().ok()).filter(|h| h.is_finite() && *h > 0.0 && *h < 1e6);
    let since = hours.and_then(|h| Utc::now().checked_sub_signed(chrono::Duration::milliseconds((h * 3_600_000.0) as i64)));
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let rows = match client
        .query(
            sql::CONSOLE_RUNS,
            &[
                &some(&f.status),
                &some(&f.output_type),
                &some(&f.pipeline),
                &some(&f.role),
                &since,
                &cursor.map(|c| c.0),
                &cursor.map(|c| c.1),
                &PAGE,
            ],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return db_err(e),
    };
    let select = |name: &str, current: &Option<String>, options: &[&str]| {
        let mut s = format!("<select name=\"{name}\" id=\"filter-{name}\"><option value=\"\">any {name}</option>");
        for o in options {
            let sel = if some(current) == Some(*o) { " selected" } else { "" };
            let _ = write!(s, "<option{sel}>{o}</option>");
        }
        s + "</select>"
    };
    let mut body = String::from("<form method=\"get\" class=\"filters\">");
    body += &select("status", &f.status, &["running", "succeeded", "failed", "cancelled"]);
    body += &select("pipeline", &f.pipeline, &["graph", "legacy"]);
    body += &select("role", &f.role, &["authoritative", "shadow", "fallback", "comparison"]);
    let _ = write!(
        body,
        "<input name=\"output_type\" placeholder=\"output type\" value=\"{}\"> <input name=\"hours\" placeholder=\"last N hours\" size=\"10\" value=\"{}\"> <button>Filter</button></form>",
        esc(some(&f.output_type).unwrap_or("")),
        hours.map(|h| h.to_string()).unwrap_or_default()
    );
    body += "<table id=\"runs\"><tr><th>run</th><th>status</th><th>pipeline</th><th>role</th><th>output type</th><th>created</th><th>took</th><th>nodes</th><th>failing node</th></tr>";
    for r in &rows {
        let id: Uuid = r.get(0);
        let created: DateTime<Utc> = r.get(5);
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/runs/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td class=\"error\">{}</td></tr>",
            &id.to_string()[..13],
            status_badge(r.get(1)),
            esc(r.get(2)),
            esc(r.get(3)),
            esc(r.get::<_, Option<&str>>(4).unwrap_or("")),
            created.format("%Y-%m-%d %H:%M:%S"),
            ms(created, r.get(6)),
            r.get::<_, i32>(7),
            r.get::<_, i32>(8),
            esc(r.get::<_, Option<&str>>(9).unwrap_or("")),
        );
    }
    body += "</table>";
    if rows.len() as i64 == PAGE {
        let last = rows.last().expect("a full page");
        let mut q: Vec<String> = Vec::new();
        for (k, v) in [("status", &f.status), ("output_type", &f.output_type), ("pipeline", &f.pipeline), ("role", &f.role)] {
            if let Some(v) = some(v) {
                q.push(format!("{k}={}", html::url(v)));
            }
        }
        if let Some(h) = hours {
            q.push(format!("hours={h}"));
        }
        q.push(format!("after={},{}", html::url(&last.get::<_, DateTime<Utc>>(5).to_rfc3339()), last.get::<_, Uuid>(0)));
        let _ = write!(body, "<p><a id=\"next-page\" href=\"/console/runs?{}\">next page →</a></p>", q.join("&"));
    }
    viewer.page("Runs", &body).into_response()
}

pub(super) async fn run(State(state): State<AppState>, Path(id): Path<String>, viewer: axum::Extension<Viewer>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else { return oops(StatusCode::BAD_REQUEST, "that is not a run id") };
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let Ok(Some(run)) = client.query_opt(sql::CONSOLE_RUN, &[&id]).await else {
        return oops(StatusCode::NOT_FOUND, &format!("no run {id}"));
    };
    let nodes = match client.query(sql::GET_NODE_RUNS, &[&id]).await {
        Ok(n) => n,
        Err(e) => return db_err(e),
    };
    let mut attempts: HashMap<Uuid, Vec<tokio_postgres::Row>> = HashMap::new();
    for a in client.query(sql::GET_ATTEMPTS, &[&id]).await.unwrap_or_default() {
        attempts.entry(a.get(0)).or_default().push(a);
    }
    let status: String = run.get(3);
    let created: DateTime<Utc> = run.get(9);
    let mut body = String::new();
    let _ = write!(
        body,
        "<div class=\"card\"><p>run <code id=\"run-id\">{id}</code> {} · pipeline <b>{}</b> · role <b>{}</b> · output type <b>{}</b> · {}/{} nodes · created {} · took {}</p>",
        status_badge(&status),
        esc(run.get(1)),
        esc(run.get(2)),
        esc(run.get::<_, Option<&str>>(12).unwrap_or("-")),
        run.get::<_, i32>(7),
        run.get::<_, i32>(6),
        created.format("%Y-%m-%d %H:%M:%S"),
        ms(created, run.get(10)),
    );
    if let Some(e) = run.get::<_, Option<Value>>(8) {
        let _ = write!(body, "<p class=\"error\" id=\"run-error\">{}</p>", esc(e["message"].as_str().unwrap_or(&e.to_string())));
    }
    let subject: Value = run.get(4);
    let _ = write!(body, "<p>subject <code>{}</code></p>", esc(&subject.to_string()));
    if viewer.may(Scope::Operate) {
        if status == "running" {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/console/runs/{id}/cancel\">{}<button id=\"cancel\">Cancel run</button></form>",
                viewer.field()
            );
        }
        if status == "failed" || status == "cancelled" {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/console/runs/{id}/retry\">{}<button id=\"retry\">Retry failed nodes</button></form>",
                viewer.field()
            );
        }
    }
    body += "</div>";
    let statuses: HashMap<String, String> = nodes.iter().map(|n| (n.get::<_, String>(1), n.get::<_, String>(3))).collect();
    let names: HashMap<String, String> = nodes.iter().map(|n| (n.get::<_, Uuid>(0).to_string(), n.get::<_, String>(1))).collect();
    body += &dag::svg(&run.get::<_, Value>(5), &statuses);
    for n in &nodes {
        let node_run: Uuid = n.get(0);
        let node_id: String = n.get(1);
        let nstatus: String = n.get(3);
        let open = if nstatus == "failed" { " open" } else { "" };
        let _ = write!(
            body,
            "<details class=\"node\" id=\"node-{}\"{open}><summary><b>{}</b> {}{} <span class=\"muted\">{} · attempt {}/{} · {}</span></summary>",
            esc(&node_id),
            esc(&node_id),
            status_badge(&nstatus),
            if n.get::<_, Option<Uuid>>("cached_from").is_some() { format!(" {}", status_badge("cached")) } else { String::new() },
            esc(n.get(2)),
            n.get::<_, i32>(4),
            n.get::<_, i32>(5),
            esc(n.get::<_, Option<&str>>(6).unwrap_or("")),
        );
        if let Some(from) = n.get::<_, Option<Uuid>>("cached_from") {
            let source = match n.get::<_, Option<Uuid>>("cached_from_run") {
                Some(r) => format!("<a href=\"/console/runs/{r}#node-{}\">run {r}</a>", esc(&node_id)),
                None => format!("node run {from} (its run is no longer kept)"),
            };
            let _ = write!(
                body,
                "<p class=\"cached\">{} outputs taken from the node result cache, produced by {source}; no worker ran it</p>",
                status_badge("cached")
            );
        }
        if let Some(e) = n.get::<_, Option<Value>>(11) {
            let _ = write!(body, "<p class=\"error node-error\">{}</p>", esc(e["message"].as_str().unwrap_or(&e.to_string())));
        }
        if let Some(t) = n.get::<_, Option<&str>>(12) {
            let _ = write!(body, "<pre class=\"log\">{}</pre>", esc(t));
        }
        body += "<table><tr><th>attempt</th><th>status</th><th>worker</th><th>started</th><th>ran</th><th>error</th></tr>";
        for a in attempts.get(&node_run).into_iter().flatten() {
            let started: Option<DateTime<Utc>> = a.get(4);
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
                a.get::<_, i32>(1),
                status_badge(a.get(2)),
                esc(a.get::<_, Option<&str>>(3).unwrap_or("")),
                started.map(|s| s.format("%H:%M:%S%.3f").to_string()).unwrap_or_default(),
                started.map(|s| ms(s, a.get(5))).unwrap_or_default(),
                esc(a.get::<_, Option<Value>>(6).and_then(|e| e["message"].as_str().map(String::from)).as_deref().unwrap_or("")),
            );
        }
        body += "</table>";
        // Where its inputs came from (upstream outputs, or the run's subject and materials).
        if let Some(Value::Object(bindings)) = n.get::<_, Option<Value>>(14) {
            let inputs: Vec<String> = bindings
                .iter()
                .map(|(port, b)| match (b["node_run"].as_str(), b["context"].as_str()) {
                    (Some(nr), _) => {
                        format!("{port} ← {}.{}", names.get(nr).map(String::as_str).unwrap_or("?"), b["port"].as_str().unwrap_or(""))
                    }
                    (_, Some(ctx)) => format!("{port} ← run {ctx}"),
                    _ => port.clone(),
                })
                .collect();
            if !inputs.is_empty() {
                let _ = write!(body, "<p class=\"inputs\">inputs: {}</p>", esc(&inputs.join(" · ")));
            }
        }
        let _ = write!(body, "<p>params <code>{}</code></p>", esc(&n.get::<_, Value>(13).to_string()));
        if let Some(Value::Object(outputs)) = n.get::<_, Option<Value>>(10) {
            // What a material map did not reach: targets that match no part, parts left on
            // the default material.
            let listed = |k: &str| outputs.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>());
            if let Some(unmatched) = listed("unmatched_targets").filter(|u| !u.is_empty()) {
                let _ = write!(
                    body,
                    "<p class=\"warning\" id=\"unmatched-{}\">map targets that match no part: {}</p>",
                    esc(&node_id),
                    esc(&unmatched.join(", "))
                );
            }
            if let Some(missing) = listed("missing").or_else(|| listed("missing_materials")).filter(|m| !m.is_empty()) {
                let _ = write!(body, "<p class=\"warning\">{} part(s) on the default material</p>", missing.len());
            }
            body += "<div class=\"artifacts\">";
            for (port, v) in &outputs {
                if let Some(r) = renderfleet_shared::artifact::ArtifactRef::from_value(v) {
                    body += &html::artifact(port, &r);
                    // A GLB with its part manifest beside it: the product preview can show it.
                    if let (true, Some(product)) = (r.kind == "glb" && outputs.contains_key("parts"), subject["product"].as_str()) {
                        let _ = write!(
                            body,
                            "<p><a class=\"preview-link\" href=\"/console/products/{}?run={id}\">3D preview with materials</a></p>",
                            html::url(product)
                        );
                    }
                    if r.kind == "frames" {
                        body += &frame_previews(&state, &r).await;
                    }
                }
            }
            body += "</div>";
        }
        body += "</details>";
    }
    // A running run's page reloads itself.
    let html = if status == "running" { viewer.refreshing_page("Run", &body) } else { viewer.page("Run", &body) };
    html.into_response()
}

pub(super) async fn cancel(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    if !viewer.may(Scope::Operate) {
        return forbidden(Scope::Operate);
    }
    match operate::cancel(&state, id, "cancelled from the console").await {
        Ok(_) => Redirect::to(&format!("/console/runs/{id}")).into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

pub(super) async fn retry(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    if !viewer.may(Scope::Operate) {
        return forbidden(Scope::Operate);
    }
    match operate::retry(&state, id).await {
        Ok(_) => Redirect::to(&format!("/console/runs/{id}")).into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// Thumbnails of a turntable's first frames, read from its manifest in the store.
pub(super) async fn frame_previews(state: &AppState, r: &renderfleet_shared::artifact::ArtifactRef) -> String {
    let Some(manifest) = stored_json::<Value>(state, &r.sha256).await else { return String::new() };
    let mut out = String::from("<div class=\"frames\">");
    for f in manifest["frames"].as_array().into_iter().flatten().take(8) {
        if let Some(sha) = f["sha256"].as_str().filter(|s| renderfleet_shared::artifact::is_sha256(s)) {
            let _ = write!(
                out,
                "<img src=\"/console/artifacts/{sha}\" alt=\"frame {}\" title=\"frame {}\" width=\"96\">",
                f["index"], f["index"]
            );
        }
    }
    out + "</div>"
}
