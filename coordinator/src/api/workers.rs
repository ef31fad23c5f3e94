//! Workers as their heartbeats describe them, and an operator's release of a module a worker
//! quarantined (see the worker's `consumer::quarantine`).

use super::{optional_json_body, ApiError, ErrorBody};
use crate::db::sql;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use renderfleet_shared::wire::Quarantined;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Workers heard from within this long are listed (a silent one shows as `silent`).
const LISTED_FOR_SECS: f64 = 600.0;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkerView {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) version: String,
    /// `running`, `draining`, `stopped`, or `silent`: no heartbeat within the coordinator's
    /// heartbeat timeout.
    pub(crate) status: String,
    /// The modules it takes now (quarantined ones are not among them).
    pub(crate) modules: Vec<String>,
    /// Modules it stopped taking after failing tasks in a row for reasons not about their
    /// input, each with its last error and when its cool-down ends.
    #[schema(value_type = Vec<Object>)]
    pub(crate) quarantined: Vec<QuarantineView>,
    pub(crate) concurrency: i32,
    pub(crate) running: i32,
    pub(crate) last_seen: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub(crate) tools: Value,
}

#[derive(Debug, Serialize)]
pub(crate) struct QuarantineView {
    pub(crate) module: String,
    pub(crate) failures: u32,
    pub(crate) last_error: String,
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) until: Option<DateTime<Utc>>,
}

impl From<Quarantined> for QuarantineView {
    fn from(q: Quarantined) -> Self {
        let at = DateTime::from_timestamp_micros;
        Self { module: q.module, failures: q.failures, last_error: q.last_error, since: at(q.since_us), until: at(q.until_us) }
    }
}

/// The workers heard from in the last ten minutes, as [`WorkerView`]s.
pub(crate) async fn list_views(state: &AppState) -> Result<Vec<WorkerView>, ApiError> {
    let client = state.pool.get().await?;
    let live = state.config.recovery.heartbeat_timeout.as_secs_f64();
    let rows = client.query(sql::WORKERS, &[&LISTED_FOR_SECS]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let status: String = r.get("status");
            let quiet: f64 = r.get("quiet_secs");
            let quarantined: Vec<Quarantined> = serde_json::from_value(r.get("quarantined")).unwrap_or_default();
            WorkerView {
                id: r.get("id"),
                host: r.get("host"),
                version: r.get("version"),
                status: if quiet > live && status != "stopped" { "silent".into() } else { status },
                modules: r.get("modules"),
                quarantined: quarantined.into_iter().map(Into::into).collect(),
                concurrency: r.get("concurrency"),
                running: r.get("running"),
                last_seen: r.get("last_seen"),
                tools: r.get("tools"),
            }
        })
        .collect())
}

/// `GET /v1/workers`.
#[utoipa::path(get, path = "/v1/workers", operation_id = "list_workers", tag = "workers",
    responses((status = 200, body = Vec<WorkerView>, description = "the workers heard from in the last ten minutes, by id")))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(list_views(&state).await?))
}

/// `POST /v1/workers/{worker_id}/release` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct ReleaseInput {
    /// The module to take up again; none: every quarantined module of the worker.
    module: Option<String>,
}

/// `POST /v1/workers/{worker_id}/release`: an operator's word that the host is mended.
#[utoipa::path(post, path = "/v1/workers/{worker_id}/release", operation_id = "release_worker", tag = "workers",
    params(("worker_id" = String, Path, description = "a worker id, as `GET /v1/workers` lists it")), request_body = Option<ReleaseInput>,
    description = "The worker takes up its quarantined module (or every one) again before the cool-down ends: mend the host first (install the tool, free the disk), or it fails its next tasks and quarantines the module again.",
    responses((status = 200, body = Object, description = "`released`: the modules the worker was told to take again"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "nothing of that worker is in quarantine"), (status = 503, body = ErrorBody, description = "the broker is not reachable")))]
pub(super) async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: ReleaseInput = optional_json_body(&headers, &body, r#"{"module": "blender_still"}"#)?;
    let released = crate::dispatch::operate::release(&state, &id, input.module.as_deref()).await?;
    Ok(Json(json!({"worker_id": id, "released": released})))
}
