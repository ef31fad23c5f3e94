//! The web console at `/console`: server-rendered HTML (no front-end build, no CDN: it works
//! with no network) over the same database and the same operations as the API, so a failed
//! render is debugged without SQL.
//!
//! One file per page, as `api/` has one per resource: `runs.rs` (the list, paged on the
//! server by keyset, and one run with its DAG, attempts, artifacts, Cancel and Retry),
//! `comparison.rs`, `rollout.rs`, `workers.rs`, `workflows.rs` (and `editor.rs`, the workflow
//! editor's shell), `products.rs`, `webhooks.rs`. This file holds the router and what the
//! pages share: error pages and reading artifacts from the store.
//!
//! Sign-in (`session`): an API token presented once starts a server-side session; reading
//! needs `read`, cancel/retry/rollback `operate`, promote `admin`, dispatch `submit`. Every
//! form that changes something carries the session's CSRF token, and `guard` lets a
//! state-changing request through only from the console's own origin and puts the security
//! headers on every response.

mod assets;
mod comparison;
mod dag;
mod editor;
mod guard;
mod html;
mod products;
mod rollout;
mod runs;
mod session;
mod webhooks;
mod workers;
mod workflows;

use crate::api::auth::{Scope, Tokens};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use html::{esc, page};
use session::Console;

/// The console's routes, under `/console`.
/// `api` is the API's router: the workflow editor's calls go to it through the session.
pub fn router(state: AppState, tokens: Tokens, api: Router) -> Router {
    let https = state.config.console.https;
    let console = Console { state: state.clone(), tokens };
    let pages = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/runs") }))
        .route("/console/runs", get(runs::runs))
        .route("/console/runs/{id}", get(runs::run))
        .route("/console/runs/{id}/cancel", post(runs::cancel))
        .route("/console/runs/{id}/retry", post(runs::retry))
        .route("/console/artifacts/{sha}", get(artifact))
        .route("/console/comparisons", get(comparison::list))
        .route("/console/comparisons/{id}", get(comparison::page))
        .route("/console/rollout", get(rollout::rollout_page))
        .route("/console/rollout/{key}/promote", post(rollout::promote))
        .route("/console/rollout/{key}/rollback", post(rollout::rollback))
        .route("/console/products/{product}", get(products::page))
        .route("/console/workers", get(workers::workers))
        .route("/console/workers/{id}/release", post(workers::release_worker))
        .route("/console/webhooks", get(webhooks::list))
        .route("/console/webhooks/{id}", get(webhooks::page))
        .route("/console/workflows", get(workflows::workflows))
        .route("/console/workflows/new", get(editor::new))
        .route("/console/workflows/{id}/edit", get(editor::edit))
        .route("/console/api/{*rest}", axum::routing::any(move |viewer, request| editor::api_proxy(api.clone(), viewer, request)))
        .route("/console/workflows/{id}", get(workflows::workflow))
        .route("/console/workflows/{id}/preflight", post(workflows::workflow_preflight))
        .route("/console/workflows/{id}/dispatch", post(workflows::workflow_dispatch))
        .route("/console/logout", get(session::logout_form).post(session::logout))
        .route_layer(middleware::from_fn(crate::api::refuse_nul_in_url))
        .route_layer(middleware::from_fn_with_state(console.clone(), session::signed_in))
        .with_state(state);
    Router::new()
        .route("/console/login", get(session::login_form).post(session::login))
        .with_state(console)
        .route("/console/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], html::STYLE) }))
        .route("/console/assets/{file}", get(assets::file))
        .merge(pages)
        .layer(middleware::from_fn_with_state(https, guard::guard))
}

/// An error page that says what went wrong.
fn oops(status: StatusCode, message: &str) -> Response {
    (status, Html(page("Error", &format!("<p class=\"error\">{}</p>", esc(message)), None, false))).into_response()
}

fn db_err(e: impl std::fmt::Display) -> Response {
    oops(StatusCode::SERVICE_UNAVAILABLE, &format!("the database is not answering ({e}); try again in a moment"))
}

fn forbidden(scope: Scope) -> Response {
    oops(StatusCode::FORBIDDEN, &format!("this needs a token with scope `{}`; sign in with one at /console/login", scope.as_str()))
}

fn some(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Where artifact `sha` lives in the store the console reads (`sha256/ab/<sha>`): `None`
/// when the console has no artifacts_dir or `sha` is not a well-formed hash (checked
/// before it becomes a path).
fn stored(state: &AppState, sha: &str) -> Option<std::path::PathBuf> {
    let relative = renderfleet_shared::artifact::store_path(sha)?;
    (!state.config.artifacts_dir.is_empty()).then(|| std::path::Path::new(&state.config.artifacts_dir).join(relative))
}

/// A JSON artifact (a turntable's frames, a part manifest) read from the store.
async fn stored_json<T: serde::de::DeserializeOwned>(state: &AppState, sha: &str) -> Option<T> {
    serde_json::from_slice(&tokio::fs::read(stored(state, sha)?).await.ok()?).ok()
}

/// An artifact from the store, by its hash.
async fn artifact(State(state): State<AppState>, Path(sha): Path<String>) -> Response {
    match crate::api::artifacts::stream(&state, &sha).await {
        Ok(r) => r,
        Err(e) => oops(e.status, &e.message),
    }
}
