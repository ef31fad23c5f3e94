//! Rollout: each output type's mode, gate and history; Promote and Roll back.

use super::html::{esc, status_badge};
use super::session::Viewer;
use super::{db_err, forbidden, oops};
use crate::api::auth::Scope;
use crate::db::sql;
use crate::rollout;
use crate::AppState;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use renderfleet_shared::gate::GateConfig;
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write;

pub(super) async fn rollout_page(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
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
pub(super) struct ReasonForm {
    reason: Option<String>,
}

pub(super) async fn promote(State(state): State<AppState>, Path(key): Path<String>, viewer: axum::Extension<Viewer>) -> Response {
    if !viewer.may(Scope::Admin) {
        return forbidden(Scope::Admin);
    }
    match rollout::promote(&state, &key, false, Some("promoted from the console".into()), &format!("console:{}", viewer.name())).await {
        Ok(_) => Redirect::to("/console/rollout").into_response(),
        Err(e) => oops(StatusCode::CONFLICT, &e.to_string()),
    }
}

pub(super) async fn rollback(
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
