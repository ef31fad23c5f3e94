//! The HTTP API: runs, the node palette, workflows, health and metrics. Handlers validate, then call the role that owns
//! the write (dispatch); errors carry a stable `error` code, every problem found, and the fix.

use crate::db::{sql, DbError};
use crate::{dispatch, AppState};
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use renderfleet_shared::cache::CacheMode;
use renderfleet_shared::graph::{self, GraphSpec, Problem};
use renderfleet_shared::registry::registry;
use renderfleet_shared::scheduling::Priority;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub(crate) mod artifacts;
pub mod auth;
mod materials;
mod nodes;
mod output_types;
mod paging;
mod requests;
mod rollout;
mod runs;
pub(crate) mod webhooks;
pub(crate) mod workers;
pub(crate) mod workflows;

use auth::{Scope, Tokens};
use workflows::UncheckedGraph;

/// The API. Every `/v1` route needs a bearer token with its scope (see [`auth`]); health,
/// metrics and the OpenAPI document are open. With `metrics_addr` set, `/metrics` is served
/// there instead (see [`metrics_router`]).
///
/// Routes and the OpenAPI document come from the same `routes!` declarations, and each
/// operation's documented security is written from the scope its guard enforces, so the
/// document cannot drift from what the server does.
pub fn router(state: AppState, tokens: Tokens) -> Router {
    let limit = state.config.max_request_bytes;
    let (app, doc) = routes(&tokens, state.config.metrics_addr.is_empty()).split_for_parts();
    let doc = Arc::new(doc.to_json().expect("the OpenAPI document serializes"));
    app.route("/v1/openapi.json", get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()) }))
        // An explicit fallback, so that it survives merging with the console's router (whose
        // HTML pages stay out of the JSON error layer) and unknown paths still answer JSON.
        .fallback(|request: Request| async move {
            let mut r = ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no such endpoint: {} {}; /v1/openapi.json lists them (the web console is at /console)",
                    request.method(),
                    request.uri().path()
                ),
            )
            .into_response();
            if has_body(request.headers()) {
                close_connection(&mut r);
            }
            r
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, json_errors))
        .with_state(state)
}

/// The document `/v1/openapi.json` serves, without a server (`coordinator openapi`): that of
/// a coordinator serving `/metrics` itself, as by default (no `metrics_addr`). Tokens only
/// guard routes; the document names scopes, not tokens.
pub fn openapi_document() -> String {
    let tokens = Tokens::from_config(&[], true).expect("no tokens, open: always a valid set");
    let (_, doc) = routes(&tokens, true).split_for_parts();
    doc.to_json().expect("the OpenAPI document serializes")
}

/// Every route with its operation, each guarded by its scope; `/metrics` too when it is
/// served here.
fn routes(tokens: &Tokens, with_metrics: bool) -> OpenApiRouter<AppState> {
    let submit = OpenApiRouter::new()
        .routes(routes!(requests::create))
        .routes(routes!(requests::create_batch))
        .routes(routes!(requests::get))
        .routes(routes!(requests::list))
        .routes(routes!(requests::cancel));
    let read = OpenApiRouter::new()
        .routes(routes!(get_run))
        .routes(routes!(runs::list))
        .routes(routes!(nodes::palette))
        .routes(routes!(workflows::list))
        .routes(routes!(workflows::validate))
        .routes(routes!(workflows::connections))
        .routes(routes!(workflows::starter))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::versions))
        .routes(routes!(workflows::preflight))
        .routes(routes!(output_types::list))
        .routes(routes!(output_types::get))
        .routes(routes!(materials::list_materials))
        .routes(routes!(materials::get_map))
        .routes(routes!(rollout::get_gate))
        .routes(routes!(rollout::events))
        .routes(routes!(rollout::list_comparisons))
        .routes(routes!(rollout::get_comparison))
        .routes(routes!(artifacts::get))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::get))
        .routes(routes!(workers::list));
    let operate = OpenApiRouter::new()
        .routes(routes!(rollout::rollback))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
        .routes(routes!(workers::release));
    let admin = OpenApiRouter::new()
        .routes(routes!(create_run))
        .routes(routes!(workflows::create))
        .routes(routes!(workflows::update))
        .routes(routes!(workflows::repair))
        .routes(routes!(output_types::create))
        .routes(routes!(output_types::update))
        .routes(routes!(materials::put_material))
        .routes(routes!(materials::put_map))
        .routes(routes!(materials::repair_map))
        .routes(routes!(rollout::promote))
        .routes(routes!(webhooks::create))
        .routes(routes!(webhooks::delete));
    let mut open = OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz));
    if with_metrics {
        open = open.routes(routes!(metrics));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(scoped(tokens, Scope::Submit, submit))
        .merge(scoped(tokens, Scope::Read, read))
        .merge(scoped(tokens, Scope::Operate, operate))
        .merge(scoped(tokens, Scope::Admin, admin))
        .merge(open)
}

