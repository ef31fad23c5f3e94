//! Render requests: what the order system calls. It sees only the authoritative run of its
//! request, never a shadow; it may send many at once (a batch), cancel one, and read its
//! progress and estimated finish.

use super::auth::{self, Caller};
use super::{json_body, ApiError, ErrorBody};
use crate::dispatch::request::{self, Outcome, RequestError};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use renderfleet_shared::cache::CacheMode;
use renderfleet_shared::scheduling::Priority;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = r#"{"order_line_id": "ol-1042", "subject": {"product": "…"}, "output_type": "still-2000-white"}"#;
const BATCH_EXAMPLE: &str = r#"{"requests": [{"idempotency_key": "ol-1042/still", "order_line_id": "ol-1042", "subject": {"product": "…"}, "output_type": "still-2000-white"}]}"#;

/// Most lines in one batch: a batch is answered in one response, so its size bounds how long
/// the order system waits for it (under three seconds per thousand lines in the benchmark).
const BATCH_MAX: usize = 1000;

/// How many lines of a batch are dispatched at once: each takes a pooled connection.
const BATCH_PARALLEL: usize = 8;

/// How many recent runs of an output type its estimates are taken from.
const ESTIMATE_FROM: i64 = 20;

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
    let (status, id) = submit(&state, caller.as_deref(), &key, input).await?;
    let view = read(&state, id).await?;
    Ok(match status {
        StatusCode::CREATED => (status, [(header::LOCATION, format!("/v1/render-requests/{id}"))], Json(view)).into_response(),
        _ => (status, Json(view)).into_response(),
    })
}

/// Checks and dispatches one request: 201 and its id when new, 200 and the first request's
/// id when `key` was used for the same request before.
async fn submit(state: &AppState, caller: Option<&Caller>, key: &str, input: RenderRequestInput) -> Result<(StatusCode, Uuid), ApiError> {
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
    let submitter = auth::submitter(input.tenant.as_deref(), caller)?;
    let defaults = state.node_defaults();
    let req = request::Request {
        idempotency_key: key,
        order_line_id: &input.order_line_id,
        subject: &input.subject,
        output_type: &input.output_type,
        cache: input.cache,
        priority: input.priority,
        submitter: &submitter,
    };
    match request::create(&state.pool, &state.hot, &req, defaults).await? {
        Outcome::New { request_id, mode, runs } => {
            tracing::info!(%request_id, output_type = %input.output_type, %mode, runs = runs.len(), "render request accepted");
            Ok((StatusCode::CREATED, request_id))
        }
        Outcome::Existing(id) => Ok((StatusCode::OK, id)),
    }
}

/// `POST /v1/render-requests/batch` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchInput {
    /// 1 to 1000 lines, each a render request (as `POST /v1/render-requests` takes) with its
    /// own `idempotency_key`. Lines are checked one by one: one that is not such an object is
    /// refused in its own result, and the others go on.
    #[schema(value_type = Vec<Value>, min_items = 1, max_items = 1000)]
    requests: Vec<Value>,
}

/// One line of a batch: its request, or why it was refused.
async fn batch_line(state: &AppState, caller: Option<&Caller>, line: Value) -> Result<(StatusCode, Value), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m);
    let Value::Object(mut fields) = line else {
        return Err(bad(format!("a line must be a JSON object; expected {EXAMPLE} with an `idempotency_key`")));
    };
    let key = match fields.remove("idempotency_key") {
        Some(Value::String(k)) if !k.trim().is_empty() && k.len() <= 255 => k,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "give the line an `idempotency_key` (1 to 255 characters, e.g. the order line id and output type): a retried batch returns the first answer for each line instead of rendering twice",
            ))
        }
    };
    let input: RenderRequestInput = serde_json::from_value(Value::Object(fields))
        .map_err(|e| bad(format!("the line is not a valid request: {e}; expected {EXAMPLE}")))?;
    let order_line_id = input.order_line_id.clone();
    let (status, id) = submit(state, caller, &key, input).await?;
    // Short, so that a thousand lines answer quickly; the whole view is one GET away.
    Ok((status, json!({"id": id, "idempotency_key": key, "order_line_id": order_line_id, "location": format!("/v1/render-requests/{id}")})))
}

