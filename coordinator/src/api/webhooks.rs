//! Webhook subscriptions: where completion events are delivered (README, "Completion
//! events"), and every delivery with its last error.

use super::auth::Caller;
use super::{json_body, ApiError, ErrorBody};
use crate::db::sql;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use renderfleet_shared::events::EventType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const EXAMPLE: &str = r#"{"url": "https://orders.example.com/renderfleet", "secret": "at least 16 characters", "events": ["request.succeeded", "request.failed"]}"#;
/// Shortest secret accepted: an HMAC key guessable by brute force protects nothing.
const MIN_SECRET: usize = 16;
/// Deliveries shown with a subscription.
const RECENT: i64 = 50;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    /// `http://` or `https://`; it gets a `POST` per event.
    url: String,
    /// The HMAC-SHA256 key deliveries are signed with (at least 16 characters). Kept to sign;
    /// never shown again.
    #[schema(min_length = 16, max_length = 256)]
    secret: String,
    /// Which events to deliver.
    #[schema(min_items = 1)]
    events: Vec<EventType>,
    #[serde(default)]
    description: String,
}

/// How many of a subscription's deliveries are in each state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryCounts {
    pub(crate) pending: i64,
    pub(crate) delivered: i64,
    pub(crate) failed: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookView {
    pub(crate) id: Uuid,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    pub(crate) description: String,
    /// The token that created it.
    pub(crate) created_by: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) deliveries: DeliveryCounts,
    /// The latest deliveries, newest event first (`GET /v1/webhooks/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recent: Option<Vec<DeliveryView>>,
}

/// One event's delivery to one subscription.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryView {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub request_id: Uuid,
    pub event_at: DateTime<Utc>,
    /// `pending` (to be tried, or being tried), `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due, while pending.
    pub next_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status at the last attempt; none when it did not answer.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

fn view(r: &tokio_postgres::Row) -> WebhookView {
    WebhookView {
        id: r.get("id"),
        url: r.get("url"),
        events: r.get("event_types"),
        description: r.get("description"),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        deliveries: DeliveryCounts { pending: r.get("pending"), delivered: r.get("delivered"), failed: r.get("failed") },
        recent: None,
    }
}

/// A subscription's latest deliveries (also the console's).
pub(crate) async fn recent(client: &deadpool_postgres::Client, id: Uuid, limit: i64) -> Result<Vec<DeliveryView>, tokio_postgres::Error> {
    let rows = client.query(sql::WEBHOOK_DELIVERIES, &[&id, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let status: String = r.get("status");
            DeliveryView {
                event_id: r.get("event_id"),
                kind: r.get("type"),
                request_id: r.get("request_id"),
                event_at: r.get("event_at"),
                next_at: (status == "pending").then(|| r.get("next_at")),
                status,
                attempts: r.get("attempts"),
                last_attempt_at: r.get("last_attempt_at"),
                last_status: r.get("last_status"),
                last_error: r.get("last_error"),
                delivered_at: r.get("delivered_at"),
            }
        })
        .collect())
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// `POST /v1/webhooks`.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "events", request_body = WebhookInput,
    description = "Subscribes a URL to completion events: each is POSTed as JSON, signed in `Renderfleet-Signature` (README, \"Completion events\"), retried with backoff until the receiver answers 2xx.",
    responses((status = 201, body = WebhookView), (status = 422, body = ErrorBody, description = "a URL that is not http(s), a secret under 16 characters, no events")))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: WebhookInput = json_body(&headers, &body, EXAMPLE)?;
    let url = reqwest::Url::parse(input.url.trim()).map_err(|e| {
        refused("invalid_url", format!("`url` is not a URL ({e}); give the receiver's full address, e.g. https://orders.example.com/hook"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(refused("invalid_url", format!("`url` must be http:// or https:// with a host, not `{url}`")));
    }
    if input.secret.chars().count() < MIN_SECRET || input.secret.len() > 256 {
        return Err(refused(
            "weak_secret",
            format!("`secret` must be {MIN_SECRET} to 256 characters; make one with `openssl rand -hex 32`"),
        ));
    }
    let mut events: Vec<&str> = input.events.iter().map(|e| e.as_str()).collect();
    events.sort_unstable();
    events.dedup();
    if events.is_empty() {
        let all: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
        return Err(refused("no_events", format!("`events` is empty; name at least one of {}", all.join(", "))));
    }
    let who = caller.and_then(|c| c.0 .0.clone()).unwrap_or_default();
    let id = Uuid::now_v7();
    let client = state.pool.get().await?;
    let row = client.query_one(sql::INSERT_WEBHOOK, &[&id, &url.as_str(), &input.secret, &events, &input.description, &who]).await?;
    let view = WebhookView {
        id: row.get("id"),
        url: row.get("url"),
        events: row.get("event_types"),
        description: row.get("description"),
        created_by: row.get("created_by"),
        created_at: row.get("created_at"),
        deliveries: DeliveryCounts { pending: 0, delivered: 0, failed: 0 },
        recent: None,
    };
    tracing::info!(webhook = %id, url = %url, events = ?events, "webhook subscribed");
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/webhooks/{id}"))], Json(view)).into_response())
}

/// `GET /v1/webhooks`.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "events",
    responses((status = 200, body = Vec<WebhookView>, description = "every subscription with its delivery counts (never the secret)")))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let client = state.pool.get().await?;
    Ok(Json(views(&client, None).await?))
}

/// Every subscription (or only `id`) with its delivery counts; also the console's.
pub(crate) async fn views(client: &deadpool_postgres::Client, id: Option<Uuid>) -> Result<Vec<WebhookView>, tokio_postgres::Error> {
    Ok(client.query(sql::WEBHOOKS, &[&id]).await?.iter().map(view).collect())
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", format!("`{id}` is not a webhook id (a UUID from POST /v1/webhooks)"))
    })
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "webhook_not_found", format!("no webhook {id}; GET /v1/webhooks lists them"))
}

/// `GET /v1/webhooks/{id}`.
#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "get_webhook", tag = "events", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 200, body = WebhookView, description = "the subscription and its latest 50 deliveries: attempts, the receiver's last status and error"), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let client = state.pool.get().await?;
    let row = client.query_opt(sql::WEBHOOKS, &[&Some(id)]).await?.ok_or_else(|| not_found(id))?;
    let mut v = view(&row);
    v.recent = Some(recent(&client, id, RECENT).await?);
    Ok(Json(v))
}

/// `DELETE /v1/webhooks/{id}`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "events", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 204, description = "unsubscribed; its pending deliveries are dropped"), (status = 404, body = ErrorBody)))]
pub(super) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let client = state.pool.get().await?;
    client.query_opt(sql::DELETE_WEBHOOK, &[&id]).await?.ok_or_else(|| not_found(id))?;
    tracing::info!(webhook = %id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}
