//! The workflow editor: `/console/workflows/new?family=F` and `/console/workflows/{id}/edit`.
//! The page is a shell for the browser front end in `coordinator/web` (React Flow; see
//! `assets`), which reads and writes through the API itself, passed on by [`api_proxy`]
//! under the session's scopes.

use super::html::esc;
use super::session::{Viewer, API_PREFIX};
use super::{assets, oops};
use crate::api::auth::Scope;
use axum::extract::{Path, Query, Request};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use renderfleet_shared::registry::Family;
use serde::Deserialize;
use tower::ServiceExt;
use uuid::Uuid;

#[derive(Deserialize)]
pub(super) struct NewQuery {
    family: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct EditQuery {
    version: Option<i32>,
}

pub(super) async fn new(Query(q): Query<NewQuery>, viewer: axum::Extension<Viewer>) -> Response {
    let family = q.family.as_deref().unwrap_or("order_line");
    if Family::parse(family).is_none() {
        return oops(StatusCode::NOT_FOUND, &format!("no family `{family}`; families are cad_file and order_line"));
    }
    shell(&viewer, "New workflow", &format!("data-family=\"{}\"", esc(family)))
}

pub(super) async fn edit(Path(id): Path<Uuid>, Query(q): Query<EditQuery>, viewer: axum::Extension<Viewer>) -> Response {
    let version = q.version.map(|v| format!(" data-version=\"{v}\"")).unwrap_or_default();
    shell(&viewer, "Edit workflow", &format!("data-workflow=\"{id}\"{version}"))
}

fn shell(viewer: &Viewer, title: &str, data: &str) -> Response {
    let body = format!(
        "<div id=\"editor\" {data} data-csrf=\"{}\" data-admin=\"{}\" data-submit=\"{}\"><noscript>The editor needs JavaScript.</noscript></div>{}",
        esc(viewer.csrf()),
        viewer.may(Scope::Admin),
        viewer.may(Scope::Submit),
        assets::tags("editor"),
    );
    assets::with_scripts(viewer.page(title, &body).into_response())
}

/// `/console/api/v1/...` → the API's `/v1/...`, authorised by the session (its scopes stand in
/// for a bearer token; the CSRF header was checked by `session::signed_in`).
pub(super) async fn api_proxy(api: Router, viewer: axum::Extension<Viewer>, request: Request) -> Response {
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let rest = path_and_query.strip_prefix(API_PREFIX.trim_end_matches('/')).unwrap_or(path_and_query);
    if !rest.starts_with("/v1/") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "not_found", "message": "the console passes on /console/api/v1/... only"})),
        )
            .into_response();
    }
    let Ok(uri) = rest.parse::<Uri>() else { return oops(StatusCode::BAD_REQUEST, "a URL that does not parse") };
    // A fresh request, not the console's: its extensions hold the console route's own path
    // parameters, which the API's extractors would read as theirs.
    let (parts, body) = request.into_parts();
    let mut inner = Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = uri;
    *inner.headers_mut() = parts.headers;
    inner.headers_mut().remove(header::AUTHORIZATION);
    inner.extensions_mut().insert(viewer.grant());
    match api.oneshot(inner).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
