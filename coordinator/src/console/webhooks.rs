//! Webhook subscriptions and their deliveries: what the order system was told, how often it
//! was tried, and what the receiver answered last (the same views as `GET /v1/webhooks`).

use super::html::{esc, status_badge};
use super::session::Viewer;
use super::{db_err, oops};
use crate::api::webhooks::{recent, views};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::fmt::Write;
use uuid::Uuid;

/// Deliveries shown on a subscription's page.
const RECENT: i64 = 100;

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

pub(super) async fn list(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let hooks = match views(&client, None).await {
        Ok(h) => h,
        Err(e) => return db_err(e),
    };
    let mut body = String::from(
        "<p>Completion events are POSTed to each subscription, signed, and retried with backoff until the receiver answers 2xx (README, \"Completion events\"). Subscribe with <code>POST /v1/webhooks</code>.</p>",
    );
    if hooks.is_empty() {
        body += "<p class=\"empty\">No subscriptions yet.</p>";
    } else {
        body += "<table id=\"webhooks\"><tr><th>receiver</th><th>events</th><th>pending</th><th>delivered</th><th>given up</th><th>created</th></tr>";
        for h in &hooks {
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/webhooks/{}\">{}</a><br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} by {}</td></tr>",
                h.id,
                esc(&h.url),
                esc(&h.description),
                esc(&h.events.join(", ")),
                h.deliveries.pending,
                h.deliveries.delivered,
                h.deliveries.failed,
                when(Some(h.created_at)),
                esc(&h.created_by)
            );
        }
        body += "</table>";
    }
    viewer.page("Webhooks", &body).into_response()
}

pub(super) async fn page(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let hook = match views(&client, Some(id)).await {
        Ok(mut h) if !h.is_empty() => h.remove(0),
        Ok(_) => return oops(StatusCode::NOT_FOUND, &format!("no webhook {id}; the Webhooks page lists them")),
        Err(e) => return db_err(e),
    };
    let deliveries = match recent(&client, id, RECENT).await {
        Ok(d) => d,
        Err(e) => return db_err(e),
    };
    let mut body = format!(
        "<p><b>{}</b> gets {}: {} pending, {} delivered, {} given up.</p>",
        esc(&hook.url),
        esc(&hook.events.join(", ")),
        hook.deliveries.pending,
        hook.deliveries.delivered,
        hook.deliveries.failed
    );
    if deliveries.is_empty() {
        body += "<p class=\"empty\">No deliveries yet: events come when requests end.</p>";
    } else {
        body += "<table id=\"deliveries\"><tr><th>event</th><th>request</th><th>status</th><th>attempts</th><th>receiver said</th><th>next attempt</th><th>delivered</th></tr>";
        for d in &deliveries {
            let said = match (d.last_status, &d.last_error) {
                (Some(code), Some(e)) => format!("HTTP {code}: {}", esc(e)),
                (Some(code), None) => format!("HTTP {code}"),
                (None, Some(e)) => esc(e),
                (None, None) => String::new(),
            };
            let _ = write!(
                body,
                "<tr><td>{}<br><small>{} · {}</small></td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"error\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.kind),
                d.event_id,
                when(Some(d.event_at)),
                d.request_id,
                status_badge(&d.status),
                d.attempts,
                said,
                when(d.next_at),
                when(d.delivered_at)
            );
        }
        body += "</table>";
    }
    viewer.page("Webhook", &body).into_response()
}
