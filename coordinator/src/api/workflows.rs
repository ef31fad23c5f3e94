//! Workflows: versioned graphs of one family. Create, read, edit (a new version each time),
//! validate without a write, the canonical starter of each family, and `repair`, which
//! rewrites a stored workflow into canonical shape and says what it changed.

use super::{first_listed, json_body, list_problems, ApiError, ErrorBody};
use crate::db::{sql, DbError};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use renderfleet_shared::graph::{self, ConnectionError, ConnectionOptions, ConnectionQuery, GraphSpec, Problem, ProblemCode, Validation};
use renderfleet_shared::registry::{registry, Family};
use renderfleet_shared::starters;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = r#"{"name": "still on white", "family": "order_line", "graph": {"nodes": [...], "edges": [...]}}"#;

pub(super) fn parse_family(family: &str) -> Result<Family, ApiError> {
    Family::parse(family).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_family", format!("no family `{family}`; families are cad_file and order_line"))
    })
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{id}` is not a workflow id; ids are UUIDs as returned by POST /v1/workflows"),
        )
    })
}

/// `POST /v1/workflows/validate` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ValidationView {
    /// No errors (warnings may remain).
    valid: bool,
    /// Declared, or the only one the graph's node types allow.
    family: Option<Family>,
    /// Errors and warnings, in the order found; at most the first 100.
    problems: Vec<Problem>,
    /// How many problems there are, when more than the 100 listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    problems_total: Option<usize>,
    /// Current type names, ports named where they resolved, params with defaults: what would
    /// be stored.
    #[schema(schema_with = unchecked_graph)]
    normalized: GraphSpec,
}

/// `ValidationView::normalized` echoes whatever graph was sent, one with no nodes or
/// `max_attempts: 0` too (its problems say so), so it is documented as `GraphSpec`'s shape
/// without `GraphSpec`'s limits (see [`UncheckedGraph`]).
fn unchecked_graph() -> utoipa::openapi::Ref {
    let mut r = utoipa::openapi::Ref::from_schema_name("UncheckedGraphSpec");
    r.description = "The graph as sent, normalised: current type names, ports named where they resolved, params with defaults; \
        what would be stored. A `GraphSpec`, within its limits when `valid`."
        .into();
    r
}

/// Adds `UncheckedGraphSpec`, `UncheckedNodeSpec` and `UncheckedPosition` to the document:
/// `GraphSpec`, `NodeSpec` and `Position` without their limits (lengths, bounds, patterns,
/// `params` being an object).
/// Generated types are the same; a response validator checks validation's answer against
/// what it promises.
pub(super) struct UncheckedGraph;

impl utoipa::Modify for UncheckedGraph {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use renderfleet_shared::graph::{NodeSpec, Position};
        use utoipa::PartialSchema;
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, schema) in [("GraphSpec", GraphSpec::schema()), ("NodeSpec", NodeSpec::schema()), ("Position", Position::schema())] {
            let mut v = serde_json::to_value(schema).expect("a schema serializes");
            unchecked(&mut v);
            // Params that are not an object are a problem (`invalid_param`), not a refusal.
            if let Some(params) = v.pointer_mut("/properties/params") {
                params["type"] = json!(["object", "array", "string", "number", "boolean", "null"]);
            }
            components.schemas.insert(format!("Unchecked{name}"), serde_json::from_value(v).expect("a schema without limits reads back"));
        }
    }
}

/// Removes the limits of the schema `v` and of the schemas in it, and points its references
/// to the three at their unchecked copies.
fn unchecked(v: &mut Value) {
    let Value::Object(schema) = v else { return };
    for limit in ["minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern"] {
        schema.remove(limit);
    }
    for (key, child) in schema.iter_mut() {
        match (key.as_str(), child) {
            ("$ref", Value::String(to)) => {
                if let Some(name) = to.strip_prefix("#/components/schemas/").filter(|n| ["GraphSpec", "NodeSpec", "Position"].contains(n)) {
                    *to = format!("#/components/schemas/Unchecked{name}");
                }
            }
            // Property names are not keywords: each value is a schema.
            ("properties", Value::Object(props)) => props.values_mut().for_each(unchecked),
            (_, Value::Array(items)) => items.iter_mut().for_each(unchecked),
            (_, child) => unchecked(child),
        }
    }
}

/// `POST /v1/workflows/validate`: every problem, and the normalised graph; writes nothing.
#[utoipa::path(post, path = "/v1/workflows/validate", tag = "workflows", request_body = GraphSpec,
    description = "Every problem of a graph and its normalised form; writes nothing.",
    responses((status = 200, body = ValidationView), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody)))]
pub(super) async fn validate(headers: HeaderMap, body: Bytes) -> Result<Json<ValidationView>, ApiError> {
    let graph: GraphSpec = json_body(&headers, &body, r#"{"family": "order_line", "nodes": [...], "edges": [...]}"#)?;
    let v = graph::validate(&graph, registry());
    let (problems, problems_total) = first_listed(&v.problems);
    Ok(Json(ValidationView { valid: v.is_valid(), family: v.family, problems, problems_total, normalized: v.normalized }))
}

/// `POST /v1/workflows/connections`: where an edge dragged from a port may go, by the rules
/// validation applies (see [`graph::connection_options`]); writes nothing.
#[utoipa::path(post, path = "/v1/workflows/connections", tag = "workflows", request_body = ConnectionQuery,
    description = "For an edge being drawn from an output (`from`) or into an input (`to`): every port on the other side in the graph, whether the edge would fit and why not (artifact kind, family, input already fed, duplicate, cycle), and the node types of the graph's family a new node could be inserted from. Writes nothing.",
    responses((status = 200, body = ConnectionOptions), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody),
        (status = 422, body = ErrorBody, description = "not exactly one of `from` and `to` (`invalid_request`), or a node, node type or port the graph does not have (`unknown_node`, `unknown_node_type`, `unknown_port`)")))]
pub(super) async fn connections(headers: HeaderMap, body: Bytes) -> Result<Json<ConnectionOptions>, ApiError> {
    let query: ConnectionQuery =
        json_body(&headers, &body, r#"{"graph": {"nodes": [...], "edges": [...]}, "from": {"node": "still", "port": "image"}}"#)?;
    let refused = |e: ConnectionError| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string());
    let end = query.end().map_err(refused)?;
    Ok(Json(graph::connection_options(&query.graph, registry(), end).map_err(refused)?))
}

/// `GET /v1/workflows/starters/{family}`: in canonical shape (defaults filled in).
#[utoipa::path(get, path = "/v1/workflows/starters/{family}", tag = "workflows",
    params(("family" = Family, Path)), responses((status = 200, body = GraphSpec), (status = 404, body = ErrorBody)))]
pub(super) async fn starter(Path(family): Path<String>) -> Result<Json<GraphSpec>, ApiError> {
    let graph = starters::starter(parse_family(&family)?);
    Ok(Json(graph::validate(&graph, registry()).normalized))
}

/// `POST /v1/workflows` and `PUT /v1/workflows/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WorkflowInput {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    family: Family,
    graph: GraphSpec,
    /// What this version changes, for the version list; at most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    message: Option<String>,
}

