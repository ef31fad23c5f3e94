//! Lost-task recovery and outbox housekeeping. A running attempt whose worker stopped
//! heartbeating is failed as `lost` through the same code path as a worker-reported
//! failure (so it is retried with a new attempt, or fails the node after `max_attempts`);
//! a late result from the lost attempt is then stale and ignored.

use crate::db::{sql, DbError};
use crate::results::{apply, record_effects};
use crate::AppState;
use chrono::{DateTime, Utc};
use renderfleet_shared::wire::{ErrorKind, Finished, Outcome, ResultBody, TaskError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Sweeps until `cancel`. The first sweep waits one heartbeat timeout after start-up, so that
/// heartbeats queued while no coordinator ran are applied before anything is judged lost.
pub async fn run(state: AppState, cancel: CancellationToken) {
    let cfg = state.config.recovery.clone();
    tokio::select! {
        _ = tokio::time::sleep(cfg.heartbeat_timeout) => {}
        _ = cancel.cancelled() => return,
    }
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
            _ = cancel.cancelled() => return,
        }
    }
}

/// One pass; returns how many attempts were declared lost.
pub async fn sweep(state: &AppState) -> Result<usize, DbError> {
    if state.results_behind.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!("results backlog: not judging heartbeats this round");
        return Ok(0);
    }
    let timeout = state.config.recovery.heartbeat_timeout;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx.query(sql::FIND_LOST, &[&timeout.as_secs_f64()]).await?;
    let now_us = Utc::now().timestamp_micros();
    let lost: Vec<ResultBody> = rows
        .iter()
        .map(|r| {
            let worker: Option<String> = r.get(2);
            let started: Option<DateTime<Utc>> = r.get(3);
            let quiet: f64 = r.get(4);
            let worker = worker.unwrap_or_default();
            ResultBody::Finished(Finished {
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
    Ok(())
}
