//! The console's front-end bundles (the workflow editor, the comparison view, the 3D product
//! preview), built
//! from `coordinator/web` and committed under `web/dist`, compiled into this binary so that
//! `cargo build` alone serves them and nothing comes from the network. Every other console
//! page runs no script at all (`guard`'s policy); a page that runs a bundle sets [`CSP`].

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const FILES: [(&str, &str, &str); 6] = [
    ("editor.js", "text/javascript; charset=utf-8", include_str!("../../web/dist/editor.js")),
    ("editor.css", "text/css; charset=utf-8", include_str!("../../web/dist/editor.css")),
    ("compare.js", "text/javascript; charset=utf-8", include_str!("../../web/dist/compare.js")),
    ("compare.css", "text/css; charset=utf-8", include_str!("../../web/dist/compare.css")),
    ("preview.js", "text/javascript; charset=utf-8", include_str!("../../web/dist/preview.js")),
    ("preview.css", "text/css; charset=utf-8", include_str!("../../web/dist/preview.css")),
];

/// A page that runs a bundle: scripts from the console's own origin only (inline styles for
/// React Flow's positioning; images from the console, or drawn in the page).
pub(super) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/console/assets/{file}`.
pub(super) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")], *body).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no asset `{name}`; the console has {}", FILES.map(|f| f.0).join(", "))).into_response(),
    }
}

/// The tags that load bundle `name` (its script and its style sheet).
pub(super) fn tags(name: &str) -> String {
    format!("<link rel=\"stylesheet\" href=\"/console/assets/{name}.css\"><script src=\"/console/assets/{name}.js\" defer></script>")
}

/// `response` allowed to run the console's bundles.
pub(super) fn with_scripts(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}