/// Guards every route of `router` with `scope` (then refuses a NUL in its URL), and says so in
/// the document.
fn scoped(tokens: &Tokens, scope: Scope, router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let mut router = router
        .route_layer(middleware::from_fn(refuse_nul_in_url))
        .route_layer(middleware::from_fn_with_state((tokens.clone(), scope), auth::require));
    let requirement = SecurityRequirement::new(auth::SCHEME, [scope.as_str()]);
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten() {
            op.security = Some(vec![requirement.clone()]);
            document_refusals(op);
        }
    }
    router
}

/// Documents the refusals every guarded operation can answer with, in the API's error shape,
/// where its handler's attribute does not already say more: 400 (a body, path or query
/// parameter that does not parse, a NUL character), 401 and 403 (the guard), 413 and 415
/// (operations that take a JSON body), 503 (the database is unreachable).
fn document_refusals(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let takes_body = op.request_body.is_some();
    let mut refusals = vec![
        ("400", "malformed JSON, an unknown field, a path or query parameter that does not parse, or a NUL character (`nul_in_text`)"),
        ("401", "no token, or an unknown one"),
        ("403", "the token lacks the scope"),
        ("503", "the database is unreachable (`database_unavailable`); retry later"),
    ];
    if takes_body {
        refusals.push(("413", "the body is over this coordinator's `max_request_bytes` (`body_too_large`)"));
        refusals.push(("415", "the body is not sent as `Content-Type: application/json` (`unsupported_media_type`)"));
    }
    for (status, description) in refusals {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
                .build()
                .into()
        });
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "renderfleet coordinator", description = "Render requests, runs, the node palette, workflows and output types. Every /v1 operation needs `Authorization: Bearer TOKEN` with the scope listed under its security; `admin` grants every scope."),
    modifiers(&BearerScheme, &UncheckedGraph),
    components(schemas(ErrorBody, Problem))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            auth::SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("scopes: submit, read, operate, admin")).build(),
            ),
        );
    }
}

/// The shape of every error answer (what [`ApiError`] renders).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// A stable code, e.g. `invalid_graph`, `missing_scope`.
    error: String,
    /// What is wrong and how to fix it.
    message: String,
    /// Every problem found, when there are several (graphs, overrides); at most the first 100.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<Problem>,
    /// How many problems there are, when more than the 100 listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    problems_total: Option<usize>,
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "the process is up", content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// `/metrics` alone, for a separate `metrics_addr`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// axum's own refusals (an unknown route or method, an oversized body, a query string that
/// does not parse) are plain text; this gives every one of them the API's error shape, with
/// what was asked and where to look.
async fn json_errors(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let asked = format!("{} {}", request.method(), request.uri().path());
    let unread = has_body(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            format!("the request body is over this coordinator's limit of {limit} bytes; send less, or raise `max_request_bytes` (RENDERFLEET_MAX_REQUEST_BYTES)"),
        ),
        StatusCode::NOT_FOUND => ("not_found", format!("no such endpoint: {asked}; /v1/openapi.json lists them")),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", format!("{asked} is not allowed; /v1/openapi.json lists each path's methods")),
        _ => ("invalid_request", format!("{asked}: {text}; /v1/openapi.json describes the request")),
    };
    // axum refused before the handler read the body (a route, method, path or query
    // rejection), or stopped reading it (over the limit).
    let mut response = ApiError::new(status, code, message).into_response();
    if unread {
        close_connection(&mut response);
    }
    response
}

