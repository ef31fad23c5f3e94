//! Workers: what each live worker takes, its slots, tools and current tasks, the modules it
//! quarantined (with a Release button), and the tasks waiting per module queue.

use super::html::{esc, status_badge};
use super::session::Viewer;
use super::{db_err, forbidden, oops};
use crate::api::auth::Scope;
use crate::db::sql;
use crate::dispatch::operate;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write;
use uuid::Uuid;

/// The release button's form.
#[derive(Deserialize)]
pub(super) struct ReleaseForm {
    module: Option<String>,
}

pub(super) async fn release_worker(
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

pub(super) async fn workers(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
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