/// `POST /v1/render-requests/batch`: many requests in one call.
#[utoipa::path(post, path = "/v1/render-requests/batch", operation_id = "create_render_requests", tag = "render requests", request_body = BatchInput,
    description = "Up to 1000 render requests at once, each with its own `idempotency_key` and its own answer: a bad line never sinks the others. A retried batch (the same keys) answers each line with its first answer and renders nothing twice.",
    responses((status = 200, body = Object, description = "`results`: per line in order, its `status` (201 new, 200 seen before, 4xx refused) and the `request` (`id`, `idempotency_key`, `order_line_id`, `location`: its `GET`) or the `error` (as an ErrorBody); `created`, `existing`, `failed`: how many of each"),
        (status = 400, description = "malformed JSON, no lines or more than 1000", body = ErrorBody)))]
pub(super) async fn create_batch(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: BatchInput = json_body(&headers, &body, BATCH_EXAMPLE)?;
    if input.requests.is_empty() || input.requests.len() > BATCH_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!("a batch has 1 to {BATCH_MAX} lines; this one has {}: split it", input.requests.len()),
        ));
    }
    let caller = caller.as_deref();
    let answers: Vec<Result<(StatusCode, Value), ApiError>> =
        futures_util::stream::iter(input.requests).map(|line| batch_line(&state, caller, line)).buffered(BATCH_PARALLEL).collect().await;
    let (mut created, mut existing, mut failed) = (0, 0, 0);
    let results: Vec<Value> = answers
        .into_iter()
        .enumerate()
        .map(|(i, answer)| match answer {
            Ok((status, request)) => {
                if status == StatusCode::CREATED {
                    created += 1
                } else {
                    existing += 1
                }
                json!({"line": i + 1, "status": status.as_u16(), "request": request})
            }
            Err(e) => {
                failed += 1;
                json!({"line": i + 1, "status": e.status.as_u16(), "error": e.body()})
            }
        })
        .collect();
    tracing::info!(lines = results.len(), created, existing, failed, "render request batch");
    Ok(Json(json!({"results": results, "created": created, "existing": existing, "failed": failed})))
}