/// Whether the request carries a body, which an answer given before the handler reads it
/// leaves unread.
pub(crate) fn has_body(request: &HeaderMap) -> bool {
    let length = request.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || request.contains_key(header::TRANSFER_ENCODING)
}

/// Marks an answer given without reading the request's body `Connection: close`: the server
/// drops such a connection rather than read the rest of the body, and a client that pools
/// connections must know not to send another request on it.
pub(crate) fn close_connection(response: &mut Response) {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Route layer: refuses a NUL (`%00`) in a path segment or a query parameter, naming it.
/// PostgreSQL cannot hold U+0000 in text, so the lookup would fail as a database error.
pub(crate) async fn refuse_nul_in_url(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let in_path =
        uri.path().split('/').zip(route.split('/').chain(std::iter::repeat(""))).find(|(seg, _)| seg.contains("%00")).map(|(seg, tpl)| {
            match tpl.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => format!("path parameter `{name}`"),
                None => format!("path segment `{seg}`"),
            }
        });
    let in_query = || {
        uri.query()?.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.contains("%00") || value.contains("%00")).then(|| format!("query parameter `{name}`"))
        })
    };
    let Some(what) = in_path.or_else(in_query) else { return next.run(request).await };
    let mut r = nul_refused(&what).into_response();
    if has_body(request.headers()) {
        close_connection(&mut r);
    }
    r
}

fn nul_refused(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "nul_in_text",
        format!("{what} contains a NUL character (U+0000, `%00` or `\\u0000`), which text here cannot hold; remove it"),
    )
}

/// Where the first string (or object key) of `v` with a NUL is, as a JSON pointer.
fn nul_at(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(format!("the text at `{}`", if at.is_empty() { "/" } else { at })),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| nul_at(x, &format!("{at}/{i}"))),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            if k.contains('\0') {
                Some(format!("the key `{}` at `{}`", k.replace('\0', "\\u0000"), if at.is_empty() { "/" } else { at }))
            } else {
                nul_at(x, &here)
            }
        }),
        _ => None,
    }
}

/// An error answer: `{"error": code, "message": ..., "problems": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    code: &'static str,
    pub(crate) message: String,
    problems: Vec<Problem>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), problems: Vec::new() }
    }
}

/// Problems listed in one answer. A graph of 550,000 duplicate edges has 549,999 of them: the
/// answer would be tens of megabytes, and a client fixes the first ones first anyway.
const MAX_LISTED: usize = 100;

/// Puts the first [`MAX_LISTED`] of `problems` into `body`, with `problems_total` when there
/// are more; returns how many were left out.
pub(super) fn list_problems<P: Serialize + Clone>(body: &mut Value, problems: &[P]) -> usize {
    let (listed, total) = first_listed(problems);
    body["problems"] = serde_json::to_value(listed).expect("problems serialize");
    if let Some(total) = total {
        body["problems_total"] = json!(total);
    }
    problems.len().saturating_sub(MAX_LISTED)
}

/// The first [`MAX_LISTED`] of `problems`, and how many there are when that is not all: a
/// typed answer's `problems` and `problems_total`.
pub(super) fn first_listed<P: Clone>(problems: &[P]) -> (Vec<P>, Option<usize>) {
    (problems[..problems.len().min(MAX_LISTED)].to_vec(), (problems.len() > MAX_LISTED).then_some(problems.len()))
}

