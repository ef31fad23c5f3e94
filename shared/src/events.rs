//! Completion events: what the order system learns without polling (README, "Completion
//! events"). The payload, its routing key on the events exchange, and the signature of a
//! webhook delivery.

use crate::scheduling::Priority;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

/// What happened to a render request (`events.type`, migration V12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    /// Its answering run succeeded: the artifacts are ready.
    #[serde(rename = "request.succeeded")]
    Succeeded,
    /// Its answering run failed (and no fallback answers instead): `error` says why.
    #[serde(rename = "request.failed")]
    Failed,
    /// It was cancelled.
    #[serde(rename = "request.cancelled")]
    Cancelled,
    /// Its graph run failed and a legacy run was started to answer instead; a
    /// `request.succeeded` or `request.failed` follows for that run.
    #[serde(rename = "request.fallback")]
    Fallback,
}

impl EventType {
    pub const ALL: [EventType; 4] = [EventType::Succeeded, EventType::Failed, EventType::Cancelled, EventType::Fallback];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Succeeded => "request.succeeded",
            EventType::Failed => "request.failed",
            EventType::Cancelled => "request.cancelled",
            EventType::Fallback => "request.fallback",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The event, as delivered to webhooks and published on the events exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Stable: every delivery of this event carries it (deduplicate on it).
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub created_at: DateTime<Utc>,
    pub request: EventRequest,
    /// The run whose outcome this is (for `request.fallback`, the legacy run that now answers).
    pub run: EventRun,
    /// The delivered artifacts, on success.
    pub artifacts: Vec<EventArtifact>,
    /// Why, on failure or cancellation (`kind`, `message`).
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRequest {
    pub id: Uuid,
    pub order_line_id: String,
    pub output_type: String,
    pub idempotency_key: String,
    pub priority: Priority,
    pub submitter: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRun {
    pub id: Uuid,
    /// `graph` or `legacy`.
    pub pipeline: String,
    /// `succeeded`, `failed`, `cancelled`, or `running` (a fallback that just started).
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventArtifact {
    pub kind: String,
    pub sha256: String,
    pub bytes: u64,
    pub mime: String,
    /// Where to download it: `GET` this path on the coordinator with a `read` token.
    pub path: String,
}

/// The routing key on the events exchange: `request.succeeded.<output type>`, so a consumer
/// binds `request.*.still-2000-white` or `request.failed.#`.
pub fn routing_key(kind: EventType, output_type: &str) -> String {
    format!("{}.{output_type}", kind.as_str())
}

/// The header a webhook delivery is signed in.
pub const SIGNATURE_HEADER: &str = "Renderfleet-Signature";
/// The event's id, also in the body (`id`).
pub const EVENT_ID_HEADER: &str = "Renderfleet-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "Renderfleet-Event-Type";
/// A receiver should refuse a signature older than this (a replayed delivery).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>`.
pub fn sign(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    format!("t={unix_secs},v1={}", hex::encode(mac(secret, unix_secs, body).finalize().into_bytes()))
}

fn mac(secret: &str, unix_secs: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature is {age_secs} s old, more than {SIGNATURE_TOLERANCE_SECS} s: a replay, or a clock far off")]
    Stale { age_secs: i64 },
    #[error("the signature does not match the body: another secret, or the body was changed")]
    Mismatch,
}

/// What a receiver does with a delivery: checks the header against the body it got, in
/// constant time, and that it is recent.
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix_secs: i64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return Err(SignatureError::Malformed) };
    let age_secs = now_unix_secs - t;
    if age_secs.abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale { age_secs });
    }
    mac(secret, t, body).verify_slice(&v1).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let body = br#"{"id":"x"}"#;
        let header = sign("whsec-0123456789abcdef", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1=") && header.len() == "t=1700000000,v1=".len() + 64, "{header}");
        assert_eq!(verify("whsec-0123456789abcdef", &header, body, 1_700_000_010), Ok(()));
        assert_eq!(verify("another-secret-000000", &header, body, 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec-0123456789abcdef", &header, br#"{"id":"y"}"#, 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec-0123456789abcdef", &header, body, 1_700_000_400), Err(SignatureError::Stale { age_secs: 400 }));
        assert_eq!(verify("whsec-0123456789abcdef", "sha256=abc", body, 1_700_000_000), Err(SignatureError::Malformed));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // The README's verification example computes the same (Python's hmac module).
        let header = sign("Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(header, "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc");
    }

    #[test]
    fn types_and_routing_keys_read_like_the_table() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(routing_key(EventType::Failed, "still-2000-white"), "request.failed.still-2000-white");
    }
}
