//! Lost-task recovery and outbox housekeeping. A running attempt whose worker stopped
//! heartbeating is failed as `lost` through the same code path as a worker-reported
//! failure (so it is retried with a new attempt, or fails the node after `max_attempts`);
//! a late result from the lost attempt is then stale and ignored.
//!
//! Silence is only evidence when the coordinator could have heard: heartbeats travel in
//! the results queue, so while the result consumer cannot store what it reads (a database
//! outage), is disconnected, or has a backlog, a quiet attempt may be one whose heartbeats
//! (or even its result) are waiting in that queue. [`Evidence`] tracks up to when the
//! consumer had read everything; each coordinator publishes that watermark, and an attempt
//! is judged lost only when its last heartbeat is a whole timeout older than the lowest.

use crate::db::{sql, DbError};
use crate::results::{apply, record_effects};
use crate::AppState;
use chrono::{DateTime, Utc};
use renderfleet_shared::wire::{ErrorKind, Finished, Outcome, ResultBody, TaskError};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Up to when this coordinator had read and stored everything the workers sent: the
/// moment it had taken a batch that, once stored, left nothing waiting, or the moment it had
/// waited a while and nothing arrived. It does not move while results cannot be stored (an
/// outage), while a batch is stuck, while the broker session is down, or while full batches
/// say more is waiting. Unknown until the consumer first catches up: heartbeats queued
/// while no coordinator ran are read first.
#[derive(Debug, Default)]
pub struct Evidence(Mutex<Option<Instant>>);

impl Evidence {
    /// Everything sent before `at` has been stored.
    pub fn caught_up(&self, at: Instant) {
        let mut last = self.0.lock().expect("evidence");
        if last.is_none_or(|t| t < at) {
            *last = Some(at);
        }
    }

    /// How long ago that was; `None` before the first time.
    pub fn behind(&self) -> Option<Duration> {
        self.0.lock().expect("evidence").map(|t| t.elapsed())
    }
}

/// A coordinator's watermark counts while it was refreshed within this many heartbeat
/// timeouts (and at least this many sweep intervals: a sweep refreshes it): after that it is
/// taken to be gone, its connection closed and its unread messages back in the queue.
const WATERMARK_LIVE: u32 = 2;

/// Sweeps until `cancel`.
pub async fn run(state: AppState, cancel: CancellationToken) {
    let cfg = state.config.recovery.clone();
    loop {
        match sweep(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(lost = n, "re-queued attempts whose worker stopped heartbeating"),
            Err(e) => tracing::warn!(error = %e, "recovery sweep failed; will retry"),
        }
        if let Err(e) = prune(&state).await {
            tracing::warn!(error = %e, "outbox pruning failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.sweep_interval) => {}
            _ = cancel.cancelled() => {
                // Stopping: its watermark must not hold the others back.
                if let Ok(client) = state.pool.get().await {
                    let _ = client.execute(sql::DELETE_WATERMARK, &[&state.instance]).await;
                }
                return;
            }
        }
    }
}

/// One pass; returns how many attempts were declared lost.
pub async fn sweep(state: &AppState) -> Result<usize, DbError> {
    let timeout = state.config.recovery.heartbeat_timeout;
    let mut client = state.pool.get().await?;
    // An attempt is quiet for `timeout` only as far as the results were read, by every
    // coordinator: each publishes its watermark, and the lowest of those seen within
    // `WATERMARK_LIVE` timeouts counts. One that holds unread heartbeats (frozen, or without
    // the database) keeps every sweeper from judging, until it is gone that long.
    let behind = state.evidence.behind().map(|b| b.as_secs_f64());
    client.execute(sql::UPSERT_WATERMARK, &[&state.instance, &behind]).await?;
    let tx = client.transaction().await?;
    let live = (timeout.max(state.config.recovery.sweep_interval) * WATERMARK_LIVE).as_secs_f64();
    let rows = tx.query(sql::FIND_LOST, &[&timeout.as_secs_f64(), &live]).await?;
    let now_us = Utc::now().timestamp_micros();
    let lost: Vec<ResultBody> = rows
        .iter()
        .map(|r| {
            let worker: Option<String> = r.get(2);
            let started: Option<DateTime<Utc>> = r.get(3);
            let quiet: f64 = r.get(4);
            let worker = worker.unwrap_or_default();
            ResultBody::Finished(Finished {
                cache: None,
                node_run_id: r.get::<_, Uuid>(0),
                attempt: r.get::<_, i32>(1) as u32,
                worker_id: worker.clone(),
                started_at_us: started.map(|t| t.timestamp_micros()).unwrap_or(0),
                finished_at_us: now_us,
                outcome: Outcome::Failed {
                    error: TaskError {
                        kind: ErrorKind::Lost,
                        message: format!(
                            "worker `{worker}` stopped heartbeating {quiet:.0}s ago (timeout {}); the attempt is presumed lost",
                            humantime::format_duration(timeout)
                        ),
                        retryable: true,
                        log_tail: None,
                    },
                },
            })
        })
        .collect();
    if lost.is_empty() {
        return Ok(0);
    }
    let fx = apply::apply(&tx, &lost, state.policy()).await?;
    tx.commit().await?;
    if fx.delayed > 0 {
        state.hot.kick.notify_one();
    }
    record_effects(&fx);
    Ok(fx.lost.len())
}

async fn prune(state: &AppState) -> Result<(), DbError> {
    let client = state.pool.get().await?;
    let keep: Duration = state.config.outbox.retention;
    client.execute(sql::PRUNE_SENT, &[&keep.as_secs_f64()]).await?;
    client.execute(sql::PRUNE_WATERMARKS, &[&keep.as_secs_f64()]).await?;
    Ok(())
}
