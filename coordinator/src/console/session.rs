//! Signing in to the console. An API token is presented once, at `/console/login`; the
//! coordinator then keeps a server-side session (table `console_sessions`: the SHA-256 of a
//! random session id, the token's name and scopes, created, expires 12 h later) and the
//! browser's cookie (HttpOnly, SameSite=Strict, `Path=/console`, `Secure` with
//! `[console] https`) carries the session id only, never the token. Each request reads the
//! session again and narrows its scopes to what the token still holds in the configuration.
//!
//! CSRF: every state-changing form carries the session's CSRF token, checked in constant time
//! on every POST behind the sign-in. It is derived from the session id (a hash with its own
//! label), so it needs no column and a copy of the table yields neither an id nor a token.
//! `guard` checks Origin and Sec-Fetch-Site on top, on every POST, the sign-in included.

use super::html::{csrf_field, esc, page};
use super::{db_err, oops, AppState};
use crate::api::auth::{Scope, Tokens};
use axum::body::Body;
use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const COOKIE: &str = "rf_console";
/// A working day.
const LIFETIME_SECS: i64 = 12 * 3600;
/// The largest console form (a dispatch's subject is the biggest part).
const FORM_LIMIT: usize = 1 << 20;

// The console's own statements (db/sql.rs holds the rest).
const INSERT: &str = "INSERT INTO console_sessions (id_sha256, token_name, scopes, expires_at)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4))";
const FIND: &str = "SELECT token_name, scopes FROM console_sessions WHERE id_sha256 = $1 AND expires_at > now()";
const DELETE: &str = "DELETE FROM console_sessions WHERE id_sha256 = $1";
const DELETE_EXPIRED: &str = "DELETE FROM console_sessions WHERE expires_at <= now()";

/// What the console's handlers share: the coordinator's state and its tokens.
#[derive(Clone)]
pub(super) struct Console {
    pub(super) state: AppState,
    pub(super) tokens: Tokens,
}

/// Who is signed in: the session, the token's name and the scopes it grants now.
#[derive(Clone)]
pub(super) struct Viewer {
    session: Vec<u8>,
    name: String,
    scopes: Vec<Scope>,
    csrf: String,
}

impl Viewer {
    /// The signed-in token's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// What the editor's API calls run with: this session's token name and scopes.
    pub(super) fn grant(&self) -> crate::api::auth::SessionGrant {
        crate::api::auth::SessionGrant { name: self.name.clone(), scopes: self.scopes.clone() }
    }

    pub(super) fn csrf(&self) -> &str {
        &self.csrf
    }

    pub(super) fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// The hidden CSRF field for a form of this session.
    pub(super) fn field(&self) -> String {
        csrf_field(&self.csrf)
    }

    /// A page with this viewer's sign-out button.
    pub(super) fn page(&self, title: &str, body: &str) -> Html<String> {
        Html(page(title, body, Some(&self.csrf), false))
    }

    pub(super) fn refreshing_page(&self, title: &str, body: &str) -> Html<String> {
        Html(page(title, body, Some(&self.csrf), true))
    }
}

/// Where the console passes its editor's calls on to the API (see `console::api_proxy`).
pub(super) const API_PREFIX: &str = "/console/api/";
const CSRF_HEADER: &str = "x-csrf-token";

fn api_refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": code, "message": message}))).into_response()
}

fn digest(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

fn csrf_of(id: &str) -> String {
    hex::encode(Sha256::new().chain_update(b"renderfleet console csrf\0").chain_update(id.as_bytes()).finalize())
}

/// The session id in the console's cookie.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(String::from))
        .filter(|id| !id.is_empty())
}

