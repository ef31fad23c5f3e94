//! The layer around every console route. Each state-changing request (the sign-in included,
//! against login CSRF) must come from the console's own pages: `Sec-Fetch-Site`, when the
//! browser sends it, is `same-origin`, and `Origin` is present and is the console's own origin
//! (`http://` + the Host header, `https://` with `[console] https`). SameSite=Strict is not
//! enough on its own: another port of the same host is the same site. Every response gets the
//! security headers: no script at all, nothing framing the console, no type sniffing, no
//! referrer sent elsewhere.

use super::oops;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

const CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(super) async fn guard(State(https): State<bool>, request: Request, next: Next) -> Response {
    let mut response = match request.method().is_safe() {
        false => match same_origin(request.headers(), request.uri(), https) {
            Ok(()) => next.run(request).await,
            Err(why) => oops(axum::http::StatusCode::FORBIDDEN, &format!("refused: {why}")),
        },
        true => next.run(request).await,
    };
    let h = response.headers_mut();
    // A page that runs the editor's bundle sets its own (narrow) policy.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // `same-origin`, not `no-referrer`: with no-referrer, Chromium sends `Origin: null` on
    // the console's own form posts, which the check above would refuse.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Why a state-changing request did not come from the console's own pages, if it did not.
fn same_origin(headers: &HeaderMap, uri: &Uri, https: bool) -> Result<(), String> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = text("sec-fetch-site").filter(|s| *s != "same-origin") {
        return Err(format!("the form was sent from another site (Sec-Fetch-Site: {site}); use the console's own pages"));
    }
    let host = text("host").or(uri.authority().map(|a| a.as_str())).unwrap_or("");
    let own = format!("{}://{host}", if https { "https" } else { "http" });
    match text("origin") {
        Some(origin) if origin.eq_ignore_ascii_case(&own) => Ok(()),
        Some(origin) => Err(format!(
            "the form was sent from {origin}, not from the console's own origin {own} (behind a TLS proxy: set [console] https = true and have the proxy pass the browser's Host header)"
        )),
        None => Err(format!("the request has no Origin header; send the console's forms from a browser, on {own}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], https: bool) -> Result<(), String> {
        let headers: HeaderMap = pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect();
        same_origin(&headers, &Uri::from_static("/console/login"), https)
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let host = ("host", "127.0.0.1:8080");
        assert!(check(&[host, ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-origin")], false).is_ok());
        assert!(check(&[host, ("origin", "http://127.0.0.1:8080")], false).is_ok());
        // Another port of the same host is the same site, and still refused.
        assert!(check(&[host, ("origin", "http://127.0.0.1:9999")], false).is_err());
        assert!(check(&[host, ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-site")], false).is_err());
        assert!(check(&[host, ("origin", "null")], false).is_err());
        assert!(check(&[host], false).is_err());
        let e = check(&[host, ("origin", "https://127.0.0.1:8080")], false).unwrap_err();
        assert!(e.contains("[console] https"), "{e}");
        assert!(check(&[host, ("origin", "https://127.0.0.1:8080")], true).is_ok());
        assert!(check(&[host, ("origin", "http://127.0.0.1:8080")], true).is_err());
    }
}