/// `POST /v1/render-requests/{id}/cancel`: the order line was withdrawn.
#[utoipa::path(post, path = "/v1/render-requests/{id}/cancel", operation_id = "cancel_render_request", tag = "render requests",
    params(("id" = Uuid, Path, description = "a UUID")), request_body = Option<super::CancelInput>,
    description = "Cancels every running run of the request (its authoritative run, shadow runs, a legacy fallback): nodes not started are skipped, running ones are stopped on their workers. Its `request.cancelled` event follows.",
    responses((status = 200, body = Object, description = "`runs`: the runs cancelled; `workers_told`: whether the workers could be told at once"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the request has finished")))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = request_id(&id)?;
    let input: super::CancelInput = super::optional_json_body(&headers, &body, r#"{"reason": "order withdrawn"}"#)?;
    let reason = input.reason.unwrap_or_else(|| "cancelled by the order system".into());
    let done = crate::dispatch::operate::cancel_request(&state, id, &reason).await?;
    Ok(Json(json!({"request_id": id, "status": "cancelled", "runs": done.runs, "workers_told": done.workers_told})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RequestsQuery {
    /// An output type's key.
    output_type: Option<String>,
    /// Whom they count against (the tenant, else the token's name).
    submitter: Option<String>,
    /// Received in the last N hours.
    #[param(minimum = 0.001, maximum = 1000000)]
    hours: Option<f64>,
    /// The previous page's `next`.
    after: Option<String>,
    /// Requests per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// `GET /v1/render-requests`.
#[utoipa::path(get, path = "/v1/render-requests", operation_id = "list_render_requests", tag = "render requests", params(RequestsQuery),
    description = "Render requests newest first, each with the status and progress of the run that answers it, a page at a time (keyset: give the answer's `next` as `after`).",
    responses((status = 200, body = Object, description = "`items`: `id`, `order_line_id`, `output_type`, `received_at`, `priority`, `submitter`, `status`, `nodes_done`, `nodes_total`; `next`: the cursor of the next page, or null"),
        (status = 400, body = ErrorBody, description = "a filter or cursor that does not parse")))]
pub(super) async fn list(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<RequestsQuery>,
) -> Result<Json<Value>, ApiError> {
    let cursor = super::paging::cursor(q.after.as_deref())?;
    let since = super::paging::since(q.hours)?;
    let limit = super::paging::limit(q.limit, 50, 500)?;
    let client = state.pool.get().await?;
    let rows = client
        .query(crate::db::sql::REQUESTS, &[&q.output_type, &q.submitter, &since, &cursor.map(|c| c.0), &cursor.map(|c| c.1), &limit])
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, Uuid>("id"),
                "order_line_id": r.get::<_, String>("order_line_id"),
                "output_type": r.get::<_, String>("output_type_key"),
                "received_at": r.get::<_, chrono::DateTime<chrono::Utc>>("received_at"),
                "priority": Priority::from_rank(r.get("priority")).unwrap_or_default(),
                "submitter": r.get::<_, String>("submitter"),
                "status": r.get::<_, Option<String>>("status").unwrap_or_else(|| "unknown".into()),
                "nodes_done": r.get::<_, Option<i32>>("nodes_done"),
                "nodes_total": r.get::<_, Option<i32>>("nodes_total"),
            })
        })
        .collect();
    let next = (rows.len() as i64 == limit).then(|| rows.last()).flatten().map(|r| super::paging::next(r.get("received_at"), r.get("id")));
    Ok(Json(json!({"items": items, "next": next})))
}

fn request_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{id}` is not a render request id (a UUID from POST /v1/render-requests)"),
        )
    })
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
    let (progress, estimate) = match answering {
        Some(r) => {
            let (done, total): (i32, i32) = (r.get(11), r.get(10));
            let fraction = if total > 0 { f64::from(done) / f64::from(total) } else { 0.0 };
            let progress = json!({"nodes_done": done, "nodes_total": total, "fraction": (fraction * 1000.0).round() / 1000.0});
            let estimate = if status == "running" {
                let recent = client.query_one(crate::db::sql::RECENT_RUN_SECONDS, &[&first.get::<_, String>(4), &ESTIMATE_FROM]).await?;
                estimate_finish(r.get(13), fraction, recent.get("p50"), recent.get("runs"))
            } else {
                Value::Null
            };
            (progress, estimate)
        }
        None => (Value::Null, Value::Null),
    };
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
        "progress": progress,
        "estimate": estimate,
        "run": run,
    }))
}

/// When a running request should finish, from the median run time `p50` (seconds, request
/// to finish) of the output type's recent runs: its start plus that median, or, once it has
/// run longer, now plus the median's share still to do. Null without any recent run.
fn estimate_finish(created: chrono::DateTime<chrono::Utc>, fraction: f64, p50: Option<f64>, runs: i64) -> Value {
    let Some(p50) = p50 else { return Value::Null };
    let ms = |s: f64| chrono::Duration::milliseconds((s * 1000.0) as i64);
    let typical = created + ms(p50);
    let now = chrono::Utc::now();
    let finish = typical.max(now + ms(p50 * (1.0 - fraction)));
    json!({"finish_at": finish, "from_runs": runs, "p50_seconds": (p50 * 1000.0).round() / 1000.0})
}

/// `GET /v1/render-requests/{id}`.
#[utoipa::path(get, path = "/v1/render-requests/{id}", operation_id = "get_render_request", tag = "render requests", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 200, body = Object, description = "the request, the run that answers it (the authoritative run, or its legacy fallback; never a shadow) and, once it succeeded, the delivered artifact"), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(read(&state, request_id(&id)?).await?))
}
