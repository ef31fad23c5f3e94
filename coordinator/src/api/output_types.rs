//! Output types: what the order system asks for by key ("2000 px still on white"). Each
//! binds a family, the artifact kind it promises, optionally a workflow (none: legacy only),
//! invocation overrides checked against that workflow, the raw legacy preset, and its
//! rollout state. Everything that would fail at dispatch time is refused here, on save.

use super::workflows::WorkflowView;
use super::{json_body, ApiError, ErrorBody};
use crate::db::sql;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use renderfleet_shared::gate::GateConfig;
use renderfleet_shared::graph::{self, Problem};
use renderfleet_shared::registry::{registry, ArtifactKind, Family};
use renderfleet_shared::scheduling::Priority;
use renderfleet_shared::{legacy, overrides};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = r#"{"key": "still-2000-white", "family": "order_line", "artifact_kind": "image_png", "workflow_id": "…", "invocation_overrides": {"still": {"width": 2000}}, "rollout_mode": "legacy"}"#;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RolloutMode {
    #[default]
    Legacy,
    Shadow,
    Graph,
}

impl RolloutMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RolloutMode::Legacy => "legacy",
            RolloutMode::Shadow => "shadow",
            RolloutMode::Graph => "graph",
        }
    }
}

/// `POST /v1/output-types` and `PUT /v1/output-types/{key}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OutputTypeInput {
    /// Required on POST; on PUT, if given, must equal the path's key. 1 to 64 characters of
    /// a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    key: Option<String>,
    #[serde(default)]
    description: String,
    family: Family,
    artifact_kind: ArtifactKind,
    #[serde(default)]
    workflow_id: Option<Uuid>,
    /// Pin a version; none: the workflow's latest at dispatch time.
    #[serde(default)]
    workflow_version: Option<i32>,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    invocation_overrides: Value,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    legacy_preset: Value,
    /// Only when creating (default `legacy`). Afterwards the mode moves only through
    /// `POST .../promote` and `.../rollback`, which check the gate and record why; a PUT
    /// may repeat the current mode or leave it out.
    #[serde(default)]
    rollout_mode: Option<RolloutMode>,
    /// Percent of requests that also get a shadow graph run.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    shadow_sample_pct: f64,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    gate_config: Value,
    /// The priority of its requests that name none (none: `normal`).
    #[serde(default)]
    default_priority: Option<Priority>,
}

