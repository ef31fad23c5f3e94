//! The web console at `/console`: server-rendered HTML (no front-end build, no CDN: it works
//! with no network) over the same database and the same operations as the API, so a failed
//! render is debugged without SQL.
//!
//! Pages: runs (filtered and paged on the server by keyset, so a large table stays fast),
//! a run (its graph drawn as a DAG, every node's attempts, params, errors, log tail and
//! artifacts with previews; cancel and retry), shadow comparisons (legacy and graph images
//! beside their diff), rollout (mode, gate, events; promote and rollback) and workers.
//!
//! Sign-in (`session`): an API token presented once starts a server-side session; reading
//! needs `read`, cancel/retry/rollback `operate`, promote `admin`, dispatch `submit`. Every
//! form that changes something carries the session's CSRF token, and `guard` lets a
//! state-changing request through only from the console's own origin and puts the security
//! headers on every response.

mod assets;
mod comparison;
mod dag;
mod editor;
mod guard;
mod html;
mod products;
mod session;
mod webhooks;

use crate::api::auth::{Scope, Tokens};
use crate::db::sql;
use crate::dispatch::operate;
use crate::rollout;
use crate::AppState;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use html::{esc, page, status_badge};
use renderfleet_shared::cache::CacheMode;
use renderfleet_shared::gate::GateConfig;
use serde::Deserialize;
use serde_json::Value;
use session::{Console, Viewer};
use std::collections::HashMap;
use std::fmt::Write;
use uuid::Uuid;

const PAGE: i64 = 50;

