//! Webhook deliveries: every pending (event, subscription) row is POSTed to the
//! subscription's URL, signed (`shared::events::sign`), until the receiver answers 2xx, with
//! backoff between attempts, and given up after `webhooks.give_up_after`. At least once: an
//! attempt is counted and its row held before the request goes out, so a coordinator that
//! dies mid-attempt leaves it to be made again once the hold ends; receivers deduplicate on
//! the event id.

use super::payloads;
use crate::db::{sql, DbError};
use deadpool_postgres::Pool;
use renderfleet_shared::config::WebhooksConfig;
use renderfleet_shared::events::{sign, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER};
use renderfleet_shared::metrics as m;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long past its timeout an attempt's row is held before it counts as lost.
const HOLD_MARGIN: Duration = Duration::from_secs(20);
/// At most this much of a receiver's answer is kept as the delivery's last error.
const ERROR_BODY_CHARS: usize = 300;
/// How often old events are pruned (`webhooks.keep_events`, when shorter), and how many per
/// statement.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_BATCH: i64 = 10_000;

/// Delivers until `cancel`: woken by `kick` (a request ended here), at the next due retry,
/// or every `poll` at the latest.
pub async fn deliver_loop(pool: Pool, cfg: WebhooksConfig, kick: Arc<Notify>, cancel: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .user_agent(concat!("renderfleet/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let mut pruned_at: Option<tokio::time::Instant> = None;
    loop {
        if !cfg.keep_events.is_zero() && pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY.min(cfg.keep_events)) {
            pruned_at = Some(tokio::time::Instant::now());
            prune(&pool, cfg.keep_events).await;
        }
        let wait = match deliver_due(&pool, &http, &cfg).await {
            Ok(n) if n >= cfg.concurrency => continue,
            Ok(_) => next_due(&pool).await.unwrap_or(cfg.poll).min(cfg.poll).max(Duration::from_millis(10)),
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: database error; retrying");
                cfg.poll
            }
        };
        tokio::select! {
            _ = kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Deletes events older than `keep` (their deliveries go with them), a batch at a time.
async fn prune(pool: &Pool, keep: Duration) {
    let Ok(client) = pool.get().await else { return };
    let mut total = 0;
    loop {
        match client.execute(sql::PRUNE_EVENTS, &[&keep.as_secs_f64(), &PRUNE_BATCH]).await {
            Ok(n) => {
                total += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "events: could not prune old events; trying again later");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(events = total, keep = ?keep, "old events pruned");
    }
}

async fn next_due(pool: &Pool) -> Option<Duration> {
    let client = pool.get().await.ok()?;
    let secs: Option<f64> = client.query_one(sql::NEXT_DELIVERY, &[]).await.ok()?.get(0);
    secs.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// One due delivery, claimed.
struct Attempt {
    event_id: Uuid,
    webhook_id: Uuid,
    attempt: i32,
    url: String,
    secret: String,
    kind: String,
    /// Seconds since the event.
    age: f64,
}

/// How an attempt ended.
enum Outcome {
    Accepted(u16),
    Refused { status: Option<u16>, error: String },
}

/// Claims and makes one batch of due attempts, all at once; returns how many.
async fn deliver_due(pool: &Pool, http: &reqwest::Client, cfg: &WebhooksConfig) -> Result<usize, DbError> {
    let client = pool.get().await?;
    let hold = (cfg.timeout + HOLD_MARGIN).as_secs_f64();
    let rows = client.query(sql::CLAIM_DELIVERIES, &[&(cfg.concurrency as i64), &hold]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let attempts: Vec<Attempt> = rows
        .iter()
        .map(|r| Attempt {
            event_id: r.get("event_id"),
            webhook_id: r.get("webhook_id"),
            attempt: r.get("attempts"),
            url: r.get("url"),
            secret: r.get("secret"),
            kind: r.get("type"),
            age: r.get("age"),
        })
        .collect();
    let mut ids: Vec<Uuid> = attempts.iter().map(|a| a.event_id).collect();
    ids.dedup();
    let bodies = payloads(&client, &ids).await?;
    drop(client);
    let sends = attempts.iter().map(|a| async {
        match bodies.get(&a.event_id) {
            Some(body) => send(http, a, serde_json::to_vec(body).expect("JSON")).await,
            // Its request or run row is gone: nothing to say; retried until given up.
            None => Outcome::Refused { status: None, error: format!("event {} has no request or run to report any more", a.event_id) },
        }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    let client = pool.get().await?;
    for (a, outcome) in attempts.iter().zip(outcomes) {
        match outcome {
            Outcome::Accepted(status) => {
                client.execute(sql::DELIVERED_WEBHOOK, &[&a.event_id, &a.webhook_id, &a.attempt, &(status as i32)]).await?;
                metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "outcome" => "delivered").increment(1);
                tracing::debug!(event = %a.event_id, webhook = %a.webhook_id, attempt = a.attempt, "webhook delivered");
            }
            Outcome::Refused { status, error } => {
                let retry_in = jittered(backoff(cfg, a.attempt), a);
                let give_up = a.age + retry_in.as_secs_f64() > cfg.give_up_after.as_secs_f64();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                    [&a.event_id, &a.webhook_id, &a.attempt, &status.map(i32::from), &error, &retry_in.as_secs_f64(), &give_up];
                client.execute(sql::DELIVERY_FAILED, &params).await?;
                let outcome = if give_up { "given_up" } else { "retried" };
                metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
                if give_up {
                    tracing::error!(event = %a.event_id, webhook = %a.webhook_id, url = %a.url, attempts = a.attempt, %error, "webhook delivery given up");
                } else {
                    tracing::warn!(event = %a.event_id, url = %a.url, attempt = a.attempt, %error, retry_in = ?retry_in, "webhook delivery failed; retrying");
                }
            }
        }
    }
    Ok(attempts.len())
}

/// The wait after failed attempt `attempt` (1-based): `retry_base` doubling, at most `retry_max`.
pub fn backoff(cfg: &WebhooksConfig, attempt: i32) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
    cfg.retry_base.saturating_mul(2u32.saturating_pow(doublings)).min(cfg.retry_max)
}

/// `wait` plus up to a fifth more, fixed per delivery and attempt: the retries of the events
/// an outage failed together do not all come back at once.
fn jittered(wait: Duration, a: &Attempt) -> Duration {
    let spread = (a.event_id.as_u128() ^ a.webhook_id.as_u128()).wrapping_add(a.attempt as u128) % 1000;
    wait.mul_f64(1.0 + spread as f64 / 5000.0)
}

async fn send(http: &reqwest::Client, a: &Attempt, body: Vec<u8>) -> Outcome {
    let now = chrono::Utc::now().timestamp();
    let signature = sign(&a.secret, now, &body);
    let sent = http
        .post(&a.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(EVENT_ID_HEADER, a.event_id.to_string())
        .header(EVENT_TYPE_HEADER, &a.kind)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => Outcome::Accepted(resp.status().as_u16()),
        Ok(resp) => {
            let status = resp.status();
            let text: String = resp.text().await.unwrap_or_default().chars().take(ERROR_BODY_CHARS).collect();
            Outcome::Refused { status: Some(status.as_u16()), error: format!("the receiver answered {status}: {}", text.trim()) }
        }
        Err(e) => Outcome::Refused { status: None, error: format!("no answer from {}: {e}", a.url) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_max() {
        let cfg = WebhooksConfig { retry_base: Duration::from_secs(5), retry_max: Duration::from_secs(60), ..Default::default() };
        let waits: Vec<u64> = (1..=6).map(|a| backoff(&cfg, a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(&cfg, 1000), Duration::from_secs(60));
    }

    #[test]
    fn retries_are_spread_by_at_most_a_fifth() {
        let attempt = |event: u128, n: i32| Attempt {
            event_id: Uuid::from_u128(event),
            webhook_id: Uuid::from_u128(7),
            attempt: n,
            url: String::new(),
            secret: String::new(),
            kind: String::new(),
            age: 0.0,
        };
        let base = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..50).map(|e| jittered(base, &attempt(e, 1))).collect();
        assert!(waits.iter().all(|w| *w >= base && *w < base.mul_f64(1.2)), "{waits:?}");
        assert!(waits.iter().collect::<std::collections::HashSet<_>>().len() > 10, "spread: {waits:?}");
        assert_eq!(jittered(base, &attempt(3, 2)), jittered(base, &attempt(3, 2)), "fixed per delivery and attempt");
    }
}
