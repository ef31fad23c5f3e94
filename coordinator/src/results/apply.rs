//! Applies result messages to PostgreSQL inside one transaction. Every change is keyed on
//! `(node_run_id, attempt)` and guarded by the node's status, so a duplicate or a stale
//! attempt's result changes nothing: this is where exactly-once effects come from.

use crate::db::{sql, DbError};
use crate::outbox;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use renderfleet_shared::config::RetryConfig;
use renderfleet_shared::wire::{ErrorKind, Finished, Outcome, ResultBody, Started, TaskError, TaskMessage, WorkerHeartbeat, WIRE_VERSION};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::Row;
use uuid::Uuid;

/// What a batch did, for metrics and logs after the commit.
#[derive(Debug, Default)]
pub struct Effects {
    pub started: Vec<(String, Option<f64>)>,
    /// (module, run seconds)
    pub succeeded: Vec<(String, Option<f64>)>,
    pub retried: Vec<String>,
    pub failed: Vec<String>,
    pub lost: Vec<String>,
    pub skipped: u64,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    pub ignored: u64,
    /// Task messages written to the outbox.
    pub enqueued: usize,
}

/// How failures are handled.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub retry: &'a RetryConfig,
    /// An attempt reported `lost` is only declared lost if its node is still this quiet.
    pub heartbeat_timeout: Duration,
}

/// Applies `messages` inside `tx`: starts and finishes in order, then the latest heartbeat
/// of each worker (a later one supersedes an earlier one).
pub async fn apply(tx: &Transaction<'_>, messages: &[ResultBody], policy: Policy<'_>) -> Result<Effects, DbError> {
    let mut touched: Vec<Uuid> = Vec::with_capacity(messages.len());
    let mut heartbeats: BTreeMap<&str, &WorkerHeartbeat> = BTreeMap::new();
    for msg in messages {
        match msg {
            ResultBody::Started(s) => touched.push(s.node_run_id),
            ResultBody::Finished(f) => touched.push(f.node_run_id),
            ResultBody::Heartbeat(h) => {
                touched.extend(h.running.iter().map(|t| t.node_run_id));
                heartbeats.insert(h.worker_id.as_str(), h);
            }
        }
    }
    let stmt = tx.prepare_cached(sql::LOCK_RUNS).await?;
    tx.query(&stmt, &[&touched]).await?;

    let mut fx = Effects::default();
    let mut ready = Vec::new();
    for msg in messages {
        match msg {
            ResultBody::Started(s) => started(tx, s, &mut fx).await?,
            ResultBody::Heartbeat(_) => {}
            ResultBody::Finished(f) => match &f.outcome {
                Outcome::Succeeded { outputs } => succeeded(tx, f, outputs, &mut ready, &mut fx).await?,
                Outcome::Failed { error } => failed(tx, f, error, policy, &mut fx).await?,
            },
        }
    }
    for h in heartbeats.values() {
        heartbeat(tx, h).await?;
    }
    outbox::enqueue(tx, &ready, Duration::ZERO).await?;
    fx.enqueued += ready.len();
    Ok(fx)
}

fn ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

async fn started(tx: &Transaction<'_>, s: &Started, fx: &mut Effects) -> Result<(), DbError> {
    let stmt = tx.prepare_cached(sql::STARTED).await?;
    let attempt = s.attempt as i32;
    match tx.query_opt(&stmt, &[&s.node_run_id, &attempt, &s.worker_id, &ts(s.at_us)]).await? {
        Some(row) => fx.started.push((row.get(0), row.get(1))),
        None => fx.ignored += 1,
    }
    Ok(())
}

async fn heartbeat(tx: &Transaction<'_>, h: &WorkerHeartbeat) -> Result<(), DbError> {
    let stmt = tx.prepare_cached(sql::UPSERT_WORKER).await?;
    let running = h.running.len() as i32;
    tx.execute(&stmt, &[&h.worker_id, &h.host, &h.version, &h.modules, &(h.concurrency as i32), &running, &h.status.as_str()])
        .await?;
    if !h.running.is_empty() {
        let ids: Vec<Uuid> = h.running.iter().map(|t| t.node_run_id).collect();
        let attempts: Vec<i32> = h.running.iter().map(|t| t.attempt as i32).collect();
        let stmt = tx.prepare_cached(sql::TOUCH_RUNNING).await?;
        tx.execute(&stmt, &[&ids, &attempts]).await?;
    }
    Ok(())
}

fn task_from_row(row: &Row) -> TaskMessage {
    // Columns: id, run_id, node_id, module_key, params, attempt, timeout_ms
    TaskMessage {
        v: WIRE_VERSION,
        node_run_id: row.get(0),
        run_id: row.get(1),
        node_id: row.get(2),
        module_key: row.get(3),
        params: row.get(4),
        attempt: row.get::<_, i32>(5) as u32,
        timeout_ms: row.get::<_, i64>(6) as u64,
    }
}