/// The console's routes, under `/console`.
/// `api` is the API's router: the workflow editor's calls go to it through the session.
pub fn router(state: AppState, tokens: Tokens, api: Router) -> Router {
    let https = state.config.console.https;
    let console = Console { state: state.clone(), tokens };
    let pages = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/runs") }))
        .route("/console/runs", get(runs))
        .route("/console/runs/{id}", get(run))
        .route("/console/runs/{id}/cancel", post(cancel))
        .route("/console/runs/{id}/retry", post(retry))
        .route("/console/artifacts/{sha}", get(artifact))
        .route("/console/comparisons", get(comparison::list))
        .route("/console/comparisons/{id}", get(comparison::page))
        .route("/console/rollout", get(rollout_page))
        .route("/console/rollout/{key}/promote", post(promote))
        .route("/console/rollout/{key}/rollback", post(rollback))
        .route("/console/products/{product}", get(products::page))
        .route("/console/workers", get(workers))
        .route("/console/workers/{id}/release", post(release_worker))
        .route("/console/webhooks", get(webhooks::list))
        .route("/console/webhooks/{id}", get(webhooks::page))
        .route("/console/workflows", get(workflows))
        .route("/console/workflows/new", get(editor::new))
        .route("/console/workflows/{id}/edit", get(editor::edit))
        .route("/console/api/{*rest}", axum::routing::any(move |viewer, request| editor::api_proxy(api.clone(), viewer, request)))
        .route("/console/workflows/{id}", get(workflow))
        .route("/console/workflows/{id}/preflight", post(workflow_preflight))
        .route("/console/workflows/{id}/dispatch", post(workflow_dispatch))
        .route("/console/logout", get(session::logout_form).post(session::logout))
        .route_layer(middleware::from_fn(crate::api::refuse_nul_in_url))
        .route_layer(middleware::from_fn_with_state(console.clone(), session::signed_in))
        .with_state(state);
    Router::new()
        .route("/console/login", get(session::login_form).post(session::login))
        .with_state(console)
        .route("/console/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], html::STYLE) }))
        .route("/console/assets/{file}", get(assets::file))
        .merge(pages)
        .layer(middleware::from_fn_with_state(https, guard::guard))
}

/// An error page that says what went wrong.
fn oops(status: StatusCode, message: &str) -> Response {
    (status, Html(page("Error", &format!("<p class=\"error\">{}</p>", esc(message)), None, false))).into_response()
}

fn db_err(e: impl std::fmt::Display) -> Response {
    oops(StatusCode::SERVICE_UNAVAILABLE, &format!("the database is not answering ({e}); try again in a moment"))
}

fn forbidden(scope: Scope) -> Response {
    oops(StatusCode::FORBIDDEN, &format!("this needs a token with scope `{}`; sign in with one at /console/login", scope.as_str()))
}

#[derive(Deserialize, Default)]
struct RunFilter {
    status: Option<String>,
    output_type: Option<String>,
    pipeline: Option<String>,
    role: Option<String>,
    /// Created in the last N hours (an empty box is no filter).
    hours: Option<String>,
    /// Cursor: the last row of the previous page, `RFC3339_TIME,UUID`.
    after: Option<String>,
}

fn some(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn ms(a: DateTime<Utc>, b: Option<DateTime<Utc>>) -> String {
    b.map(|b| html::duration((b - a).num_milliseconds())).unwrap_or_default()
}

async fn runs(State(state): State<AppState>, Query(f): Query<RunFilter>, viewer: axum::Extension<Viewer>) -> Response {
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

async fn run(State(state): State<AppState>, Path(id): Path<String>, viewer: axum::Extension<Viewer>) -> Response {
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

async fn cancel(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    if !viewer.may(Scope::Operate) {
        return forbidden(Scope::Operate);
    }
    match operate::cancel(&state, id, "cancelled from the console").await {
        Ok(_) => Redirect::to(&format!("/console/runs/{id}")).into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// The release button's form.
#[derive(Deserialize)]
struct ReleaseForm {
    module: Option<String>,
}

async fn release_worker(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: axum::Extension<Viewer>,
    axum::Form(form): axum::Form<ReleaseForm>,
) -> Response {
    if !viewer.may(Scope::Operate) {
        return forbidden(Scope::Operate);
    }
    match operate::release(&state, &id, form.module.as_deref()).await {
        Ok(_) => Redirect::to("/console/workers").into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn retry(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    if !viewer.may(Scope::Operate) {
        return forbidden(Scope::Operate);
    }
    match operate::retry(&state, id).await {
        Ok(_) => Redirect::to(&format!("/console/runs/{id}")).into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// Where artifact `sha` lives in the store the console reads (`sha256/ab/<sha>`): `None`
/// when the console has no artifacts_dir or `sha` is not a well-formed hash (checked
/// before it becomes a path).
fn stored(state: &AppState, sha: &str) -> Option<std::path::PathBuf> {
    let relative = renderfleet_shared::artifact::store_path(sha)?;
    (!state.config.artifacts_dir.is_empty()).then(|| std::path::Path::new(&state.config.artifacts_dir).join(relative))
}

/// A JSON artifact (a turntable's frames, a part manifest) read from the store.
async fn stored_json<T: serde::de::DeserializeOwned>(state: &AppState, sha: &str) -> Option<T> {
    serde_json::from_slice(&tokio::fs::read(stored(state, sha)?).await.ok()?).ok()
}

/// An artifact from the store, by its hash.
async fn artifact(State(state): State<AppState>, Path(sha): Path<String>) -> Response {
    match crate::api::artifacts::stream(&state, &sha).await {
        Ok(r) => r,
        Err(e) => oops(e.status, &e.message),
    }
}

async fn rollout_page(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let types = match client.query(sql::ROLLOUT_STATES, &[]).await {
        Ok(r) => r,
        Err(e) => return db_err(e),
    };
    let mut body = String::new();
    for t in &types {
        let (key, mode): (String, String) = (t.get(0), t.get(1));
        let cfg: GateConfig = serde_json::from_value(t.get(2)).unwrap_or_default();
        let gate = match rollout::gate(&client, &key, &cfg).await {
            Ok(g) => g,
            Err(e) => return db_err(e),
        };
        let _ = write!(
            body,
            "<div class=\"card rollout\" id=\"rollout-{k}\"><h3>{k}</h3><p>mode <b class=\"mode\">{mode}</b> · gate {} · {} samples of {} · mismatch {:.2}% (net {:.2}%) · graph errors {:.2}% vs legacy {:.2}%{}</p>",
            status_badge(gate.status.as_str()),
            gate.samples,
            gate.min_samples,
            gate.mismatch_rate * 100.0,
            gate.net_mismatch_rate * 100.0,
            gate.candidate_error_rate * 100.0,
            gate.control_error_rate * 100.0,
            gate.duration_ratio.map(|r| format!(" · p95 duration {r:.2}×")).unwrap_or_default(),
            k = esc(&key),
        );
        for r in &gate.reasons {
            let _ = write!(body, "<p class=\"muted\">– {}</p>", esc(r));
        }
        // Promote: legacy → shadow always; shadow → graph only on a passing gate.
        let blocked = match mode.as_str() {
            "shadow" if gate.status != renderfleet_shared::gate::GateStatus::Pass => Some(format!("the gate is {}", gate.status.as_str())),
            "graph" => Some("already on the graph pipeline".to_string()),
            _ if !viewer.may(Scope::Admin) => Some("needs an admin token".to_string()),
            _ => None,
        };
        match blocked {
            Some(why) => {
                let _ =
                    write!(body, "<button disabled title=\"{0}\">Promote</button> <span class=\"muted\">promote: {0}</span> ", esc(&why));
            }
            None => {
                let _ = write!(body, "<form method=\"post\" action=\"/console/rollout/{0}/promote\" class=\"inline\">{1}<button id=\"promote-{0}\">Promote</button></form> ", esc(&key), viewer.field());
            }
        }
        if mode != "legacy" && viewer.may(Scope::Operate) {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/console/rollout/{0}/rollback\" class=\"inline\">{1}<input type=\"hidden\" name=\"reason\" value=\"rolled back from the console\"><button id=\"rollback-{0}\">Roll back to legacy</button></form>",
                esc(&key),
                viewer.field()
            );
        }
        let events = client.query(sql::ROLLOUT_EVENTS, &[&key, &5i64]).await.unwrap_or_default();
        if !events.is_empty() {
            body += "<table><tr><th>at</th><th>from</th><th>to</th><th>actor</th><th>reason</th></tr>";
            for e in &events {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e.get::<_, DateTime<Utc>>(7).format("%Y-%m-%d %H:%M:%S"),
                    esc(e.get(1)),
                    esc(e.get(2)),
                    esc(e.get(4)),
                    esc(e.get(3))
                );
            }
            body += "</table>";
        }
        body += "</div>";
    }
    if types.is_empty() {
        body += "<p class=\"muted\">No output types yet.</p>";
    }
    viewer.page("Rollout", &body).into_response()
}

#[derive(Deserialize, Default)]
struct ReasonForm {
    reason: Option<String>,
}

async fn promote(State(state): State<AppState>, Path(key): Path<String>, viewer: axum::Extension<Viewer>) -> Response {
    if !viewer.may(Scope::Admin) {
        return forbidden(Scope::Admin);
    }
    match rollout::promote(&state, &key, false, Some("promoted from the console".into()), &format!("console:{}", viewer.name())).await {
        Ok(_) => Redirect::to("/console/rollout").into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn rollback(
    State(state): State<AppState>,
    Path(key): Path<String>,
    viewer: axum::Extension<Viewer>,
    Form(f): Form<ReasonForm>,
) -> Response {
    if !viewer.may(Scope::Operate) {
        return forbidden(Scope::Operate);
    }
    let reason = f.reason.unwrap_or_else(|| "rolled back from the console".into());
    match rollout::set_mode(&state, &key, None, "legacy", &reason, &format!("console:{}", viewer.name()), false, Value::Null).await {
        Ok(_) => Redirect::to("/console/rollout").into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn workers(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let workers = match crate::api::workers::list_views(&state).await {
        Ok(w) => w,
        Err(e) => return db_err(e.message),
    };
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    let mut tasks: HashMap<String, Vec<String>> = HashMap::new();
    for t in client.query(sql::CONSOLE_WORKER_TASKS, &[&ids]).await.unwrap_or_default() {
        let run: Uuid = t.get("run_id");
        tasks.entry(t.get("worker_id")).or_default().push(format!(
            "<a href=\"/console/runs/{run}\">{}</a> {}",
            esc(t.get("node_id")),
            esc(t.get("module_key"))
        ));
    }
    let mut body = String::from(
        "<table id=\"workers\"><tr><th>worker</th><th>host</th><th>status</th><th>slots in use</th><th>current tasks</th><th>modules</th><th>quarantined</th><th>tools</th><th>last heartbeat</th></tr>",
    );
    let now = chrono::Utc::now();
    for w in &workers {
        let mut quarantined = String::new();
        for q in &w.quarantined {
            let left = q.until.map(|u| format!("{} min left", (u - now).num_minutes().max(0))).unwrap_or_default();
            let _ = write!(
                quarantined,
                "<div class=\"quarantine\"><span class=\"badge s-failed\">{}</span> after {} failures in a row, {left}<br><small>{}</small>",
                esc(&q.module),
                q.failures,
                esc(&q.last_error)
            );
            if viewer.may(Scope::Operate) {
                let _ = write!(
                    quarantined,
                    "<form method=\"post\" action=\"/console/workers/{}/release\" class=\"inline\">{}<input type=\"hidden\" name=\"module\" value=\"{}\"><button id=\"release-{}-{}\">Release</button></form>",
                    esc(&w.id),
                    viewer.field(),
                    esc(&q.module),
                    esc(&w.id),
                    esc(&q.module)
                );
            }
            quarantined.push_str("</div>");
        }
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"tools\">{}</td><td>{:.0} s ago</td></tr>",
            esc(&w.id),
            esc(&w.host),
            status_badge(&w.status),
            w.running,
            w.concurrency,
            tasks.get(&w.id).map(|t| t.join("<br>")).unwrap_or_default(),
            esc(&w.modules.join(", ")),
            quarantined,
            w.tools
                .as_object()
                .map(|t| t.iter().map(|(k, v)| format!("{} {}", esc(k), esc(v.as_str().unwrap_or("?")))).collect::<Vec<_>>().join("<br>"))
                .unwrap_or_default(),
            (now - w.last_seen).num_milliseconds() as f64 / 1000.0
        );
    }
    body += "</table><h3>queues</h3><table id=\"queues\"><tr><th>module</th><th>tasks waiting</th><th>consumers</th></tr>";
    let topo = renderfleet_platform::broker::Topology::new(state.config.broker_prefix.clone());
    let channel = state.control.lock().await.clone();
    for module in renderfleet_shared::registry::registry().module_keys() {
        let depth = match &channel {
            Some(ch) => {
                let opts = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
                match ch.queue_declare(topo.task_queue(module).as_str().into(), opts, Default::default()).await {
                    Ok(q) => format!("{}</td><td>{}", q.message_count(), q.consumer_count()),
                    Err(_) => "?</td><td>?".into(),
                }
            }
            None => "broker down</td><td>".into(),
        };
        let _ = write!(body, "<tr><td>{module}</td><td>{depth}</td></tr>");
    }
    body += "</table>";
    viewer.page("Workers", &body).into_response()
}

async fn workflows(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let rows = match client.query(sql::WORKFLOWS_LATEST, &[]).await {
        Ok(r) => r,
        Err(e) => return db_err(e),
    };
    let mut body = String::from(
        "<p><a href=\"/console/workflows/new?family=order_line\" id=\"new-order-line\">New order_line workflow</a> · \
            <a href=\"/console/workflows/new?family=cad_file\" id=\"new-cad-file\">New cad_file workflow</a></p>\
            <table id=\"workflows\"><tr><th>workflow</th><th>name</th><th>family</th><th>version</th><th>created</th><th></th></tr>",
    );
    for r in &rows {
        let id: Uuid = r.get(0);
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/workflows/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/console/workflows/{id}/edit\">edit</a></td></tr>",
            &id.to_string()[..13],
            esc(r.get(2)),
            esc(r.get(3)),
            r.get::<_, i32>(1),
            r.get::<_, DateTime<Utc>>(7).format("%Y-%m-%d %H:%M:%S")
        );
    }
    body += "</table>";
    viewer.page("Workflows", &body).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DispatchForm {
    output_type: String,
    subject: String,
    /// The checkbox "render anew": present when ticked.
    #[serde(default)]
    refresh: Option<String>,
}

/// The workflow's graph, and a form to preflight or dispatch it for a subject and an output type.
async fn workflow_page(state: &AppState, viewer: &Viewer, id: Uuid, form: &DispatchForm, result: &str) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let Ok(Some(w)) = client.query_opt(sql::WORKFLOW_LATEST, &[&id]).await else {
        return oops(StatusCode::NOT_FOUND, &format!("no workflow {id}"));
    };
    let types = client.query(sql::OUTPUT_TYPES, &[]).await.unwrap_or_default();
    let mut options = String::new();
    for t in types.iter().filter(|t| t.get::<_, Option<Uuid>>(4) == Some(id)) {
        let key: String = t.get(0);
        let sel = if key == form.output_type { " selected" } else { "" };
        let _ = write!(options, "<option{sel}>{}</option>", esc(&key));
    }
    let subject = if form.subject.is_empty() { "{\"cad_file\": \"as1-oc-214.stp\", \"product\": \"as1\"}" } else { &form.subject };
    let mut body = format!(
        "<div class=\"card\"><p>workflow <code>{id}</code> <b>{}</b> ({}) version {} · <a href=\"/console/workflows/{id}/edit\" id=\"edit-workflow\">Open in the editor</a></p></div>",
        esc(w.get(2)),
        esc(w.get(3)),
        w.get::<_, i32>(1)
    );
    body += &dag::svg(&w.get::<_, Value>(4), &HashMap::new());
    let _ = write!(
        body,
        "<form method=\"post\" class=\"card\" id=\"dispatch-form\">{}<p>output type <select name=\"output_type\" id=\"output-type\">{options}</select> \
         (those bound to this workflow)</p><p>subject<br><textarea name=\"subject\" id=\"subject\" rows=\"3\" cols=\"80\">{}</textarea></p>\
         <p><label><input type=\"checkbox\" name=\"refresh\" value=\"1\" id=\"refresh\"> render anew (do not take nodes from the cache)</label></p>\
         <button formaction=\"/console/workflows/{id}/preflight\" id=\"preflight\">Preflight</button> \
         <button formaction=\"/console/workflows/{id}/dispatch\" id=\"dispatch\">Dispatch a render request</button></form>{result}",
        viewer.field(),
        esc(subject)
    );
    viewer.page("Workflow", &body).into_response()
}

async fn workflow(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    workflow_page(&state, &viewer, id, &DispatchForm::default(), "").await
}

async fn workflow_preflight(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    viewer: axum::Extension<Viewer>,
    Form(f): Form<DispatchForm>,
) -> Response {
    let subject: Value = match serde_json::from_str(&f.subject) {
        Ok(v) => v,
        Err(e) => {
            return workflow_page(
                &state,
                &viewer,
                id,
                &f,
                &format!("<p class=\"error\">the subject is not JSON: {}</p>", esc(&e.to_string())),
            )
            .await
        }
    };
    let input = crate::api::workflows::PreflightInput {
        subject,
        output_type: Some(f.output_type.clone()).filter(|o| !o.is_empty()),
        version: None,
    };
    let result = match crate::api::workflows::preflight_report(&state, id, input).await {
        Ok(report) => {
            let mut r = format!(
                "<div class=\"card\" id=\"preflight-result\"><p>preflight: <b>{}</b></p>",
                if report["ok"] == true { "READY" } else { "NOT READY" }
            );
            for p in report["problems"].as_array().into_iter().flatten() {
                let _ = write!(
                    r,
                    "<p class=\"error\">{} [{}] {}</p>",
                    esc(p["severity"].as_str().unwrap_or("")),
                    esc(p["code"].as_str().unwrap_or("")),
                    esc(p["message"].as_str().unwrap_or(""))
                );
            }
            r += "<table><tr><th>node</th><th>type</th><th>module</th><th>live workers</th><th>params</th></tr>";
            for n in report["nodes"].as_array().into_iter().flatten() {
                let module = n["module"].as_str().unwrap_or("");
                let who: Vec<&str> =
                    report["modules"][module]["workers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let _ = write!(
                    r,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(n["id"].as_str().unwrap_or("")),
                    esc(n["type"].as_str().unwrap_or("")),
                    esc(module),
                    esc(&who.join(", ")),
                    esc(&n["params"].to_string())
                );
            }
            r + "</table></div>"
        }
        Err(e) => format!("<p class=\"error\">{}</p>", esc(&e.message)),
    };
    workflow_page(&state, &viewer, id, &f, &result).await
}

async fn workflow_dispatch(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    viewer: axum::Extension<Viewer>,
    Form(f): Form<DispatchForm>,
) -> Response {
    if !viewer.may(Scope::Submit) {
        return forbidden(Scope::Submit);
    }
    let subject: Value = match serde_json::from_str::<Value>(&f.subject) {
        Ok(v) if v.is_object() => v,
        _ => return workflow_page(&state, &viewer, id, &f, "<p class=\"error\">the subject must be a JSON object</p>").await,
    };
    let key = format!("console:{}", Uuid::now_v7());
    let req = crate::dispatch::request::Request {
        idempotency_key: &key,
        order_line_id: "console",
        subject: &subject,
        output_type: &f.output_type,
        cache: if f.refresh.is_some() { CacheMode::Refresh } else { CacheMode::Use },
        // Someone at the console is waiting for it.
        priority: Some(renderfleet_shared::scheduling::Priority::Interactive),
        submitter: viewer.name(),
    };
    match crate::dispatch::request::create(&state.pool, &state.hot, &req, state.node_defaults()).await {
        Ok(crate::dispatch::request::Outcome::New { runs, .. }) => {
            let run = runs.iter().find(|r| r.role == "authoritative").map(|r| r.run_id);
            Redirect::to(&run.map(|r| format!("/console/runs/{r}")).unwrap_or_else(|| "/console/runs".into())).into_response()
        }
        Ok(_) => Redirect::to("/console/runs").into_response(),
        Err(e) => workflow_page(&state, &viewer, id, &f, &format!("<p class=\"error\">{}</p>", esc(&e.to_string()))).await,
    }
}

/// Thumbnails of a turntable's first frames, read from its manifest in the store.
async fn frame_previews(state: &AppState, r: &renderfleet_shared::artifact::ArtifactRef) -> String {
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