/// At most this many characters in a version's `message` (the column checks it too).
const MAX_MESSAGE: usize = 500;

fn check_message(message: Option<&str>) -> Result<(), ApiError> {
    match message.map(|m| m.chars().count()) {
        Some(n) if n > MAX_MESSAGE => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_message",
            format!("`message` has {n} characters; at most {MAX_MESSAGE}: say what the version changes in short"),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkflowView {
    pub id: Uuid,
    pub version: i32,
    pub name: String,
    pub family: String,
    #[schema(value_type = GraphSpec)]
    pub graph: Value,
    /// Nodes of more than one family: stored so it can be repaired; preflight and dispatch
    /// refuse it.
    pub mixed_family: bool,
    pub repaired_from: Option<i32>,
    pub created_at: DateTime<Utc>,
    /// What the version changes, as saved with it (`repair of vN` for a repair).
    pub message: Option<String>,
}

impl WorkflowView {
    pub(super) fn from_row(r: &tokio_postgres::Row) -> Self {
        WorkflowView {
            id: r.get(0),
            version: r.get(1),
            name: r.get(2),
            family: r.get(3),
            graph: r.get(4),
            mixed_family: r.get(5),
            repaired_from: r.get(6),
            created_at: r.get(7),
            message: r.get(8),
        }
    }

    pub(super) fn graph_spec(&self) -> Result<GraphSpec, ApiError> {
        serde_json::from_value(self.graph.clone()).map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "stored_graph_unreadable",
                format!(
                    "workflow {} v{} holds a graph this version cannot read ({e}); run `renderctl workflows repair {}`",
                    self.id, self.version, self.id
                ),
            )
        })
    }
}