impl ApiError {
    /// The answer's body ([`ErrorBody`]): also each failed line of a batch.
    pub(crate) fn body(&self) -> Value {
        // Keys in this order in the answer; `message` is set last, when it is complete.
        let mut body = json!({"error": self.code, "message": ""});
        let mut message = self.message.clone();
        if !self.problems.is_empty() {
            let hidden = list_problems(&mut body, &self.problems);
            if hidden > 0 {
                message.push_str(&format!("; the first {MAX_LISTED} problems are listed, {hidden} more not shown"));
            }
        }
        body["message"] = json!(message);
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
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
    // Every body is a JSON object: serde would also fill a struct from an array (`[null, null]`).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body must be a JSON object; expected {example}")));
    }
    let parsed = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body is not a valid request: {e}; expected {example}"))
    })?;
    // PostgreSQL's text and jsonb cannot hold U+0000, which would fail as a database error:
    // refuse it here, naming the field. In JSON it can only be the escape `\u0000`, so most
    // bodies skip the walk.
    if std::str::from_utf8(body).is_ok_and(|text| text.contains("\\u0000")) {
        if let Some(at) = serde_json::from_slice::<Value>(body).ok().and_then(|v| nul_at(&v, "")) {
            return Err(nul_refused(&at));
        }
    }
    Ok(parsed)
}

/// A body that may be left out (an operation whose fields are all optional): its defaults
/// then, else [`json_body`].
fn optional_json_body<T: serde::de::DeserializeOwned + Default>(headers: &HeaderMap, body: &[u8], example: &str) -> Result<T, ApiError> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        json_body(headers, body, example)
    }
}

/// A subject that would fail only on a worker: 422 with its problems.
pub(super) fn invalid_subject(problems: Vec<Problem>) -> ApiError {
    let message = format!(
        "the subject cannot be rendered: {}; nothing was created",
        problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ")
    );
    ApiError { problems, ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_subject", message) }
}

/// `POST /v1/runs` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    /// What the run is about (an order line, a CAD file); stored as given.
    #[schema(value_type = Object)]
    subject: Value,
    graph: GraphSpec,
    /// `refresh`: run every node anew instead of taking results from the node result cache.
    #[serde(default)]
    cache: CacheMode,
    /// Where its tasks queue (default `normal`).
    #[serde(default)]
    priority: Priority,
    /// Who it counts against for fair share; none: the API token's name.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Created {
    /// The run's id, as `GET /v1/runs/{id}` calls it.
    id: Uuid,
    /// The same id under its first name, kept for clients written before `id`.
    run_id: Uuid,
    /// Things that did not stop the run but probably deserve a look (renamed node types,
    /// nodes whose output reaches no sink).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Problem>,
}

#[utoipa::path(post, path = "/v1/runs", tag = "runs",
    description = "Run a graph directly (tests, operations); the order system uses render requests.",
    request_body = CreateRun,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "1 to 255 visible ASCII characters; the same key again returns the first run")),
    responses((status = 201, body = Created, description = "the run was created"), (status = 200, body = Created, description = "this key created the run earlier"),
        (status = 400, description = "malformed JSON, an unknown field or a NUL character", body = ErrorBody), (status = 422, body = ErrorBody, description = "every problem of the graph and the subject; nothing was written")))]
async fn create_run(
    State(state): State<AppState>,
    caller: Option<Extension<auth::Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateRun = json_body(&headers, &body, r#"{"subject": {...}, "graph": {"nodes": [...], "edges": [...]}}"#)?;
    let submitter = auth::submitter(req.tenant.as_deref(), caller.as_deref())?;
    let defaults = state.node_defaults();
    let subject = graph::check_subject(&req.subject);
    let plan = match graph::plan(&req.graph, registry(), defaults) {
        Ok(plan) if subject.is_empty() => plan,
        Ok(_) => return Err(invalid_subject(subject)),
        Err(mut problems) => {
            problems.extend(subject);
            return Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_graph",
                message: format!("the graph has {} problem(s); nothing was created", problems.len()),
                problems,
            });
        }
    };
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
    let by = dispatch::Submission { priority: req.priority, submitter: &submitter, cache: req.cache };
    let (status, run_id) = match dispatch::create_run(&state.pool, &state.hot, &plan, &graph_json, &req.subject, key, by).await? {
        dispatch::Created::New(id) => {
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
    Ok((status, [(header::LOCATION, location)], Json(Created { id: run_id, run_id, warnings: plan.warnings })).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
struct RunView {
    id: Uuid,
    pipeline: String,
    role: String,
    status: String,
    #[schema(value_type = Object)]
    subject: Value,
    nodes_total: i32,
    nodes_done: i32,
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = Vec<Object>)]
    edges: Value,
    nodes: Vec<NodeView>,
    /// `use`, or `refresh` when the run was asked to render every node anew.
    cache: CacheMode,
    priority: Priority,
    /// Who it counts against for fair share.
    submitter: String,
}

#[derive(Debug, Serialize, ToSchema)]
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
    #[schema(value_type = Object)]
    params: Value,
    #[schema(value_type = Option<Object>)]
    outputs: Option<Value>,
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
    log_tail: Option<String>,
    attempts: Vec<AttemptView>,
    /// Set when the outputs came from the node result cache instead of a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    cached: Option<CachedView>,
}