fn empty_object() -> Value {
    json!({})
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct OutputTypeView {
    pub key: String,
    pub description: String,
    pub family: String,
    pub artifact_kind: String,
    pub workflow_id: Option<Uuid>,
    pub workflow_version: Option<i32>,
    #[schema(value_type = Object)]
    pub invocation_overrides: Value,
    #[schema(value_type = Object)]
    pub legacy_preset: Value,
    pub rollout_mode: String,
    pub shadow_sample_pct: f64,
    #[schema(value_type = Object)]
    pub gate_config: Value,
    pub revision: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The priority of its requests that name none.
    pub default_priority: Priority,
}

impl OutputTypeView {
    fn from_row(r: &tokio_postgres::Row) -> Self {
        OutputTypeView {
            key: r.get(0),
            description: r.get(1),
            family: r.get(2),
            artifact_kind: r.get(3),
            workflow_id: r.get(4),
            workflow_version: r.get(5),
            invocation_overrides: r.get(6),
            legacy_preset: r.get(7),
            rollout_mode: r.get(8),
            shadow_sample_pct: r.get(9),
            gate_config: r.get(10),
            revision: r.get(11),
            created_at: r.get(12),
            updated_at: r.get(13),
            default_priority: r.get::<_, Option<i16>>("default_priority").and_then(Priority::from_rank).unwrap_or_default(),
        }
    }
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Every check that needs no more than the input and the bound workflow.
async fn check(state: &AppState, key: &str, input: &OutputTypeInput, mode: RolloutMode) -> Result<(), ApiError> {
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && key.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !key_ok {
        return Err(refused(
            "invalid_key",
            format!("output type key `{key}` must be 1 to 64 characters of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit"),
        ));
    }
    if input.artifact_kind == ArtifactKind::Any {
        return Err(refused(
            "invalid_artifact_kind",
            "`artifact_kind` must name a kind, e.g. `image_png`, `video_mp4`, `blend`, `glb`".into(),
        ));
    }
    if !(0.0..=100.0).contains(&input.shadow_sample_pct) {
        return Err(refused("invalid_sample", format!("`shadow_sample_pct` must be 0 to 100, got {}", input.shadow_sample_pct)));
    }
    if !input.legacy_preset.is_object() || !input.gate_config.is_object() {
        return Err(refused("invalid_body", "`legacy_preset` and `gate_config` must be JSON objects".into()));
    }
    let gate: GateConfig = serde_json::from_value(input.gate_config.clone()).map_err(|e| {
        refused("invalid_gate_config", format!("`gate_config` does not fit: {e}; see GET /v1/output-types/{{key}}/gate for the fields"))
    })?;
    gate.check().map_err(|e| refused("invalid_gate_config", e))?;
    // The legacy pipeline is what rollback falls back to: its preset must work before it is needed.
    legacy::steps(input.artifact_kind.as_str(), &input.legacy_preset)
        .map_err(|e| refused("invalid_legacy_preset", format!("{e}; nothing was saved")))?;
    let Some(workflow_id) = input.workflow_id else {
        if mode != RolloutMode::Legacy {
            return Err(refused(
                "workflow_required",
                format!(
                    "rollout mode `{}` runs the graph pipeline, so it needs `workflow_id`; bind a workflow or use `legacy`",
                    mode.as_str()
                ),
            ));
        }
        if input.invocation_overrides.as_object().is_some_and(|o| !o.is_empty()) {
            return Err(refused(
                "overrides_without_workflow",
                "`invocation_overrides` apply to a workflow's nodes; bind a workflow or put legacy settings in `legacy_preset`".into(),
            ));
        }
        return Ok(());
    };
    let workflow = load_workflow(state, workflow_id, input.workflow_version).await?;
    if workflow.family != input.family.as_str() {
        return Err(refused(
            "family_mismatch",
            format!(
                "the output type is `{}` but workflow {} is `{}`; bind a `{}` workflow",
                input.family.as_str(),
                workflow.id,
                workflow.family,
                input.family.as_str()
            ),
        ));
    }
    if workflow.mixed_family {
        return Err(refused(
            "mixed_family_workflow",
            format!(
                "workflow {} mixes families and cannot run; repair it (`renderctl workflows repair {}`) and fix it first",
                workflow.id, workflow.id
            ),
        ));
    }
    let graph = workflow.graph_spec()?;
    let delivered = graph::validate(&graph, registry()).delivers;
    if !delivered.iter().any(|(_, k)| *k == input.artifact_kind) {
        let kinds: Vec<String> = delivered.iter().map(|(sink, k)| format!("{} (`{sink}`)", k.as_str())).collect();
        return Err(refused(
            "artifact_kind_not_produced",
            format!(
                "no sink of workflow {} delivers `{}`; it delivers: {}. Bind another workflow or change `artifact_kind`",
                workflow.id,
                input.artifact_kind.as_str(),
                if kinds.is_empty() { "nothing".into() } else { kinds.join(", ") }
            ),
        ));
    }
    overrides::apply(&graph, &input.invocation_overrides, registry()).map_err(|problems: Vec<Problem>| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_overrides",
        message: format!("{} invocation override(s) do not fit workflow {}; nothing was saved", problems.len(), workflow.id),
        problems,
    })?;
    Ok(())
}

pub(super) async fn load_workflow(state: &AppState, id: Uuid, version: Option<i32>) -> Result<WorkflowView, ApiError> {
    let client = state.pool.get().await?;
    let row = match version {
        Some(v) => client.query_opt(sql::WORKFLOW_VERSION, &[&id, &v]).await?,
        None => client.query_opt(sql::WORKFLOW_LATEST, &[&id]).await?,
    };
    let row = row.ok_or_else(|| {
        let which = version.map(|v| format!(" version {v}")).unwrap_or_default();
        refused("unknown_workflow", format!("no workflow {id}{which}; `GET /v1/workflows` lists them"))
    })?;
    Ok(WorkflowView::from_row(&row))
}

async fn write(state: &AppState, stmt: &str, key: &str, i: &OutputTypeInput, mode: RolloutMode) -> Result<Option<i32>, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            stmt,
            &[
                &key,
                &i.description,
                &i.family.as_str(),
                &i.artifact_kind.as_str(),
                &i.workflow_id,
                &i.workflow_version,
                &i.invocation_overrides,
                &i.legacy_preset,
                &mode.as_str(),
                &i.shadow_sample_pct,
                &i.gate_config,
                &i.default_priority.map(Priority::rank),
            ],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// `POST /v1/output-types`.
#[utoipa::path(post, path = "/v1/output-types", operation_id = "create_output_type", tag = "output types", request_body = OutputTypeInput,
    responses((status = 201, body = OutputTypeView), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 409, body = ErrorBody, description = "the key exists"),
        (status = 422, body = ErrorBody, description = "family mismatch, an artifact kind no sink delivers, overrides that do not fit, a graph mode without a workflow")))]