/// Validates a graph for storage in a workflow of `family`. Every problem is an error except
/// a family mismatch, which is stored (flagged `mixed_family`) so imported graphs can be
/// repaired; preflight and dispatch refuse them.
fn for_storage(name: &str, family: Family, mut graph: GraphSpec) -> Result<(Validation, bool), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", "`name` must be 1 to 200 characters"));
    }
    if let Some(declared) = graph.family.filter(|f| *f != family) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "family_mismatch",
            format!("the graph declares family `{}` but the workflow is `{}`; make them agree", declared.as_str(), family.as_str()),
        ));
    }
    graph.family = Some(family);
    let v = graph::validate(&graph, registry());
    let blocking: Vec<Problem> = v.errors().filter(|p| p.code != ProblemCode::FamilyMismatch).cloned().collect();
    if !blocking.is_empty() {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_graph",
            message: format!("the graph has {} problem(s); nothing was stored", blocking.len()),
            problems: v.problems,
        });
    }
    let mixed = v.errors().next().is_some();
    Ok((v, mixed))
}

/// The next version of a workflow, validated for storage.
struct NewVersion<'a> {
    name: &'a str,
    family: Family,
    validation: &'a Validation,
    mixed: bool,
    /// The version `repair` produced it from.
    repaired_from: Option<i32>,
    message: Option<&'a str>,
}

async fn insert_version(state: &AppState, id: Uuid, new: NewVersion<'_>) -> Result<(i32, DateTime<Utc>), ApiError> {
    let client = state.pool.get().await?;
    let graph = serde_json::to_value(&new.validation.normalized).expect("graph serializes");
    let NewVersion { name, family, mixed, repaired_from, message, .. } = new;
    match client.query_one(sql::INSERT_WORKFLOW_VERSION, &[&id, &name, &family.as_str(), &graph, &mixed, &repaired_from, &message]).await {
        Ok(row) => Ok((row.get(0), row.get(1))),
        Err(e) => {
            let e = DbError::from(e);
            if e.is_unique_violation() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "concurrent_edit",
                    format!("workflow {id} was edited at the same moment; read it again and repeat the edit"),
                ));
            }
            Err(e.into())
        }
    }
}

/// What `POST /v1/workflows` and `PUT /v1/workflows/{id}` stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkflowSaved {
    id: Uuid,
    version: i32,
    /// Stored with nodes of more than one family: preflight and dispatch refuse it until it
    /// is fixed.
    mixed_family: bool,
    /// What is still wrong (warnings, a family mismatch); at most the first 100.
    problems: Vec<Problem>,
    /// How many problems there are, when more than the 100 listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    problems_total: Option<usize>,
    /// The normalised graph, as stored.
    graph: GraphSpec,
}

