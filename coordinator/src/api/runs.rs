//! The runs list: what the console's Runs page shows, for scripts and `renderctl runs list`,
//! filtered the same way and paged by the same keyset cursor.

use super::{paging, ApiError, ErrorBody};
use crate::db::sql;
use crate::AppState;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use renderfleet_shared::runs::{Pipeline, RunRole, RunStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default and largest page.
const PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    status: Option<RunStatus>,
    /// An output type's key.
    output_type: Option<String>,
    pipeline: Option<Pipeline>,
    role: Option<RunRole>,
    /// Created in the last N hours.
    #[param(minimum = 0.001, maximum = 1000000)]
    hours: Option<f64>,
    /// The previous page's `next`.
    after: Option<String>,
    /// Runs per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RunSummary {
    id: Uuid,
    status: RunStatus,
    pipeline: Pipeline,
    role: RunRole,
    output_type: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    nodes_done: i32,
    nodes_total: i32,
    /// The node that failed the run, and why.
    failing_node: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RunPage {
    items: Vec<RunSummary>,
    /// Give as `after` for the next page; none on the last.
    next: Option<String>,
}

/// `GET /v1/runs`.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs", params(RunsQuery),
    description = "Runs newest first, filtered as the console's Runs page filters them, a page at a time (keyset: give the answer's `next` as `after`).",
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody, description = "a filter or cursor that does not parse")))]
pub(super) async fn list(State(state): State<AppState>, Query(q): Query<RunsQuery>) -> Result<Json<RunPage>, ApiError> {
    let cursor = paging::cursor(q.after.as_deref())?;
    let since = paging::since(q.hours)?;
    let limit = paging::limit(q.limit, PAGE, MAX_PAGE)?;
    let client = state.pool.get().await?;
    let rows = client
        .query(
            sql::CONSOLE_RUNS,
            &[
                &q.status.map(RunStatus::as_str),
                &q.output_type,
                &q.pipeline.map(Pipeline::as_str),
                &q.role.map(RunRole::as_str),
                &since,
                &cursor.map(|c| c.0),
                &cursor.map(|c| c.1),
                &limit,
            ],
        )
        .await?;
    let items: Vec<RunSummary> = rows
        .iter()
        .map(|r| RunSummary {
            id: r.get("id"),
            status: RunStatus::parse(r.get("status")).unwrap_or(RunStatus::Running),
            pipeline: Pipeline::parse(r.get("pipeline")).unwrap_or(Pipeline::Graph),
            role: RunRole::parse(r.get("role")).unwrap_or(RunRole::Authoritative),
            output_type: r.get("output_type_key"),
            created_at: r.get("created_at"),
            finished_at: r.get("finished_at"),
            nodes_done: r.get("nodes_done"),
            nodes_total: r.get("nodes_total"),
            failing_node: r.get("failing_node"),
            error: r.get("failure"),
        })
        .collect();
    let next = (items.len() as i64 == limit).then(|| items.last().map(|r| paging::next(r.created_at, r.id))).flatten();
    Ok(Json(RunPage { items, next }))
}