/// Where a node's cached outputs came from.
#[derive(Debug, Serialize, ToSchema)]
struct CachedView {
    from_node_run: Uuid,
    /// The run of `from_node_run`; absent once that run was deleted (the entry lives on).
    from_run: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
struct AttemptView {
    attempt: i32,
    status: String,
    worker_id: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
}

/// `GET /v1/runs/{id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    /// `false` leaves out the nodes (and edges): what a progress poll of a big run needs.
    #[serde(default = "yes")]
    nodes: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = Uuid, Path, description = "a UUID"), RunQuery),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
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
        ApiError::new(
            StatusCode::NOT_FOUND,
            "run_not_found",
            format!("no run {id}; `renderctl runs list` (GET /v1/runs) lists the runs there are, newest first"),
        )
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
                cached: r
                    .get::<_, Option<Uuid>>("cached_from")
                    .map(|from_node_run| CachedView { from_node_run, from_run: r.get("cached_from_run") }),
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
        cache: CacheMode::parse(run.get("cache_mode")).unwrap_or_default(),
        priority: Priority::from_rank(run.get("priority")).unwrap_or_default(),
        submitter: run.get("submitter"),
        nodes,
    }
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "database and broker reachable"), (status = 503, description = "one of them is not; the body says which")))]
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

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

impl From<dispatch::operate::OperateError> for ApiError {
    fn from(e: dispatch::operate::OperateError) -> Self {
        use dispatch::operate::OperateError as E;
        match e {
            E::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "run_not_found", e.to_string()),
            E::Refused { .. } => ApiError::new(StatusCode::CONFLICT, "run_state", e.to_string()),
            E::RequestNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "request_not_found", e.to_string()),
            E::RequestFinished(_) => ApiError::new(StatusCode::CONFLICT, "request_finished", e.to_string()),
            E::WorkerNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "worker_not_found", e.to_string()),
            E::NotQuarantined { .. } => ApiError::new(StatusCode::CONFLICT, "not_quarantined", e.to_string()),
            E::BrokerDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string()),
            E::Db(d) => d.into(),
        }
    }
}

fn run_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", format!("`{id}` is not a run id (a UUID)")))
}

/// `POST /v1/runs/{id}/cancel` and `POST /v1/render-requests/{id}/cancel` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(super) struct CancelInput {
    pub(super) reason: Option<String>,
}

/// `POST /v1/runs/{id}/cancel`: the run ends `cancelled`; nodes not started are skipped and
/// running ones are stopped on their workers (reported `cancelled`).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = Uuid, Path, description = "a UUID")), request_body = Option<CancelInput>,
    responses((status = 200, body = Object, description = "`workers_told`: whether the workers could be told at once"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the run is not running")))]
async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?;
    let input: CancelInput = optional_json_body(&headers, &body, r#"{"reason": "..."}"#)?;
    let reason = input.reason.unwrap_or_else(|| "cancelled by an operator".into());
    let told = dispatch::operate::cancel(&state, id, &reason).await?;
    Ok(Json(json!({"run_id": id, "status": "cancelled", "workers_told": told})))
}

/// `POST /v1/runs/{id}/retry`: a failed or cancelled run runs again: every failed or
/// skipped node gets a new attempt.
#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 200, body = Object, description = "`nodes`: how many nodes run again"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the run has not failed")))]
async fn retry_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?;
    let nodes = dispatch::operate::retry(&state, id).await?;
    Ok(Json(json!({"run_id": id, "status": "running", "nodes": nodes})))
}
