//! Render requests: what the order system calls. It sees only the authoritative run of its
//! request, never a shadow.

use super::auth::{self, Caller};
use super::{json_body, ApiError, ErrorBody};
use crate::dispatch::request::{self, Outcome, RequestError};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use renderfleet_shared::cache::CacheMode;
use renderfleet_shared::scheduling::Priority;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = r#"{"order_line_id": "ol-1042", "subject": {"product": "…"}, "output_type": "still-2000-white"}"#;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RenderRequestInput {
    /// Not blank.
    #[schema(min_length = 1, pattern = "\\S")]
    order_line_id: String,
    /// What to render: the order line's product, a `cad_file` relative to the workers' `cad_dir`.
    #[schema(value_type = Object)]
    subject: Value,
    /// An output type's key (`GET /v1/output-types`).
    output_type: String,
    /// `refresh`: render every node anew instead of taking earlier results from the node
    /// result cache (a re-render on purpose); the new results replace the cached ones.
    #[serde(default)]
    cache: CacheMode,
    /// Where its tasks queue; none: the output type's `default_priority`.
    #[serde(default)]
    priority: Option<Priority>,
    /// Who it counts against for fair share (a shop, a customer); none: the API token's name.
    /// At most 64 printable characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    tenant: Option<String>,
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::UnknownOutputType(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_output_type", e.to_string()),
            RequestError::KeyReused(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", e.to_string()),
            RequestError::Workflow { ref problems, .. } => {
                let problems = problems.clone();
                ApiError { problems, ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "workflow_cannot_run", e.to_string()) }
            }
            RequestError::Db(db) => db.into(),
        }
    }
}

/// `POST /v1/render-requests` (needs an `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/render-requests", operation_id = "create_render_request", tag = "render requests", request_body = RenderRequestInput,
    description = "What the order system calls. The output type's rollout mode decides the runs; the answer shows only the authoritative one.",
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "\\S", description = "required, 1 to 255 characters: the same key again returns the first answer and never renders twice")),
    responses((status = 201, body = Object, description = "the request and its authoritative run"), (status = 200, body = Object, description = "this key was used before: the first answer"),
        (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 422, body = ErrorBody, description = "unknown output type, a key reused for a different request, a workflow that cannot run, a subject no worker could render")))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "send an `Idempotency-Key` header (1 to 255 characters, e.g. the order line id and output type): a retry with the same key returns the first answer instead of rendering twice",
            ))
        }
    };
    let input: RenderRequestInput = json_body(&headers, &body, EXAMPLE)?;
    if !input.subject.is_object() || input.order_line_id.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`order_line_id` must be non-empty and `subject` a JSON object describing what to render",
        ));
    }
    let problems = renderfleet_shared::graph::check_subject(&input.subject);
    if !problems.is_empty() {
        return Err(super::invalid_subject(problems));
    }
    let submitter = auth::submitter(input.tenant.as_deref(), caller.as_deref())?;
    let defaults = state.node_defaults();
    let req = request::Request {
        idempotency_key: &key,
        order_line_id: &input.order_line_id,
        subject: &input.subject,
        output_type: &input.output_type,
        cache: input.cache,
        priority: input.priority,
        submitter: &submitter,
    };
    match request::create(&state.pool, &req, defaults).await? {
        Outcome::New { request_id, mode, runs, ready } => {
            state.hot.send(ready);
            tracing::info!(%request_id, output_type = %input.output_type, %mode, runs = runs.len(), "render request accepted");
            let view = read(&state, request_id).await?;
            Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/render-requests/{request_id}"))], Json(view)).into_response())
        }
        Outcome::Existing(id) => Ok((StatusCode::OK, Json(read(&state, id).await?)).into_response()),
    }
}

/// The request and its authoritative run only.
async fn read(state: &AppState, id: Uuid) -> Result<Value, ApiError> {
    let client = state.pool.get().await?;
    let rows = client.query(crate::db::sql::GET_REQUEST, &[&id]).await?;
    let Some(first) = rows.first() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "request_not_found", format!("no render request {id}")));
    };
    // A legacy fallback, when there is one, answers instead of the failed graph run (it is
    // written in the transaction that fails that run).
    let role = |r: &&tokio_postgres::Row, want: &str| r.get::<_, Option<String>>(8).as_deref() == Some(want);
    let answering = rows.iter().find(|r| role(r, "fallback")).or_else(|| rows.iter().find(|r| role(r, "authoritative")));
    let run = answering.map(|r| {
        json!({
            "role": r.get::<_, Option<String>>(8),
            "run_id": r.get::<_, Uuid>(6),
            "pipeline": r.get::<_, String>(7),
            "status": r.get::<_, String>(9),
            "nodes_total": r.get::<_, i32>(10),
            "nodes_done": r.get::<_, i32>(11),
            "error": r.get::<_, Option<Value>>(12),
            "created_at": r.get::<_, chrono::DateTime<chrono::Utc>>(13),
            "finished_at": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(14),
        })
    });
    let artifact = match answering {
        Some(r) if r.get::<_, Option<String>>(9).as_deref() == Some("succeeded") => client
            .query_opt(crate::db::sql::DELIVERED, &[&r.get::<_, Uuid>(6), &first.get::<_, String>(4)])
            .await?
            .map(|a| a.get::<_, Value>(0)),
        _ => None,
    };
    let status = run.as_ref().map(|r| r["status"].clone()).unwrap_or(json!("unknown"));
    Ok(json!({
        "id": first.get::<_, Uuid>(0),
        "status": status,
        "artifact": artifact,
        "idempotency_key": first.get::<_, String>(1),
        "order_line_id": first.get::<_, String>(2),
        "subject": first.get::<_, Value>(3),
        "output_type": first.get::<_, String>(4),
        "received_at": first.get::<_, chrono::DateTime<chrono::Utc>>(5),
        "priority": Priority::from_rank(first.get("priority")).unwrap_or_default(),
        "submitter": first.get::<_, String>("submitter"),
        "run": run,
    }))
}

/// `GET /v1/render-requests/{id}`.
#[utoipa::path(get, path = "/v1/render-requests/{id}", operation_id = "get_render_request", tag = "render requests", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 200, body = Object, description = "the request, the run that answers it (the authoritative run, or its legacy fallback; never a shadow) and, once it succeeded, the delivered artifact"), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{id}` is not a render request id (a UUID from POST /v1/render-requests)"),
        )
    })?;
    Ok(Json(read(&state, id).await?))
}