pub(super) async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let input: OutputTypeInput = json_body(&headers, &body, EXAMPLE)?;
    let key = input.key.clone().ok_or_else(|| refused("invalid_key", "`key` is required, e.g. \"still-2000-white\"".into()))?;
    let mode = input.rollout_mode.unwrap_or_default();
    check(&state, &key, &input, mode).await?;
    let Some(_) = write(&state, sql::INSERT_OUTPUT_TYPE, &key, &input, mode).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "output_type_exists",
            format!("output type `{key}` exists; change it with PUT /v1/output-types/{key}"),
        ));
    };
    tracing::info!(output_type = %key, mode = mode.as_str(), "output type created");
    let view = read(&state, &key).await?;
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/output-types/{key}"))], Json(view)).into_response())
}

/// `PUT /v1/output-types/{key}`: replaces it (every field; absent ones take their defaults).
#[utoipa::path(put, path = "/v1/output-types/{key}", operation_id = "update_output_type", tag = "output types", request_body = OutputTypeInput, params(("key" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", description = "an output type key")),
    responses((status = 200, body = OutputTypeView), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a `rollout_mode` other than the current one (modes move through promote and rollback), or promoted or rolled back meanwhile"), (status = 422, body = ErrorBody)))]
pub(super) async fn update(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OutputTypeView>, ApiError> {
    let input: OutputTypeInput = json_body(&headers, &body, EXAMPLE)?;
    if let Some(k) = input.key.as_deref().filter(|k| *k != key) {
        return Err(refused("key_mismatch", format!("the body's key `{k}` differs from the path's `{key}`; keys cannot be renamed")));
    }
    let current = read(&state, &key).await?;
    let mode = match current.rollout_mode.as_str() {
        "shadow" => RolloutMode::Shadow,
        "graph" => RolloutMode::Graph,
        _ => RolloutMode::Legacy,
    };
    if let Some(asked) = input.rollout_mode.filter(|m| *m != mode) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mode_change_via_rollout",
            format!(
                "`{key}` is `{}`; its mode changes only through POST /v1/output-types/{key}/promote or /rollback (`renderctl rollout promote|rollback {key}`), which check the gate and record why, not to `{}` by PUT",
                mode.as_str(),
                asked.as_str()
            ),
        ));
    }
    check(&state, &key, &input, mode).await?;
    // The mode is written back unchanged: a concurrent promote or rollback may have moved
    // it meanwhile, so UPDATE_OUTPUT_TYPE leaves it alone.
    if write(&state, sql::UPDATE_OUTPUT_TYPE, &key, &input, mode).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "changed_meanwhile",
            format!("`{key}` was promoted or rolled back while this edit was checked; read it again and retry"),
        ));
    }
    tracing::info!(output_type = %key, "output type changed");
    Ok(Json(read(&state, &key).await?))
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_output_type", format!("no output type `{key}`; `GET /v1/output-types` lists them"))
}

pub(super) async fn read(state: &AppState, key: &str) -> Result<OutputTypeView, ApiError> {
    let client = state.pool.get().await?;
    let row = client.query_opt(sql::OUTPUT_TYPE, &[&key]).await?.ok_or_else(|| not_found(key))?;
    Ok(OutputTypeView::from_row(&row))
}

/// `GET /v1/output-types/{key}`.
#[utoipa::path(get, path = "/v1/output-types/{key}", operation_id = "get_output_type", tag = "output types", params(("key" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", description = "an output type key")),
    responses((status = 200, body = OutputTypeView), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(key): Path<String>) -> Result<Json<OutputTypeView>, ApiError> {
    Ok(Json(read(&state, &key).await?))
}

/// `GET /v1/output-types`.
#[utoipa::path(get, path = "/v1/output-types", operation_id = "list_output_types", tag = "output types",
    responses((status = 200, body = Object, description = "`items`: every output type")))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let client = state.pool.get().await?;
    let items: Vec<OutputTypeView> = client.query(sql::OUTPUT_TYPES, &[]).await?.iter().map(OutputTypeView::from_row).collect();
    Ok(Json(json!({ "items": items })))
}
