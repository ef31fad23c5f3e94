//! Bearer tokens with scopes. Tokens come from configuration as SHA-256 hashes; a presented
//! token is hashed and compared with every configured hash in constant time, so neither the
//! secret nor a timing difference leaks. A missing or unknown token is 401; a known token
//! without the route's scope is 403 and names the scope needed.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The security scheme's name in the OpenAPI document.
pub const SCHEME: &str = "bearer";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The order system: render requests and their results.
    Submit,
    /// Everything that only reads.
    Read,
    /// Retry, cancel, rollback.
    Operate,
    /// Workflows, output types, materials, promote. Grants every scope.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Submit, Scope::Read, Scope::Operate, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone)]
struct Token {
    name: String,
    scopes: Vec<Scope>,
    sha256: [u8; 32],
}

/// The configured tokens; `None` when the API is open (development).
#[derive(Debug, Clone)]
pub struct Tokens(Option<Arc<Vec<Token>>>);

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "auth token entry #{index} `{shown}` is not NAME:SCOPES:SHA256 ({reason}); `renderctl token new NAME SCOPES` prints a valid entry"
    )]
    Entry { index: usize, shown: String, reason: String },
    #[error("no API tokens are configured: add one to [auth] tokens or RENDERFLEET_AUTH__TOKENS (`renderctl token new admin admin` prints one), or set RENDERFLEET_AUTH__OPEN=true on a development machine")]
    None,
}

impl Tokens {
    pub fn from_config(entries: &[String], open: bool) -> Result<Tokens, AuthConfigError> {
        if entries.is_empty() {
            return if open { Ok(Tokens(None)) } else { Err(AuthConfigError::None) };
        }
        let mut tokens = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let bad = |reason: &str| AuthConfigError::Entry {
                index,
                // The hash is not secret, but keep errors short.
                shown: entry.chars().take(40).collect(),
                reason: reason.into(),
            };
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(scopes), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected three parts separated by `:`"));
            };
            if name.is_empty() {
                return Err(bad("the name is empty"));
            }
            let scopes: Vec<Scope> = scopes
                .split('+')
                .map(|s| Scope::parse(s.trim()).ok_or_else(|| bad(&format!("unknown scope `{s}`; scopes: submit, read, operate, admin"))))
                .collect::<Result<_, _>>()?;
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(hash.trim(), &mut sha256).map_err(|_| bad("the hash must be 64 hex digits (SHA-256 of the secret)"))?;
            tokens.push(Token { name: name.into(), scopes, sha256 });
        }
        Ok(Tokens(Some(Arc::new(tokens))))
    }

    pub fn is_open(&self) -> bool {
        self.0.is_none()
    }

    /// For the console's sign-in: the name and scopes of the token `secret`, `None` for a
    /// secret this coordinator does not know (an open coordinator grants every scope).
    pub fn identify(&self, secret: &str) -> Option<(String, Vec<Scope>)> {
        if self.is_open() {
            return Some(("open".into(), Scope::ALL.to_vec()));
        }
        self.find(secret).map(|t| (t.name.clone(), t.scopes.clone()))
    }

    /// The scopes the tokens named `name` hold now; `None` once no token has that name. A
    /// console session is narrowed to these on every request, so taking a token out of the
    /// configuration (and restarting) ends its sessions.
    pub fn scopes_of(&self, name: &str) -> Option<Vec<Scope>> {
        let Some(tokens) = self.0.as_deref() else { return Some(Scope::ALL.to_vec()) };
        let named: Vec<Scope> = tokens.iter().filter(|t| t.name == name).flat_map(|t| t.scopes.iter().copied()).collect();
        (!named.is_empty()).then_some(named)
    }

    /// The token whose hash matches `secret`. Every configured hash is compared, in constant
    /// time, whatever matches first.
    fn find(&self, secret: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for t in self.0.as_deref().into_iter().flatten() {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }
}

/// The hex SHA-256 of a secret, as configuration stores it.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Route layer: lets the request through if it carries a token with `scope` (or `admin`).
/// A refusal leaves the body unread, so it closes the connection and says so.
pub async fn require(State((tokens, scope)): State<(Tokens, Scope)>, mut request: Request, next: Next) -> Response {
    match refusal(&tokens, scope, &request) {
        None => {
            let caller = caller(&tokens, &request);
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Some(mut r) => {
            if super::has_body(request.headers()) {
                super::close_connection(&mut r);
            }
            r
        }
    }
}

/// A console session's grant, put on a request by the console when it passes one of its
/// editor's calls to the API (`/console/api/v1/...`): the session stands in for the bearer
/// token. Only server code can set an extension, so no client can present one.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub name: String,
    pub scopes: Vec<Scope>,
}

