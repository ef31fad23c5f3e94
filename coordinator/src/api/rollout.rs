//! Rolling a graph workflow out, output type by output type (DESIGN §8): the gate with the
//! numbers behind it, promotion (refused unless the gate passes, or forced with a reason),
//! rollback in one call, the history of mode changes, and the shadow comparisons.

use super::auth::Caller;
use super::{optional_json_body, ApiError, ErrorBody};
use crate::db::sql;
use crate::rollout::{self, ModeChange, ModeError, PromoteError};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use renderfleet_shared::gate::{GateConfig, GateResult, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

impl From<ModeError> for ApiError {
    fn from(e: ModeError) -> Self {
        match e {
            ModeError::Unknown(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_output_type", e.to_string()),
            ModeError::Refused { .. } => ApiError::new(StatusCode::CONFLICT, "mode_change_refused", e.to_string()),
            ModeError::Db(d) => d.into(),
        }
    }
}

/// The output type's mode and gate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct GateView {
    output_type: String,
    rollout_mode: String,
    config: GateConfig,
    gate: GateResult,
}

async fn gate_view(state: &AppState, key: &str) -> Result<GateView, ApiError> {
    let client = state.pool.get().await?;
    let (rollout_mode, config, gate) =
        rollout::state_of(&client, key).await?.ok_or_else(|| ApiError::from(ModeError::Unknown(key.into())))?;
    Ok(GateView { output_type: key.into(), rollout_mode, config, gate })
}

/// `GET /v1/output-types/{key}/gate`.
#[utoipa::path(get, path = "/v1/output-types/{key}/gate", tag = "rollout", params(("key" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", description = "an output type key")),
    responses((status = 200, body = GateView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_gate(State(state): State<AppState>, Path(key): Path<String>) -> Result<Json<GateView>, ApiError> {
    Ok(Json(gate_view(&state, &key).await?))
}

/// `POST .../promote` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(super) struct PromoteInput {
    /// Promote to `graph` although the gate does not pass; needs a `reason`.
    force: bool,
    reason: Option<String>,
}

/// `POST /v1/output-types/{key}/promote`: `legacy → shadow`, or `shadow → graph` when the
/// gate passes (else 409 with the gate's numbers). A `force` needs a reason and is recorded.
#[utoipa::path(post, path = "/v1/output-types/{key}/promote", tag = "rollout", params(("key" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", description = "an output type key")), request_body = Option<PromoteInput>,
    responses((status = 200, body = ModeChange), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = Object, description = "the gate does not pass (`gate` carries its numbers), or the mode cannot move that way"), (status = 422, body = ErrorBody, description = "`force` without a reason")))]
pub(super) async fn promote(
    State(state): State<AppState>,
    Path(key): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: PromoteInput = optional_json_body(&headers, &body, r#"{"force": false, "reason": "..."}"#)?;
    match rollout::promote(&state, &key, input.force, input.reason, &Caller::actor(caller.as_deref())).await {
        Ok(change) => Ok(Json(change).into_response()),
        Err(e @ PromoteError::GateNotPassing { .. }) => {
            let message = e.to_string();
            let PromoteError::GateNotPassing { gate, .. } = e else { unreachable!() };
            Ok((StatusCode::CONFLICT, Json(json!({"error": "gate_not_passing", "message": message, "gate": gate}))).into_response())
        }
        Err(e @ PromoteError::ReasonRequired) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reason_required", e.to_string())),
        Err(PromoteError::Mode(e)) => Err(e.into()),
    }
}

/// `POST .../rollback` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RollbackInput {
    reason: Option<String>,
}

