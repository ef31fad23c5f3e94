//! Workflows: the list, one workflow's graph, and a form to preflight it or dispatch it for
//! a subject and an output type.

use super::dag;
use super::html::esc;
use super::session::Viewer;
use super::{db_err, forbidden, oops};
use crate::api::auth::Scope;
use crate::db::sql;
use crate::AppState;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use renderfleet_shared::cache::CacheMode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;
use uuid::Uuid;

pub(super) async fn workflows(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
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
pub(super) struct DispatchForm {
    output_type: String,
    subject: String,
    /// The checkbox "render anew": present when ticked.
    #[serde(default)]
    refresh: Option<String>,
}

/// The workflow's graph, and a form to preflight or dispatch it for a subject and an output type.
pub(super) async fn workflow_page(state: &AppState, viewer: &Viewer, id: Uuid, form: &DispatchForm, result: &str) -> Response {
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

pub(super) async fn workflow(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    workflow_page(&state, &viewer, id, &DispatchForm::default(), "").await
}

pub(super) async fn workflow_preflight(
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

pub(super) async fn workflow_dispatch(
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
