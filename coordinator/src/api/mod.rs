//! The HTTP API: runs, the node palette, workflows, health and metrics. Handlers validate, then call the role that owns
//! the write (dispatch); errors carry a stable `error` code, every problem found, and the fix.

use crate::db::{sql, DbError};
use crate::{dispatch, AppState};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use renderfleet_shared::graph::{self, GraphSpec, NodeDefaults, Problem};
use renderfleet_shared::registry::registry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

pub mod auth;
mod nodes;
mod output_types;
mod requests;
mod workflows;

use auth::{Scope, Tokens};

/// The OpenAPI document of this API, served at `/openapi.yaml`.
const OPENAPI: &str = include_str!("../../openapi.yaml");

/// The API. Every `/v1` route needs a bearer token with its scope (see [`auth`]); health,
/// metrics and the OpenAPI document are open. With `metrics_addr` set, `/metrics` is served
/// there instead (see [`metrics_router`]).
pub fn router(state: AppState, tokens: Tokens) -> Router {
    let limit = state.config.max_request_bytes;
    let guard = |scope: Scope| middleware::from_fn_with_state((tokens.clone(), scope), auth::require);
    let (submit, read, admin) = (guard(Scope::Submit), guard(Scope::Read), guard(Scope::Admin));
    let mut app = Router::new()
        .route("/v1/render-requests", post(requests::create).route_layer(submit.clone()))
        .route("/v1/render-requests/{id}", get(requests::get).route_layer(submit))
        .route("/v1/runs", post(create_run).route_layer(admin.clone()))
        .route("/v1/runs/{id}", get(get_run).route_layer(read.clone()))
        .route("/v1/nodes", get(nodes::palette).route_layer(read.clone()))
        .route("/v1/workflows", get(workflows::list).route_layer(read.clone()).merge(post(workflows::create).route_layer(admin.clone())))
        .route("/v1/workflows/validate", post(workflows::validate).route_layer(read.clone()))
        .route("/v1/workflows/starters/{family}", get(workflows::starter).route_layer(read.clone()))
        .route("/v1/workflows/{id}", get(workflows::get).route_layer(read.clone()).merge(put(workflows::update).route_layer(admin.clone())))
        .route("/v1/workflows/{id}/repair", post(workflows::repair).route_layer(admin.clone()))
        .route("/v1/workflows/{id}/preflight", post(workflows::preflight).route_layer(read.clone()))
        .route(
            "/v1/output-types",
            get(output_types::list).route_layer(read.clone()).merge(post(output_types::create).route_layer(admin.clone())),
        )
        .route("/v1/output-types/{key}", get(output_types::get).route_layer(read).merge(put(output_types::update).route_layer(admin)))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/openapi.yaml", get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }));
    if state.config.metrics_addr.is_empty() {
        app = app.route("/metrics", get(metrics));
    }
    app.layer(DefaultBodyLimit::max(limit)).layer(middleware::map_response_with_state(limit, too_large)).with_state(state)
}

/// `/metrics` alone, for a separate `metrics_addr`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// axum answers an oversized body with a plain-text 413; ours says what the limit is and how
/// to change it, in the API's error shape.
async fn too_large(State(limit): State<usize>, response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is over this coordinator's limit of {limit} bytes; send less, or raise `max_request_bytes` (RENDERFLEET_MAX_REQUEST_BYTES)"),
    )
    .into_response()
}

/// An error answer: `{"error": code, "message": ..., "problems": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Vec<Problem>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), problems: Vec::new() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if !self.problems.is_empty() {
            body["problems"] = serde_json::to_value(&self.problems).expect("problems serialize");
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database error in API");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", format!("{e}; retry later"))
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

/// Parses a JSON request body into `T`, refusing other content types and naming what is
/// wrong (unknown fields included: a typo is an error, not silently ignored).
fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8], example: &str) -> Result<T, ApiError> {
    let json_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body is not a valid request: {e}; expected {example}"))
    })
}

/// `POST /v1/runs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    /// What the run is about (an order line, a CAD file); stored as given.
    subject: Value,
    graph: GraphSpec,
}

#[derive(Debug, Serialize)]
struct Created {
    run_id: Uuid,
    /// Things that did not stop the run but probably deserve a look (renamed node types,
    /// nodes whose output reaches no sink).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Problem>,
}