/// `POST /v1/output-types/{key}/rollback`: any mode → `legacy`, at once; the very next
/// request is legacy. Resuming is an explicit `promote`.
#[utoipa::path(post, path = "/v1/output-types/{key}/rollback", tag = "rollout", params(("key" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", description = "an output type key")), request_body = Option<RollbackInput>,
    responses((status = 200, body = ModeChange), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already legacy")))]
pub(super) async fn rollback(
    State(state): State<AppState>,
    Path(key): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ModeChange>, ApiError> {
    let input: RollbackInput = optional_json_body(&headers, &body, r#"{"reason": "..."}"#)?;
    let view = gate_view(&state, &key).await?;
    let snapshot = serde_json::to_value(&view.gate).expect("gate serializes");
    let reason = input.reason.unwrap_or_else(|| "manual rollback".into());
    let actor = Caller::actor(caller.as_deref());
    Ok(Json(rollout::set_mode(&state, &key, None, "legacy", &reason, &actor, false, snapshot).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RolloutEvent {
    id: i64,
    from_mode: String,
    to_mode: String,
    reason: String,
    actor: String,
    forced: bool,
    #[schema(value_type = Object)]
    gate_snapshot: Value,
    at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Limit {
    /// At most this many (default 100; taken as 1 to 1000).
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /v1/output-types/{key}/rollout-events`: newest first.
#[utoipa::path(get, path = "/v1/output-types/{key}/rollout-events", tag = "rollout", params(("key" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", description = "an output type key"), Limit),
    responses((status = 200, body = Object, description = "`items`: mode changes, newest first"), (status = 404, body = ErrorBody, description = "no such output type")))]
pub(super) async fn events(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    // An output type that does not exist is 404, not an empty history.
    super::output_types::read(&state, &key).await?;
    let client = state.pool.get().await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items: Vec<RolloutEvent> = client
        .query(sql::ROLLOUT_EVENTS, &[&key, &limit])
        .await?
        .iter()
        .map(|r| RolloutEvent {
            id: r.get(0),
            from_mode: r.get(1),
            to_mode: r.get(2),
            reason: r.get(3),
            actor: r.get(4),
            forced: r.get(5),
            gate_snapshot: r.get(6),
            at: r.get(7),
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ComparisonView {
    id: Uuid,
    request_id: Uuid,
    output_type: String,
    /// `shadow` (graph against legacy) or `noise` (legacy against legacy).
    kind: String,
    control_run: Uuid,
    candidate_run: Uuid,
    compare_run: Option<Uuid>,
    status: String,
    verdict: Option<String>,
    #[schema(value_type = Object)]
    metrics: Value,
    /// The diff image of a mismatch, in the artifact store (`sha256/<2>/<sha256>`).
    diff_sha256: Option<String>,
    control_seconds: Option<f64>,
    candidate_seconds: Option<f64>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    /// The gate config's ignore rule that excused a mismatch (verdict `ignored`).
    ignore_rule: Option<String>,
}

impl ComparisonView {
    fn from_row(r: &tokio_postgres::Row) -> Self {
        ComparisonView {
            id: r.get(0),
            request_id: r.get(1),
            output_type: r.get(2),
            kind: r.get(3),
            control_run: r.get(4),
            candidate_run: r.get(5),
            compare_run: r.get(6),
            status: r.get(7),
            verdict: r.get(8),
            metrics: r.get(9),
            diff_sha256: r.get(10),
            control_seconds: r.get(11),
            candidate_seconds: r.get(12),
            created_at: r.get(13),
            decided_at: r.get(14),
            ignore_rule: r.get(15),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ComparisonFilter {
    /// Only this output type's comparisons.
    output_type: Option<String>,
    /// Only comparisons with this verdict; another value is 400 `invalid_verdict`.
    #[param(inline, value_type = Option<Verdict>)]
    verdict: Option<String>,
    /// At most this many (default 100; taken as 1 to 1000).
    limit: Option<i64>,
}

/// `GET /v1/comparisons`: newest first, filtered by output type and verdict.
#[utoipa::path(get, path = "/v1/comparisons", tag = "rollout", params(ComparisonFilter),
    responses((status = 200, body = Object, description = "`items`: comparisons"), (status = 400, body = ErrorBody, description = "an unknown verdict")))]
pub(super) async fn list_comparisons(State(state): State<AppState>, Query(f): Query<ComparisonFilter>) -> Result<Json<Value>, ApiError> {
    if let Some(v) = f.verdict.as_deref().filter(|v| !Verdict::ALL.iter().any(|k| k.as_str() == *v)) {
        let known: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_verdict",
            format!("unknown verdict `{v}`; use one of {}", known.join(", ")),
        ));
    }
    let client = state.pool.get().await?;
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    let items: Vec<ComparisonView> =
        client.query(sql::COMPARISONS, &[&f.output_type, &f.verdict, &limit]).await?.iter().map(ComparisonView::from_row).collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/comparisons/{id}`.
#[utoipa::path(get, path = "/v1/comparisons/{id}", tag = "rollout", params(("id" = Uuid, Path, description = "a UUID")),
    responses((status = 200, body = ComparisonView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_comparison(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ComparisonView>, ApiError> {
    let id: Uuid =
        id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", format!("`{id}` is not a comparison id (a UUID)")))?;
    let client = state.pool.get().await?;
    let row = client.query_opt(sql::COMPARISON, &[&id]).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "comparison_not_found", format!("no comparison {id}; `GET /v1/comparisons` lists them"))
    })?;
    Ok(Json(ComparisonView::from_row(&row)))
}