/// Who is calling, put on every request that passed [`require`]: the token's name (a
/// console session's), or `None` on an open coordinator. Work is attributed to it for fair
/// share unless the request names a `tenant`.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<String>);

impl Caller {
    /// How an action by this caller is recorded (rollout events): its token's name, or
    /// `anonymous` on an open coordinator.
    pub fn actor(caller: Option<&Caller>) -> String {
        caller.and_then(|c| c.0.clone()).unwrap_or_else(|| "anonymous".into())
    }
}

/// Who work sent by `caller` counts against for fair share: the request's `tenant`, else
/// the caller's token name (`shared::scheduling::submitter`); a bad tenant is a 422.
pub fn submitter(tenant: Option<&str>, caller: Option<&Caller>) -> Result<String, super::ApiError> {
    renderfleet_shared::scheduling::submitter(tenant, caller.and_then(|c| c.0.as_deref()))
        .map_err(|e| super::ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_tenant", e))
}

fn caller(tokens: &Tokens, request: &Request) -> Caller {
    if let Some(grant) = request.extensions().get::<SessionGrant>() {
        return Caller(Some(grant.name.clone()));
    }
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    Caller(presented.map(str::trim).and_then(|secret| tokens.find(secret)).map(|t| t.name.clone()))
}

/// The 401 or 403 for `request`, if it does not carry a token with `scope`.
fn refusal(tokens: &Tokens, scope: Scope, request: &Request) -> Option<Response> {
    if tokens.is_open() {
        return None;
    }
    let what = format!("{} {}", request.method(), request.uri().path());
    if let Some(grant) = request.extensions().get::<SessionGrant>() {
        return (!grant.scopes.contains(&scope) && !grant.scopes.contains(&Scope::Admin)).then(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!(
                    "{what} needs scope `{}`; the console session of `{}` lacks it: sign in with a token that has it",
                    scope.as_str(),
                    grant.name
                ),
            )
            .into_response()
        });
    }
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(secret) = presented.map(str::trim).filter(|s| !s.is_empty()) else {
        return Some(unauthorized(format!(
            "{what} needs a bearer token with scope `{}`: send `Authorization: Bearer TOKEN`",
            scope.as_str()
        )));
    };
    let Some(token) = tokens.find(secret) else {
        return Some(unauthorized("the bearer token is not one this coordinator knows; check it, or ask for a new one".into()));
    };
    if !token.scopes.contains(&scope) && !token.scopes.contains(&Scope::Admin) {
        let has: Vec<&str> = token.scopes.iter().map(|s| s.as_str()).collect();
        return Some(
            ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!(
                    "{what} needs scope `{}`; token `{}` has {}: use a token with `{}`",
                    scope.as_str(),
                    token.name,
                    has.join(", "),
                    scope.as_str()
                ),
            )
            .into_response(),
        );
    }
    None
}

fn unauthorized(message: String) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_secrets_match_their_hash_only() {
        let entry = format!("ops:read+operate:{}", hash_secret("s3cret"));
        let t = Tokens::from_config(&[entry], false).unwrap();
        let found = t.find("s3cret").unwrap();
        assert_eq!((found.name.as_str(), found.scopes.clone()), ("ops", vec![Scope::Read, Scope::Operate]));
        assert!(t.find("s3cret ").is_none() && t.find("").is_none());
        assert_eq!(t.identify("s3cret"), Some(("ops".into(), vec![Scope::Read, Scope::Operate])));
        assert_eq!((t.scopes_of("ops"), t.scopes_of("gone")), (Some(vec![Scope::Read, Scope::Operate]), None));
    }

    #[test]
    fn bad_entries_and_no_tokens_are_refused_with_the_fix() {
        let e = Tokens::from_config(&["ops:reed:00".into()], false).unwrap_err().to_string();
        assert!(e.contains("unknown scope `reed`") && e.contains("renderctl token new"), "{e}");
        let e = Tokens::from_config(&["ops:read:xyz".into()], false).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(Tokens::from_config(&[], false).unwrap_err().to_string().contains("RENDERFLEET_AUTH__OPEN"));
        assert!(Tokens::from_config(&[], true).unwrap().is_open());
    }
}