impl WorkflowSaved {
    fn new(id: Uuid, version: i32, mixed_family: bool, v: Validation) -> Self {
        let (problems, problems_total) = first_listed(&v.problems);
        WorkflowSaved { id, version, mixed_family, problems, problems_total, graph: v.normalized }
    }
}

/// `POST /v1/workflows`.
#[utoipa::path(post, path = "/v1/workflows", operation_id = "create_workflow", tag = "workflows", request_body = WorkflowInput,
    responses((status = 201, body = WorkflowSaved, description = "stored as version 1"), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody),
        (status = 422, body = ErrorBody, description = "every problem (`invalid_graph`), or a `name` or `message` too long; nothing stored")))]
pub(super) async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let input: WorkflowInput = json_body(&headers, &body, EXAMPLE)?;
    check_message(input.message.as_deref())?;
    let id = Uuid::now_v7();
    let name = input.name.clone();
    let (version, mixed, v) = store(&state, id, input).await?;
    tracing::info!(workflow = %id, %name, mixed, "workflow created");
    let body = WorkflowSaved::new(id, version, mixed, v);
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/workflows/{id}"))], Json(body)).into_response())
}

/// `PUT /v1/workflows/{id}`: a new version; the family cannot change (output types rely on it).
#[utoipa::path(put, path = "/v1/workflows/{id}", operation_id = "update_workflow", tag = "workflows", request_body = WorkflowInput, params(("id" = Uuid, Path, description = "a UUID")),
    description = "Stores the next version; earlier versions stay readable and runs keep the version they ran.",
    responses((status = 200, body = WorkflowSaved, description = "stored as the next version"), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "edited concurrently"), (status = 422, body = ErrorBody)))]
pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WorkflowSaved>, ApiError> {
    let id = parse_id(&id)?;
    let input: WorkflowInput = json_body(&headers, &body, EXAMPLE)?;
    check_message(input.message.as_deref())?;
    let current = latest(&state, id).await?;
    if current.family != input.family.as_str() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "family_change",
            format!(
                "workflow {id} is `{}`; a workflow keeps its family: create a new workflow for `{}`",
                current.family,
                input.family.as_str()
            ),
        ));
    }
    let (version, mixed, v) = store(&state, id, input).await?;
    tracing::info!(workflow = %id, version, "workflow edited");
    Ok(Json(WorkflowSaved::new(id, version, mixed, v)))
}

/// Validates `input` for storage and stores it as workflow `id`'s next version (version 1
/// of a new one): the version, whether it mixes families, the validation.
async fn store(state: &AppState, id: Uuid, input: WorkflowInput) -> Result<(i32, bool, Validation), ApiError> {
    let (v, mixed) = for_storage(&input.name, input.family, input.graph)?;
    let new = NewVersion {
        name: &input.name,
        family: input.family,
        validation: &v,
        mixed,
        repaired_from: None,
        message: input.message.as_deref(),
    };
    let (version, _) = insert_version(state, id, new).await?;
    Ok((version, mixed, v))
}

pub(super) async fn latest(state: &AppState, id: Uuid) -> Result<WorkflowView, ApiError> {
    let client = state.pool.get().await?;
    let row = client.query_opt(sql::WORKFLOW_LATEST, &[&id]).await?.ok_or_else(|| not_found(id))?;
    Ok(WorkflowView::from_row(&row))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "workflow_not_found", format!("no workflow {id}; `GET /v1/workflows` lists them"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionQuery {
    /// A version other than the latest.
    version: Option<i32>,
}

/// `GET /v1/workflows/{id}[?version=N]`.
#[utoipa::path(get, path = "/v1/workflows/{id}", operation_id = "get_workflow", tag = "workflows", params(("id" = Uuid, Path, description = "a UUID"), VersionQuery),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id = parse_id(&id)?;
    let Some(version) = q.version else { return Ok(Json(latest(&state, id).await?)) };
    let client = state.pool.get().await?;
    let row = client.query_opt(sql::WORKFLOW_VERSION, &[&id, &version]).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "workflow_version_not_found", format!("workflow {id} has no version {version}"))
    })?;
    Ok(Json(WorkflowView::from_row(&row)))
}