fn cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Route layer of every page behind the sign-in: finds the session (else to the sign-in
/// page), needs `read`, and checks the CSRF token of every state-changing request.
pub(super) async fn signed_in(State(c): State<Console>, mut request: Request, next: Next) -> Response {
    // The editor's calls to the API answer as the API does: JSON, never a redirect.
    let api = request.uri().path().starts_with(API_PREFIX);
    let signed_out = || match api {
        true => api_refusal(StatusCode::UNAUTHORIZED, "unauthorized", "the console session has ended: sign in again at /console/login"),
        false => Redirect::to("/console/login").into_response(),
    };
    let Some(id) = session_cookie(request.headers()) else { return signed_out() };
    let client = match c.state.pool.get().await {
        Ok(client) => client,
        Err(e) => return db_err(e),
    };
    let row = match client.query_opt(FIND, &[&digest(&id)]).await {
        Ok(row) => row,
        Err(e) => return db_err(e),
    };
    drop(client);
    // Expired, signed out, or its token is no longer configured.
    let Some((name, scopes)) = row.and_then(|r| {
        let name: String = r.get(0);
        let now = c.tokens.scopes_of(&name)?;
        let scopes = r.get::<_, Vec<String>>(1).iter().filter_map(|s| Scope::parse(s)).filter(|s| now.contains(s)).collect();
        Some((name, scopes))
    }) else {
        return signed_out();
    };
    let viewer = Viewer { session: digest(&id), name: name.clone(), scopes, csrf: csrf_of(&id) };
    if !viewer.may(Scope::Read) {
        let body = format!(
            "<p>Token <b>{}</b> lacks the <code>read</code> scope the console needs. <a href=\"/console/login\">Sign in with another token</a>.</p>",
            esc(&name)
        );
        return (StatusCode::FORBIDDEN, viewer.page("Not allowed", &body)).into_response();
    }
    if api && !request.method().is_safe() {
        // The editor sends JSON: its CSRF token travels in a header.
        let presented = request.headers().get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !bool::from(presented.ct_eq(viewer.csrf.as_bytes())) {
            return api_refusal(
                StatusCode::FORBIDDEN,
                "csrf_refused",
                "the request's X-CSRF-Token is missing or is not this session's (a page from before you signed in again?); reload the page",
            );
        }
    } else if !request.method().is_safe() {
        request = match with_csrf_checked(request, &viewer.csrf).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    }
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

/// Reads the form and checks its `csrf` field against the session's (one field, exactly);
/// gives the request back with its body to the handler.
async fn with_csrf_checked(request: Request, csrf: &str) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return Err(oops(StatusCode::PAYLOAD_TOO_LARGE, "the form is larger than the console accepts"));
    };
    // The token is hex: a field that is not literally `csrf=<hex>` cannot match anyway.
    let mut presented = bytes.split(|b| *b == b'&').filter_map(|kv| kv.strip_prefix(b"csrf="));
    let ok = match (presented.next(), presented.next()) {
        (Some(token), None) => bool::from(token.ct_eq(csrf.as_bytes())),
        _ => false,
    };
    if !ok {
        return Err(oops(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or is not this session's (a page from before you signed in again?); reload the page and send it again",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

pub(super) async fn login_form() -> Html<String> {
    Html(page(
        "Sign in",
        "<form method=\"post\" action=\"/console/login\" class=\"card\"><p>Paste an API token (scope <code>read</code>; \
         <code>operate</code> to cancel, retry and roll back; <code>admin</code> to promote). \
         <code>renderctl token new NAME read+operate</code> makes one.</p>\
         <input type=\"password\" name=\"token\" id=\"token\" size=\"60\" autofocus> <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
        None,
        false,
    ))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Starts a session for a token with `read` (a new id at every sign-in: this browser's old
/// session ends); expired sessions are cleared on the way.
pub(super) async fn login(State(c): State<Console>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let Some((name, scopes)) = c.tokens.identify(f.token.trim()).filter(|(_, s)| s.contains(&Scope::Read) || s.contains(&Scope::Admin))
    else {
        let body =
            "<p class=\"error\">That token is unknown here or lacks <code>read</code>. <a href=\"/console/login\">Try again</a>.</p>";
        return (StatusCode::UNAUTHORIZED, Html(page("Sign in", body, None, false))).into_response();
    };
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        return oops(StatusCode::INTERNAL_SERVER_ERROR, &format!("no randomness from the OS for a session id: {e}"));
    }
    let id = hex::encode(bytes);
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let client = match c.state.pool.get().await {
        Ok(client) => client,
        Err(e) => return db_err(e),
    };
    if let Some(old) = session_cookie(&headers) {
        let _ = client.execute(DELETE, &[&digest(&old)]).await;
    }
    let _ = client.execute(DELETE_EXPIRED, &[]).await;
    if let Err(e) = client.execute(INSERT, &[&digest(&id), &name, &scopes, &(LIFETIME_SECS as f64)]).await {
        return db_err(e);
    }
    let set = cookie(&id, LIFETIME_SECS, c.state.config.console.https);
    ([(header::SET_COOKIE, set)], Redirect::to("/console/runs")).into_response()
}

/// `GET /console/logout` changes nothing: it asks.
pub(super) async fn logout_form(viewer: axum::Extension<Viewer>) -> Html<String> {
    let body = format!(
        "<form method=\"post\" action=\"/console/logout\" class=\"card\"><p>Sign out of the console in this browser?</p>{}<button id=\"confirm-sign-out\">Sign out</button></form>",
        viewer.field()
    );
    viewer.page("Sign out", &body)
}

/// Ends the session (its row is deleted: the cookie is worth nothing after, even if kept).
pub(super) async fn logout(State(state): State<AppState>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(client) => client,
        Err(e) => return db_err(e),
    };
    if let Err(e) = client.execute(DELETE, &[&viewer.session]).await {
        return db_err(e);
    }
    ([(header::SET_COOKIE, cookie("", 0, state.config.console.https))], Redirect::to("/console/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_id_its_stored_hash_and_its_csrf_token_are_three_different_values() {
        let id = "ab".repeat(32);
        let (stored, csrf) = (hex::encode(digest(&id)), csrf_of(&id));
        assert!(stored != id && csrf != id && csrf != stored && csrf.len() == 64);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {COOKIE}={id}").parse().unwrap());
        assert_eq!(session_cookie(&h).as_deref(), Some(id.as_str()));
        assert_eq!(cookie("x", 0, true), "rf_console=x; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0; Secure");
    }
}