async fn create_run(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateRun = json_body(&headers, &body, r#"{"subject": {...}, "graph": {"nodes": [...], "edges": [...]}}"#)?;
    let n = &state.config.nodes;
    let defaults = NodeDefaults { max_attempts: n.max_attempts, timeout: n.timeout, max_timeout: n.max_timeout };
    let plan = graph::plan(&req.graph, registry(), defaults).map_err(|problems| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_graph",
        message: format!("the graph has {} problem(s); nothing was created", problems.len()),
        problems,
    })?;
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Some(k),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters, e.g. a UUID",
            ));
        }
    };
    // The normalised graph is what is stored: current type names, ports, params with defaults.
    let graph_json = serde_json::to_value(&plan.graph).expect("graph serializes");
    let (status, run_id) = match dispatch::create_run(&state.pool, &plan, &graph_json, &req.subject, key).await? {
        dispatch::Created::New(id, ready) => {
            state.hot.send(ready);
            tracing::info!(run_id = %id, nodes = plan.nodes.len(), "run created");
            (StatusCode::CREATED, id)
        }
        dispatch::Created::Existing(id) => (StatusCode::OK, id),
        dispatch::Created::KeyReused(id) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("this Idempotency-Key already created run {id} from a different request; use a new key for a new run"),
            ));
        }
    };
    let location = format!("/v1/runs/{run_id}");
    Ok((status, [(header::LOCATION, location)], Json(Created { run_id, warnings: plan.warnings })).into_response())
}

#[derive(Debug, Serialize)]
struct RunView {
    id: Uuid,
    pipeline: String,
    role: String,
    status: String,
    subject: Value,
    nodes_total: i32,
    nodes_done: i32,
    error: Option<Value>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    edges: Value,
    nodes: Vec<NodeView>,
}

#[derive(Debug, Serialize)]
struct NodeView {
    node_id: String,
    node_run_id: Uuid,
    module: String,
    status: String,
    attempt: i32,
    max_attempts: i32,
    worker_id: Option<String>,
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    params: Value,
    outputs: Option<Value>,
    error: Option<Value>,
    log_tail: Option<String>,
    attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    attempt: i32,
    status: String,
    worker_id: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<Value>,
}

/// `GET /v1/runs/{id}` query.
#[derive(Debug, Deserialize)]
struct RunQuery {
    /// `false` leaves out the nodes (and edges): what a progress poll of a big run needs.
    #[serde(default = "yes")]
    nodes: bool,
}

fn yes() -> bool {
    true
}

async fn get_run(State(state): State<AppState>, Path(id): Path<String>, Query(q): Query<RunQuery>) -> Result<Json<RunView>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{id}` is not a run id; run ids are UUIDs as returned by POST /v1/runs"),
        )
    })?;
    let client = state.pool.get().await?;
    let run = client.query_opt(sql::GET_RUN, &[&id]).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "run_not_found", format!("no run {id}; check the id (`renderctl runs show ID`)"))
    })?;
    if !q.nodes {
        return Ok(Json(run_view(&run, Value::Array(vec![]), Vec::new())));
    }
    let mut attempts: HashMap<Uuid, Vec<AttemptView>> = HashMap::new();
    for r in client.query(sql::GET_ATTEMPTS, &[&id]).await? {
        attempts.entry(r.get(0)).or_default().push(AttemptView {
            attempt: r.get(1),
            status: r.get(2),
            worker_id: r.get(3),
            started_at: r.get(4),
            finished_at: r.get(5),
            error: r.get(6),
        });
    }
    let nodes = client
        .query(sql::GET_NODE_RUNS, &[&id])
        .await?
        .into_iter()
        .map(|r| {
            let node_run_id: Uuid = r.get(0);
            NodeView {
                node_id: r.get(1),
                node_run_id,
                module: r.get(2),
                status: r.get(3),
                attempt: r.get(4),
                max_attempts: r.get(5),
                worker_id: r.get(6),
                queued_at: r.get(7),
                started_at: r.get(8),
                finished_at: r.get(9),
                outputs: r.get(10),
                error: r.get(11),
                log_tail: r.get(12),
                params: r.get(13),
                attempts: attempts.remove(&node_run_id).unwrap_or_default(),
            }
        })
        .collect();
    let graph: Value = run.get(5);
    let edges = graph.get("edges").cloned().unwrap_or(Value::Array(vec![]));
    Ok(Json(run_view(&run, edges, nodes)))
}

fn run_view(run: &tokio_postgres::Row, edges: Value, nodes: Vec<NodeView>) -> RunView {
    RunView {
        id: run.get(0),
        pipeline: run.get(1),
        role: run.get(2),
        status: run.get(3),
        subject: run.get(4),
        edges,
        nodes_total: run.get(6),
        nodes_done: run.get(7),
        error: run.get(8),
        created_at: run.get(9),
        finished_at: run.get(10),
        nodes,
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let db = tokio::time::timeout(Duration::from_secs(2), async {
        state.pool.get().await.map_err(|e| e.to_string())?.simple_query("SELECT 1").await.map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("timed out after 2s".into()));
    let broker = state.broker_up.load(Ordering::Relaxed);
    let body = json!({
        "database": db.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| format!("unreachable: {e}")),
        "broker": if broker { "ok" } else { "disconnected (reconnecting)" },
    });
    let status = if db.is_ok() && broker { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