/// `GET /v1/workflows` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkflowList {
    /// The latest version of each workflow, newest first.
    items: Vec<WorkflowView>,
}

/// `GET /v1/workflows`: the latest version of each.
#[utoipa::path(get, path = "/v1/workflows", operation_id = "list_workflows", tag = "workflows", responses((status = 200, body = WorkflowList)))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<WorkflowList>, ApiError> {
    let client = state.pool.get().await?;
    let rows = client.query(sql::WORKFLOWS_LATEST, &[]).await?;
    Ok(Json(WorkflowList { items: rows.iter().map(WorkflowView::from_row).collect() }))
}

/// `GET /v1/workflows/{id}/versions` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkflowVersions {
    id: Uuid,
    /// Newest first.
    items: Vec<VersionSummary>,
}

/// One version of a workflow, without its graph.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct VersionSummary {
    version: i32,
    name: String,
    message: Option<String>,
    mixed_family: bool,
    /// The version `repair` produced this one from.
    repaired_from: Option<i32>,
    node_count: i32,
    created_at: DateTime<Utc>,
}

/// `GET /v1/workflows/{id}/versions`: what an editor lists to open an older version.
#[utoipa::path(get, path = "/v1/workflows/{id}/versions", tag = "workflows", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 200, body = WorkflowVersions), (status = 404, body = ErrorBody)))]
pub(super) async fn versions(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<WorkflowVersions>, ApiError> {
    let id = parse_id(&id)?;
    let client = state.pool.get().await?;
    let items: Vec<VersionSummary> = client
        .query(sql::WORKFLOW_VERSIONS, &[&id])
        .await?
        .iter()
        .map(|r| VersionSummary {
            version: r.get(0),
            name: r.get(1),
            message: r.get(2),
            mixed_family: r.get(3),
            repaired_from: r.get(4),
            node_count: r.get(5),
            created_at: r.get(6),
        })
        .collect();
    if items.is_empty() {
        return Err(not_found(id));
    }
    Ok(Json(WorkflowVersions { id, items }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RepairQuery {
    /// Report the changes without storing a new version.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/workflows/{id}/repair[?dry_run=true]`: normalises the latest version (current
/// type names, ports named, defaults filled), stores the result as a new version when
/// anything changed, and reports the changes and what is still wrong (a mixed-family graph
/// is flagged, not split: that needs a person).
#[utoipa::path(post, path = "/v1/workflows/{id}/repair", tag = "workflows", params(("id" = Uuid, Path, description = "a UUID"), RepairQuery),
    description = "Normalises the latest version (current type names, ports named, defaults filled); stores a new version if anything changed.",
    responses((status = 200, body = RepairReport), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "edited at the same moment, or a stored graph this version cannot read")))]
pub(super) async fn repair(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RepairQuery>,
) -> Result<Json<RepairReport>, ApiError> {
    let id = parse_id(&id)?;
    let current = latest(&state, id).await?;
    let family = parse_family(&current.family)?;
    let mut graph = current.graph_spec()?;
    graph.family = Some(family);
    let v = graph::validate(&graph, registry());
    let changes = describe_changes(&graph, &v);
    let mixed = v.errors().any(|p| p.code == ProblemCode::FamilyMismatch);
    let remaining: Vec<Problem> = v.problems.iter().filter(|p| p.code != ProblemCode::RenamedNodeType).cloned().collect();
    let mut version = current.version;
    let changed = !changes.is_empty() || mixed != current.mixed_family;
    if changed && !q.dry_run {
        let message = format!("repair of v{}", current.version);
        let new = NewVersion {
            name: &current.name,
            family,
            validation: &v,
            mixed,
            repaired_from: Some(current.version),
            message: Some(&message),
        };
        version = insert_version(&state, id, new).await?.0;
        tracing::info!(workflow = %id, from = current.version, to = version, changes = changes.len(), "workflow repaired");
    }
    let (problems, problems_total) = first_listed(&remaining);
    Ok(Json(RepairReport {
        id,
        from_version: current.version,
        version,
        changed,
        dry_run: q.dry_run,
        changes,
        mixed_family: mixed,
        problems,
        problems_total,
    }))
}

/// What `repair` changed, and what is still wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RepairReport {
    id: Uuid,
    /// The version repaired (the latest).
    from_version: i32,
    /// The version stored by the repair, or `from_version` when nothing changed (or `dry_run`).
    version: i32,
    changed: bool,
    dry_run: bool,
    /// One line per change.
    changes: Vec<String>,
    /// Nodes of more than one family remain: a person has to split the graph.
    mixed_family: bool,
    /// What normalisation cannot fix; at most the first 100.
    problems: Vec<Problem>,
    /// How many problems there are, when more than the 100 listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    problems_total: Option<usize>,
}

/// What normalisation changed, one line each.
fn describe_changes(before: &GraphSpec, v: &Validation) -> Vec<String> {
    let mut out = Vec::new();
    for p in v.problems.iter().filter(|p| p.code == ProblemCode::RenamedNodeType) {
        out.push(p.message.split(';').next().unwrap_or(&p.message).to_string());
    }
    for (old, new) in before.nodes.iter().zip(&v.normalized.nodes) {
        if old.params != new.params {
            let added: Vec<&str> = match (old.params.as_object(), new.params.as_object()) {
                (Some(o), Some(n)) => n.keys().filter(|k| !o.contains_key(*k)).map(String::as_str).collect(),
                _ => Vec::new(),
            };
            if added.is_empty() {
                out.push(format!("node `{}`: nested params completed with defaults", new.id));
            } else {
                out.push(format!("node `{}`: defaults filled in for {}", new.id, added.join(", ")));
            }
        }
    }
    for (i, (old, new)) in before.edges.iter().zip(&v.normalized.edges).enumerate() {
        if old.from_port != new.from_port || old.to_port != new.to_port {
            out.push(format!(
                "edge #{i} `{}` → `{}`: ports named ({} → {})",
                new.from,
                new.to,
                new.from_port.as_deref().unwrap_or("?"),
                new.to_port.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

/// `POST /v1/workflows/{id}/preflight` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreflightInput {
    /// What would be rendered (stored with the run as given).
    #[schema(value_type = Object)]
    pub(crate) subject: Value,
    /// Apply this output type's invocation overrides.
    #[serde(default)]
    pub(crate) output_type: Option<String>,
    /// A version other than the latest.
    #[serde(default)]
    pub(crate) version: Option<i32>,
}

/// `POST /v1/workflows/{id}/preflight`: would a run of this workflow go through, and where?
/// Validation, the params each node would run with, and for each module whether a live
/// worker serves it. Runs nothing, writes nothing.
#[utoipa::path(post, path = "/v1/workflows/{id}/preflight", tag = "workflows", request_body = PreflightInput, params(("id" = Uuid, Path, description = "a UUID")),
    description = "Validation, the params each node would run with, and a live worker for each module. Runs nothing.",
    responses((status = 200, body = Object, description = "`ok`, `problems`, `nodes`, `modules`"), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the stored graph cannot be read by this version (`stored_graph_unreadable`)"), (status = 422, body = ErrorBody, description = "`subject` is not a JSON object")))]
pub(super) async fn preflight(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let input: PreflightInput = json_body(&headers, &body, r#"{"subject": {...}, "output_type": "still-2000-white"}"#)?;
    if !input.subject.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`subject` must be a JSON object describing what to render",
        ));
    }
    Ok(Json(preflight_report(&state, id, input).await?))
}

/// The preflight of workflow `id` (the API's and the console's).
pub(crate) async fn preflight_report(state: &AppState, id: Uuid, input: PreflightInput) -> Result<Value, ApiError> {
    let workflow =
        super::output_types::load_workflow(state, id, input.version).await.map_err(|e| ApiError { status: StatusCode::NOT_FOUND, ..e })?;
    let mut graph = workflow.graph_spec()?;
    graph.family = parse_family(&workflow.family).ok();
    let mut problems = graph::validate(&graph, registry()).problems;
    if !input.subject.is_object() {
        problems.push(Problem { node_id: None, ..preflight_problem("`subject` must be a JSON object describing what to render") });
    }
    problems.extend(graph::check_subject(&input.subject));
    let mut output_type = Value::Null;
    if let Some(key) = &input.output_type {
        let ot = super::output_types::read(state, key).await?;
        if ot.workflow_id != Some(id) {
            problems.push(Problem {
                severity: renderfleet_shared::graph::Severity::Warning,
                ..preflight_problem(&format!(
                    "output type `{key}` is bound to {}, not to this workflow: its overrides are applied here for the check only",
                    ot.workflow_id.map(|w| format!("workflow {w}")).unwrap_or_else(|| "no workflow (legacy only)".into())
                ))
            });
        }
        match renderfleet_shared::overrides::apply(&graph, &ot.invocation_overrides, registry()) {
            Ok(g) => graph = g,
            Err(p) => problems.extend(p),
        }
        output_type = json!({"key": ot.key, "rollout_mode": ot.rollout_mode, "artifact_kind": ot.artifact_kind});
    }
    let client = state.pool.get().await?;
    let live_for = state.config.recovery.heartbeat_timeout.as_secs_f64();
    let workers = client.query(sql::LIVE_WORKERS, &[&live_for]).await?;
    let serving = |module: &str| -> Vec<String> {
        workers.iter().filter(|w| w.get::<_, Vec<String>>(2).iter().any(|m| m == module)).map(|w| w.get::<_, String>(0)).collect()
    };
    let mut modules = serde_json::Map::new();
    let mut nodes = Vec::new();
    for node in &graph.nodes {
        let Some(t) = registry().get(&node.node_type) else { continue };
        // What would fail only on the worker: the node that reads the subject's CAD file.
        if t.module_key == renderfleet_shared::registry::module::CAD_RESOLVE && input.subject.get("cad_file").is_none() {
            problems.push(Problem {
                node_id: Some(node.id.clone()),
                param_path: Some("/subject/cad_file".into()),
                ..preflight_problem(&format!(
                    "the subject has no `cad_file`, which node `{}` ({}) reads: give the STEP file's path inside the workers' cad_dir, e.g. {{\"cad_file\": \"bracket.stp\"}}",
                    node.id, t.type_key
                ))
            });
        }
        let who = serving(t.module_key);
        if who.is_empty() && !modules.contains_key(t.module_key) {
            problems.push(Problem {
                node_id: Some(node.id.clone()),
                ..preflight_problem(&format!(
                    "no live worker serves module `{}` (node `{}`): start a worker that can run it (RENDERFLEET_MODULES), or wait for one to heartbeat",
                    t.module_key, node.id
                ))
            });
        }
        modules.insert(t.module_key.to_string(), json!({"workers": who}));
        nodes.push(json!({"id": node.id, "type": t.type_key, "module": t.module_key, "params": node.params}));
    }
    let ok = !problems.iter().any(|p| p.severity == renderfleet_shared::graph::Severity::Error);
    let mut report = json!({
        "ok": ok,
        "workflow": {"id": workflow.id, "version": workflow.version, "family": workflow.family},
        "output_type": output_type,
        "problems": [],
        "nodes": nodes,
        "modules": modules,
    });
    list_problems(&mut report, &problems);
    Ok(report)
}

fn preflight_problem(message: &str) -> Problem {
    Problem {
        code: ProblemCode::Preflight,
        severity: renderfleet_shared::graph::Severity::Error,
        node_id: None,
        edge: None,
        param_path: None,
        message: message.into(),
    }
}
