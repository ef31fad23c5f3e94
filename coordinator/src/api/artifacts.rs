//! Artifact downloads by content address, from the store the coordinator reads
//! (`artifacts_dir`): what the completion events' `artifacts[].path` points at, and the
//! console's previews.

use super::{ApiError, ErrorBody};
use crate::db::sql;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// `GET /v1/artifacts/{sha256}`.
#[utoipa::path(get, path = "/v1/artifacts/{sha256}", operation_id = "get_artifact", tag = "artifacts",
    params(("sha256" = String, Path, pattern = "^[0-9a-f]{64}$", description = "the artifact's SHA-256, as in a run's outputs or an event")),
    responses((status = 200, description = "the bytes, streamed, with the artifact's type", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody, description = "not in this coordinator's store (or it has no `artifacts_dir`)")))]
pub(super) async fn get(State(state): State<AppState>, Path(sha): Path<String>) -> Result<Response, ApiError> {
    stream(&state, &sha).await
}

/// The artifact `sha` from the store, streamed (a .blend or a video can be large, and the
/// coordinator also applies results). Only a PNG is shown inline; everything else is a
/// download, never rendered by a browser (the type is the worker's word, and could be
/// text/html).
pub(crate) async fn stream(state: &AppState, sha: &str) -> Result<Response, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "artifact_not_found",
            format!("artifact {sha} is not in this coordinator's store: check the hash, and that `artifacts_dir` is the workers' store"),
        )
    };
    let relative = renderfleet_shared::artifact::store_path(sha).ok_or_else(missing)?;
    if state.config.artifacts_dir.is_empty() {
        return Err(missing());
    }
    let path = std::path::Path::new(&state.config.artifacts_dir).join(relative);
    let client = state.pool.get().await?;
    let mime = client.query_opt(sql::ARTIFACT_MIME, &[&sha]).await?.map(|r| r.get::<_, String>("mime"));
    drop(client);
    let file = tokio::fs::File::open(&path).await.map_err(|_| missing())?;
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mime = mime.unwrap_or_else(|| "application/octet-stream".into());
    let disposition = match mime.as_str() {
        "image/png" => "inline".to_string(),
        m => format!("attachment; filename=\"{}{}\"", &sha[..16], extension(m)),
    };
    let content_type = HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).expect("hex and ASCII")),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        body,
    )
        .into_response())
}

/// A download's file name extension, by its type.
fn extension(mime: &str) -> &'static str {
    match mime {
        "model/gltf-binary" => ".glb",
        "application/x-blender" => ".blend",
        "video/mp4" => ".mp4",
        "application/json" => ".json",
        "model/step" => ".step",
        _ => "",
    }
}
