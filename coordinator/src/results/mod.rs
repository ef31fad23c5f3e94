//! The result consumer: reads worker results, applies them in batches (one transaction per
//! batch, see [`apply`]) and acks them only after the commit. A batch is cut as soon as no
//! further message is waiting, so a quiet fleet pays no batching delay and a busy one
//! amortises the commit.

pub mod apply;

use crate::broker::SessionError;
use crate::db::DbError;
use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use renderfleet_shared::config::{ResultsConfig, RetryConfig};
use renderfleet_shared::metrics as m;
use renderfleet_shared::wire::{self, ResultBody, ResultMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use apply::Effects;

/// Consumes `queue` until `cancel` or a broker error.
#[allow(clippy::too_many_arguments)]
pub async fn consume_loop(
    pool: Pool,
    channel: Channel,
    dead_channel: Channel,
    queue: String,
    dead_exchange: String,
    consumer_tag: String,
    kick: Arc<Notify>,
    cfg: ResultsConfig,
    retry: RetryConfig,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), consumer_tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    loop {
        let first = tokio::select! {
            d = consumer.next() => d,
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(first) = first else { return Err(SessionError::Closed("the results consumer was cancelled by the broker")) };
        let mut deliveries = vec![first?];
        while deliveries.len() < cfg.batch_max {
            match consumer.next().now_or_never() {
                Some(Some(d)) => deliveries.push(d?),
                _ => break,
            }
        }

        let mut bodies = Vec::with_capacity(deliveries.len());
        let mut good = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match wire::decode::<ResultMessage>(&d.data) {
                Ok(msg) => {
                    bodies.push(msg.body);
                    good.push(d);
                }
                Err(e) => {
                    renderfleet_platform::broker::dead_letter(&dead_channel, &dead_exchange, &d, &format!("undecodable result: {e}"), "coordinator").await?;
                }
            }
        }
        if bodies.is_empty() {
            continue;
        }
        let fx = apply_until_committed(&pool, &bodies, &retry, &cancel).await;
        let Some(fx) = fx else { return Ok(()) }; // cancelled: unacked results are redelivered
        ack_all(&good).await?;
        if fx.enqueued > 0 {
            kick.notify_one();
        }
        record(&fx, bodies.len());
    }
}

/// Runs the batch's transaction until it commits; database outages are waited out (the
/// results stay unacked meanwhile). `None` when cancelled first.
async fn apply_until_committed(pool: &Pool, bodies: &[ResultBody], retry: &RetryConfig, cancel: &CancellationToken) -> Option<Effects> {
    let mut delay = Duration::from_millis(50);
    loop {
        match apply_once(pool, bodies, retry).await {
            Ok(fx) => return Some(fx),
            Err(e) if e.is_transient() => tracing::debug!(error = %e, "result batch conflicted; retrying"),
            Err(e) => {
                tracing::warn!(error = %e, batch = bodies.len(), "applying results failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn apply_once(pool: &Pool, bodies: &[ResultBody], retry: &RetryConfig) -> Result<Effects, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let fx = apply::apply(&tx, bodies, retry).await?;
    tx.commit().await?;
    Ok(fx)
}

async fn ack_all(deliveries: &[Delivery]) -> Result<(), lapin::Error> {
    for d in deliveries {
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

fn record(fx: &Effects, batch: usize) {
    metrics::histogram!(m::RESULT_BATCH_SIZE).record(batch as f64);
    let applied = (batch as u64).saturating_sub(fx.ignored);
    metrics::counter!(m::RESULTS_TOTAL, "outcome" => "applied").increment(applied);
    metrics::counter!(m::RESULTS_TOTAL, "outcome" => "ignored").increment(fx.ignored);
    record_effects(fx);
}

/// Node and run counters and histograms for what a committed batch did.
pub fn record_effects(fx: &Effects) {
    for (module, wait) in &fx.started {
        metrics::counter!(m::NODE_TASKS_TOTAL, "module" => module.clone(), "status" => "started").increment(1);
        if let Some(w) = wait {
            metrics::histogram!(m::DISPATCH_LATENCY_SECONDS, "module" => module.clone()).record(w.max(0.0));
        }
    }
    for (module, secs) in &fx.succeeded {
        metrics::counter!(m::NODE_TASKS_TOTAL, "module" => module.clone(), "status" => "succeeded").increment(1);
        if let Some(s) = secs {
            metrics::histogram!(m::NODE_DURATION_SECONDS, "module" => module.clone()).record(*s);
        }
    }
    for (list, status) in [(&fx.retried, "retried"), (&fx.failed, "failed"), (&fx.lost, "lost")] {
        for module in list {
            metrics::counter!(m::NODE_TASKS_TOTAL, "module" => module.clone(), "status" => status).increment(1);
        }
    }
    if fx.skipped > 0 {
        metrics::counter!(m::NODE_TASKS_TOTAL, "module" => "any", "status" => "skipped").increment(fx.skipped);
    }
    metrics::counter!(m::RUNS_TOTAL, "status" => "succeeded").increment(fx.runs_succeeded);
    metrics::counter!(m::RUNS_TOTAL, "status" => "failed").increment(fx.runs_failed);
}