async fn succeeded(
    tx: &Transaction<'_>,
    f: &Finished,
    outputs: &Value,
    ready: &mut Vec<TaskMessage>,
    fx: &mut Effects,
) -> Result<(), DbError> {
    let stmt = tx.prepare_cached(sql::SUCCEEDED).await?;
    let attempt = f.attempt as i32;
    let Some(row) = tx
        .query_opt(&stmt, &[&f.node_run_id, &attempt, &f.worker_id, &ts(f.started_at_us), &ts(f.finished_at_us), outputs])
        .await?
    else {
        fx.ignored += 1;
        return Ok(());
    };
    let run_id: Uuid = row.get(0);
    let module: String = row.get(1);
    let successors: Vec<Uuid> = row.get(2);
    fx.succeeded.push((module, Some((f.finished_at_us - f.started_at_us).max(0) as f64 / 1e6)));
    if !successors.is_empty() {
        let stmt = tx.prepare_cached(sql::RELEASE).await?;
        for row in tx.query(&stmt, &[&successors]).await? {
            if row.get::<_, bool>(7) {
                ready.push(task_from_row(&row));
            }
        }
    }
    let stmt = tx.prepare_cached(sql::RUN_PROGRESS).await?;
    if let Some(row) = tx.query_opt(&stmt, &[&run_id, &1i32]).await? {
        let (before, after): (String, String) = (row.get(0), row.get(1));
        if before == "running" && after == "succeeded" {
            fx.runs_succeeded += 1;
        }
    }
    Ok(())
}

fn error_json(error: &TaskError, attempt: u32, worker_id: &str) -> Value {
    json!({
        "kind": error.kind.as_str(),
        "message": error.message,
        "retryable": error.retryable,
        "attempt": attempt,
        "worker_id": worker_id,
    })
}

async fn failed(tx: &Transaction<'_>, f: &Finished, error: &TaskError, policy: Policy<'_>, fx: &mut Effects) -> Result<(), DbError> {
    let stmt = tx.prepare_cached(sql::LOCK_ATTEMPT).await?;
    let attempt = f.attempt as i32;
    let quiet_for = policy.heartbeat_timeout.as_secs_f64();
    let Some(row) = tx.query_opt(&stmt, &[&f.node_run_id, &attempt, &quiet_for]).await? else {
        fx.ignored += 1;
        return Ok(());
    };
    let run_id: Uuid = row.get(0);
    let node_id: String = row.get(1);
    let module: String = row.get(2);
    let max_attempts: i32 = row.get(3);
    let known_start: Option<DateTime<Utc>> = row.get(4);
    let run_active: bool = row.get(5);
    let quiet: bool = row.get(6);
    if error.kind == ErrorKind::Lost && !quiet {
        // A heartbeat arrived after the sweeper looked: the attempt is alive.
        fx.ignored += 1;
        return Ok(());
    }
    let started_at = if f.started_at_us > 0 { Some(ts(f.started_at_us)) } else { known_start };
    let finished_at = ts(f.finished_at_us);
    let err = error_json(error, f.attempt, &f.worker_id);
    let lost = error.kind == ErrorKind::Lost;
    let worker = (!f.worker_id.is_empty()).then_some(f.worker_id.as_str());

    let stmt = tx.prepare_cached(sql::ATTEMPT_ENDED).await?;
    let attempt_status = if lost { "lost" } else { "failed" };
    tx.execute(&stmt, &[&f.node_run_id, &attempt, &attempt_status, &worker, &started_at, &finished_at, &err]).await?;
    if lost {
        fx.lost.push(module.clone());
    }

    if error.retryable && attempt < max_attempts && run_active {
        let delay = policy.retry.delay(f.attempt);
        let stmt = tx.prepare_cached(sql::RETRY).await?;
        let row = tx.query_one(&stmt, &[&f.node_run_id, &err, &error.log_tail, &delay.as_secs_f64()]).await?;
        outbox::enqueue(tx, &[task_from_row(&row)], delay).await?;
        fx.enqueued += 1;
        fx.retried.push(module);
        return Ok(());
    }

    let stmt = tx.prepare_cached(sql::FAIL_NODE).await?;
    tx.execute(&stmt, &[&f.node_run_id, &worker, &started_at, &finished_at, &err, &error.log_tail]).await?;
    fx.failed.push(module);
    if !run_active {
        return Ok(()); // the run had already ended; nothing more to skip or fail
    }
    let why = if error.retryable {
        format!("attempt {} of {max_attempts}", f.attempt)
    } else {
        format!("attempt {}, not retryable", f.attempt)
    };
    let stmt = tx.prepare_cached(sql::SKIP_DESCENDANTS).await?;
    fx.skipped += tx.execute(&stmt, &[&f.node_run_id, &format!("skipped: upstream node `{node_id}` failed")]).await?;
    let stmt = tx.prepare_cached(sql::SKIP_PENDING).await?;
    fx.skipped += tx.execute(&stmt, &[&run_id, &format!("skipped: the run failed at node `{node_id}`")]).await?;
    let run_error = json!({
        "node_id": node_id,
        "kind": error.kind.as_str(),
        "message": format!("node `{node_id}` failed ({why}): {}", error.message),
    });
    let stmt = tx.prepare_cached(sql::FAIL_RUN).await?;
    if tx.query_opt(&stmt, &[&run_id, &run_error]).await?.is_some() {
        fx.runs_failed += 1;
    }
    Ok(())
}
