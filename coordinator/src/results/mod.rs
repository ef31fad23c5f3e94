//! The result consumer: reads worker results, applies them in batches (one transaction per
//! batch, see [`apply`]) and acks them only after the commit. A batch is cut as soon as no
//! further message is waiting, so a quiet fleet pays no batching delay and a busy one
//! amortises the commit.

pub mod apply;

use crate::broker::SessionError;
use crate::db::DbError;
use crate::AppState;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use renderfleet_platform::broker::dead_letter;
use renderfleet_shared::cache;
use renderfleet_shared::metrics as m;
use renderfleet_shared::wire::{self, ErrorKind, Finished, Outcome, ResultBody, ResultMessage, TaskError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use apply::Effects;

/// A consumer that waited this long for a result has read everything there was.
const IDLE: Duration = Duration::from_millis(500);

/// Consumes `queue` until `cancel` or a broker error.
pub async fn consume_loop(
    state: AppState,
    channel: Channel,
    dead_channel: Channel,
    queue: String,
    dead_exchange: String,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let tag = format!("coordinator-{}", state.instance);
    let mut consumer =
        channel.basic_consume(queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let batch_max = state.config.results.batch_max;
    loop {
        let first = tokio::select! {
            d = tokio::time::timeout(IDLE, consumer.next()) => match d {
                Ok(d) => d,
                Err(_) => {
                    // Nothing arrived for a while, and all that did is stored.
                    let now = std::time::Instant::now();
                    state.evidence.caught_up(now.checked_sub(IDLE).unwrap_or(now));
                    continue;
                }
            },
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(first) = first else { return Err(SessionError::Closed("the results consumer was cancelled by the broker")) };
        let mut deliveries = vec![first?];
        while deliveries.len() < batch_max {
            match consumer.next().now_or_never() {
                Some(Some(d)) => deliveries.push(d?),
                _ => break,
            }
        }
        // Nothing else was waiting when this batch was cut, unless it is full: once it is
        // stored, everything sent before now has been read (see `recovery::Evidence`).
        let collected = std::time::Instant::now();
        let caught_up = deliveries.len() < batch_max;

        let mut bodies = Vec::with_capacity(deliveries.len());
        let mut good = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match wire::decode::<ResultMessage>(&d.data) {
                Ok(msg) => match unverified(&state, &d, &msg.body) {
                    None => {
                        bodies.push(msg.body);
                        good.push(d);
                    }
                    Some(reason) => dead_letter(&dead_channel, &dead_exchange, &d, &reason, "coordinator").await?,
                },
                Err(e) => dead_letter(&dead_channel, &dead_exchange, &d, &format!("undecodable result: {e}"), "coordinator").await?,
            }
        }
        if !bodies.is_empty() && !store(&state, bodies, good, &dead_channel, &dead_exchange, &cancel).await? {
            return Ok(()); // cancelled: unacked results are redelivered
        }
        if caught_up {
            state.evidence.caught_up(collected);
        }
    }
}

/// Applies a batch's results and acks their messages; false when cancelled first.
async fn store(
    state: &AppState,
    bodies: Vec<ResultBody>,
    good: Vec<Delivery>,
    dead_channel: &Channel,
    dead_exchange: &str,
    cancel: &CancellationToken,
) -> Result<bool, SessionError> {
    match apply_until_committed(state, &bodies, cancel).await {
        None => return Ok(false),
        Some(Ok(fx)) => {
            // The ready tasks first: the acks are not on the next node's path.
            finish(state, fx, bodies.len());
            ack_all(&good).await?;
        }
        // One result the database refuses (say, a NUL byte in its text) must not hold back
        // the others: apply them one by one; see `refused`.
        Some(Err(e)) => {
            tracing::warn!(error = %e, batch = bodies.len(), "the database refused a result batch; applying its results one by one");
            for (body, d) in bodies.into_iter().zip(good) {
                match apply_until_committed(state, std::slice::from_ref(&body), cancel).await {
                    None => return Ok(false),
                    Some(Ok(fx)) => {
                        finish(state, fx, 1);
                        d.acker.ack(BasicAckOptions::default()).await?;
                    }
                    Some(Err(e)) => {
                        if !refused(state, &body, cancel).await {
                            return Ok(false);
                        }
                        let reason = format!("result refused by the database: {e}");
                        dead_letter(dead_channel, dead_exchange, &d, &reason, "coordinator").await?;
                    }
                }
            }
        }
    }
    Ok(true)
}

/// Why `body` may not speak for the workers it names, with `results.verify_sender` on:
/// its `user_id`, which the broker checks against the connection's user, must be each.
fn unverified(state: &AppState, d: &Delivery, body: &ResultBody) -> Option<String> {
    if !state.config.results.verify_sender {
        return None;
    }
    let Some(user) = d.properties.user_id().as_ref().map(|u| u.as_str().to_string()) else {
        return Some("a result message without user_id: with results.verify_sender on, workers must run as their own broker users (README, Security)".into());
    };
    // Results served from the cache come from a coordinator, under its own broker user.
    let coordinator = renderfleet_platform::broker::password_user(&state.config.amqp_url);
    let speaks_for = |w: &str| w == user || (w == cache::WORKER && coordinator.as_deref() == Some(user.as_str()));
    let claimed = body.worker_ids().find(|w| !speaks_for(w))?;
    Some(format!(
        "a message from broker user `{user}` speaks for worker `{claimed}`: a worker may only report as itself; run each worker as the broker user named after its worker id (README, Security)"
    ))
}

/// A message the database refused as a whole: its attempt ends are applied one by one, and
/// an end that cannot be stored fails its node with the database's reason (rather than
/// leaving it waiting for a result that will never be stored). The caller keeps the
/// message in the dead-letter queue. False when cancelled.
async fn refused(state: &AppState, body: &ResultBody, cancel: &CancellationToken) -> bool {
    for f in body.finished() {
        let one = ResultBody::Finished(f.clone());
        let fx = match apply_until_committed(state, std::slice::from_ref(&one), cancel).await {
            None => return false,
            Some(Ok(fx)) => fx,
            Some(Err(e)) => {
                let failed = ResultBody::Finished(Finished {
                    outcome: Outcome::Failed {
                        error: TaskError {
                            kind: ErrorKind::Module,
                            message: format!(
                                "the result could not be stored ({e}); the message is kept in the dead-letter queue for inspection"
                            ),
                            retryable: false,
                            log_tail: None,
                        },
                    },
                    // Nothing of the refused message but its ids: any text in it may be what
                    // the database refused.
                    worker_id: String::new(),
                    ..f.clone()
                });
                match apply_until_committed(state, std::slice::from_ref(&failed), cancel).await {
                    None => return false,
                    Some(Ok(fx)) => fx,
                    Some(Err(e)) => {
                        tracing::error!(error = %e, node_run_id = %f.node_run_id, "not even the failure of a refused result could be stored");
                        continue;
                    }
                }
            }
        };
        finish(state, fx, 1);
    }
    true
}

fn finish(state: &AppState, fx: Effects, batch: usize) {
    record(&fx, batch);
    if fx.delayed > 0 {
        state.hot.kick.notify_one();
    }
    if fx.request_runs_finished > 0 {
        state.request_run_ended();
    }
    state.hot.room_made();
    state.hot.send(fx.ready);
}

/// Runs the batch's transaction until it commits; database outages are waited out (the
/// results stay unacked meanwhile). `None` when cancelled first; `Some(Err)` when the
/// database refuses the data itself, which no retry can fix.
async fn apply_until_committed(state: &AppState, bodies: &[ResultBody], cancel: &CancellationToken) -> Option<Result<Effects, DbError>> {
    let mut delay = Duration::from_millis(50);
    loop {
        match apply_once(state, bodies).await {
            Ok(fx) => return Some(Ok(fx)),
            Err(e) if e.is_transient() => tracing::debug!(error = %e, "result batch conflicted; retrying"),
            Err(e) if e.is_refused_data() => return Some(Err(e)),
            Err(e) => {
                // Meanwhile the evidence does not move: silence proves nothing.
                tracing::warn!(error = %e, batch = bodies.len(), "applying results failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn apply_once(state: &AppState, bodies: &[ResultBody]) -> Result<Effects, DbError> {
    let mut client = state.pool.get().await?;
    if let Some(result) = apply::apply_successes(&client, bodies).await {
        return result;
    }
    let tx = client.transaction().await?;
    let fx = apply::apply(&tx, bodies, state.policy()).await?;
    tx.commit().await?;
    Ok(fx)
}

async fn ack_all(deliveries: &[Delivery]) -> Result<(), lapin::Error> {
    for d in deliveries {
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

fn record(fx: &Effects, messages: usize) {
    metrics::histogram!(m::RESULT_BATCH_SIZE).record(messages as f64);
    let results = fx.started.len() + fx.succeeded.len() + fx.retried.len() + fx.failed.len() + fx.ignored as usize;
    let applied = (results as u64).saturating_sub(fx.ignored);
    metrics::counter!(m::RESULTS_TOTAL, "outcome" => "applied").increment(applied);
    metrics::counter!(m::RESULTS_TOTAL, "outcome" => "ignored").increment(fx.ignored);
    record_effects(fx);
}

/// Node and run counters and histograms for what a committed batch did.
pub fn record_effects(fx: &Effects) {
    for module in &fx.started {
        metrics::counter!(m::NODE_TASKS_TOTAL, "module" => module.clone(), "status" => "started").increment(1);
    }
    for (module, ran, waited) in &fx.succeeded {
        metrics::counter!(m::NODE_TASKS_TOTAL, "module" => module.clone(), "status" => "succeeded").increment(1);
        if let Some(s) = ran {
            metrics::histogram!(m::NODE_DURATION_SECONDS, "module" => module.clone()).record(s.max(0.0));
        }
        if let Some(w) = waited {
            metrics::histogram!(m::DISPATCH_LATENCY_SECONDS, "module" => module.clone()).record(w.max(0.0));
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
    for output_type in &fx.fallbacks {
        metrics::counter!(m::FALLBACKS_TOTAL, "output_type" => output_type.clone()).increment(1);
        tracing::warn!(%output_type, "graph run failed: legacy fallback dispatched");
    }
    metrics::counter!(m::RUNS_TOTAL, "status" => "succeeded").increment(fx.runs_succeeded);
    metrics::counter!(m::RUNS_TOTAL, "status" => "failed").increment(fx.runs_failed);
}
