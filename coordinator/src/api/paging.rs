//! The query parameters every list shares: a keyset cursor (`after`, the previous page's
//! `next`: `RFC3339_TIME,UUID`), an age filter (`hours`) and a page size (`limit`), each
//! refused with a 400 that says what to give.

use super::ApiError;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use uuid::Uuid;

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// The cursor `after`, if one was given.
pub(super) fn cursor(after: Option<&str>) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
    match after {
        None | Some("") => Ok(None),
        Some(c) => c
            .split_once(',')
            .and_then(|(t, id)| Some((DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc), id.parse::<Uuid>().ok()?)))
            .map(Some)
            .ok_or_else(|| bad(format!("`after` is `{c}`; give the `next` of the previous page as it was"))),
    }
}

/// The `next` of a page whose last row is (`at`, `id`).
pub(super) fn next(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{},{id}", at.to_rfc3339())
}

/// When `hours` ago was, if given.
pub(super) fn since(hours: Option<f64>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match hours {
        None => Ok(None),
        Some(h) if h.is_finite() && h > 0.0 && h <= 1e6 => {
            Ok(Utc::now().checked_sub_signed(chrono::Duration::milliseconds((h * 3_600_000.0) as i64)))
        }
        Some(h) => Err(bad(format!("`hours` is {h}; give a number of hours above 0"))),
    }
}

/// The page size: `limit`, else `default`; 1 to `max`.
pub(super) fn limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let l = limit.unwrap_or(default);
    if (1..=max).contains(&l) {
        Ok(l)
    } else {
        Err(bad(format!("`limit` is {l}; give 1 to {max}")))
    }
}
