//! Applies result messages to PostgreSQL inside one transaction. Every change is keyed on
//! `(node_run_id, attempt)` and guarded by the node's status, so a duplicate or a stale
//! attempt's result changes nothing: this is where exactly-once effects come from.
//!
//! The common case, a successful attempt, is applied for the whole batch in one statement
//! ([`sql::SUCCEEDED`]); starts, failures and heartbeats are rarer and go one by one.

use crate::db::{sql, DbError};
use crate::dispatch::request;
use crate::outbox::{self, Ready, LEASE};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Transaction};
use renderfleet_shared::artifact::refs_in;
use renderfleet_shared::config::RetryConfig;
use renderfleet_shared::graph::NodeDefaults;
use renderfleet_shared::wire::{CacheEnd, ErrorKind, Finished, Outcome, ResultBody, Started, TaskError, WorkerHeartbeat};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

/// What a batch did, for metrics and the publisher after the commit.
#[derive(Debug, Default)]
pub struct Effects {
    /// Modules of attempts reported started.
    pub started: Vec<String>,
    /// (module, run seconds, ready → start seconds)
    pub succeeded: Vec<(String, Option<f64>, Option<f64>)>,
    pub retried: Vec<String>,
    pub failed: Vec<String>,
    pub lost: Vec<String>,
    pub skipped: u64,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    /// Runs of render requests that ended: shadow pairs may be due.
    pub request_runs_finished: u64,
    /// Output types whose failed graph run got a legacy fallback in this batch.
    pub fallbacks: Vec<String>,
    pub ignored: u64,
    /// Tasks queued by this batch, leased to this coordinator's publisher.
    pub ready: Vec<Ready>,
    /// Tasks queued for later (retry backoff): the safety-net publisher must look again.
    pub delayed: usize,
}

/// How failures are handled.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub retry: &'a RetryConfig,
    /// An attempt reported `lost` is only declared lost if its node is still this quiet.
    pub heartbeat_timeout: Duration,
    /// For planning legacy fallbacks.
    pub defaults: NodeDefaults,
    /// Senders are verified (`results.verify_sender`): a heartbeat refreshes only the
    /// attempts whose start its worker reported.
    pub verified_senders: bool,
}

/// Applies `messages` inside `tx`: starts, then failures, then every success at once, then
/// the latest heartbeat of each worker (a later one supersedes an earlier one).
pub async fn apply(tx: &Transaction<'_>, messages: &[ResultBody], policy: Policy<'_>) -> Result<Effects, DbError> {
    let mut touched: Vec<Uuid> = Vec::with_capacity(messages.len());
    let mut heartbeats: BTreeMap<&str, &WorkerHeartbeat> = BTreeMap::new();
    let mut successes: Vec<&Finished> = Vec::new();
    let mut failures: Vec<(&Finished, &TaskError)> = Vec::new();
    let mut starts: Vec<&Started> = Vec::new();
    let mut seen: HashSet<(Uuid, u32)> = HashSet::new();
    let mut fx = Effects::default();
    for msg in messages {
        match msg {
            ResultBody::Started(s) => {
                touched.push(s.node_run_id);
                starts.push(s);
            }
            ResultBody::Finished(_) | ResultBody::FinishedBatch(_) => {
                for f in msg.finished() {
                    touched.push(f.node_run_id);
                    if !seen.insert((f.node_run_id, f.attempt)) {
                        fx.ignored += 1; // the same attempt's end twice in one batch
                        continue;
                    }
                    match &f.outcome {
                        Outcome::Succeeded { .. } => successes.push(f),
                        Outcome::Failed { error } => failures.push((f, error)),
                    }
                }
            }
            ResultBody::Heartbeat(h) => {
                touched.extend(h.running.iter().map(|t| t.node_run_id));
                heartbeats.insert(h.worker_id.as_str(), h);
            }
        }
    }
    let lock = tx.prepare_cached(sql::LOCK_RUNS).await?;
    if starts.is_empty() && failures.is_empty() {
        // The common batch: send the lock and the successes back to back (pipelined; the
        // server still runs them in order), saving a round trip per hop.
        let (_, ()) =
            tokio::try_join!(async { tx.query(&lock, &[&touched]).await.map_err(DbError::from) }, succeeded(tx, &successes, &mut fx))?;
    } else {
        tx.query(&lock, &[&touched]).await?;
        for s in starts {
            started(tx, s, &mut fx).await?;
        }
        // Failures before successes: a run that fails in this batch skips its pending nodes
        // first, so a success in the same batch does not queue work for a failed run.
        for (f, error) in failures {
            failed(tx, f, error, policy, &mut fx).await?;
        }
        succeeded(tx, &successes, &mut fx).await?;
    }
    for h in heartbeats.values() {
        heartbeat(tx, h, policy.verified_senders).await?;
    }
    Ok(fx)
}

fn ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

async fn started(tx: &Transaction<'_>, s: &Started, fx: &mut Effects) -> Result<(), DbError> {
    let stmt = tx.prepare_cached(sql::STARTED).await?;
    let attempt = s.attempt as i32;
    match tx.query_opt(&stmt, &[&s.node_run_id, &attempt, &s.worker_id, &ts(s.at_us)]).await? {
        Some(row) => fx.started.push(row.get(0)),
        None => fx.ignored += 1,
    }
    Ok(())
}

async fn heartbeat(tx: &Transaction<'_>, h: &WorkerHeartbeat, verified: bool) -> Result<(), DbError> {
    let stmt = tx.prepare_cached(sql::UPSERT_WORKER).await?;
    let running = h.running.len() as i32;
    let (tools, fingerprints) = (serde_json::json!(h.tools), serde_json::json!(h.fingerprints));
    let quarantined = serde_json::json!(h.quarantined);
    tx.execute(
        &stmt,
        &[
            &h.worker_id,
            &h.host,
            &h.version,
            &h.modules,
            &(h.concurrency as i32),
            &running,
            &h.status.as_str(),
            &tools,
            &fingerprints,
            &quarantined,
        ],
    )
    .await?;
    if !h.running.is_empty() {
        let ids: Vec<Uuid> = h.running.iter().map(|t| t.node_run_id).collect();
        let attempts: Vec<i32> = h.running.iter().map(|t| t.attempt as i32).collect();
        let stmt = tx.prepare_cached(sql::TOUCH_RUNNING).await?;
        let only_own = verified.then_some(h.worker_id.as_str());
        tx.execute(&stmt, &[&ids, &attempts, &only_own]).await?;
    }
    Ok(())
}

/// Every success of the batch in one statement; see [`sql::SUCCEEDED`].
async fn succeeded(tx: &Transaction<'_>, done: &[&Finished], fx: &mut Effects) -> Result<(), DbError> {
    if done.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(sql::SUCCEEDED).await?;
    let input = SuccessInput::of(done);
    let rows = tx.query(&stmt, &input.params()).await?;
    read_succeeded(rows, done.len(), fx);
    let artifacts = Artifacts::of(done);
    if !artifacts.sha256.is_empty() {
        let stmt = tx.prepare_cached(sql::RECORD_ARTIFACTS).await?;
        tx.execute(&stmt, &artifacts.params()).await?;
    }
    Ok(())
}

/// The artifacts a batch's outputs name, as the parallel arrays of [`sql::RECORD_ARTIFACTS`].
#[derive(Default)]
struct Artifacts {
    sha256: Vec<String>,
    kind: Vec<String>,
    bytes: Vec<i64>,
    mime: Vec<String>,
    meta: Vec<Value>,
    node_run: Vec<Uuid>,
}

impl Artifacts {
    fn of(done: &[&Finished]) -> Self {
        let mut a = Artifacts::default();
        for f in done {
            let Outcome::Succeeded { outputs } = &f.outcome else { continue };
            for r in refs_in(outputs) {
                a.sha256.push(r.sha256);
                a.kind.push(r.kind);
                a.bytes.push(r.bytes as i64);
                a.mime.push(r.mime);
                a.meta.push(if r.meta.is_null() { json!({}) } else { r.meta });
                a.node_run.push(f.node_run_id);
            }
        }
        a
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [&self.sha256, &self.kind, &self.bytes, &self.mime, &self.meta, &self.node_run]
    }
}

/// A batch of nothing but successes, the whole transaction in one round trip: `BEGIN`, the
/// run locks, [`sql::SUCCEEDED`] and `COMMIT` are sent back to back. The server runs them in
/// order; if a statement fails, the `COMMIT` rolls back and that statement's error is
/// returned. All four are on the wire before the first answer is awaited, so the connection
/// never goes back to the pool inside a transaction. `None` when the batch holds anything
/// else (see [`apply`]).
pub async fn apply_successes(client: &Client, messages: &[ResultBody]) -> Option<Result<Effects, DbError>> {
    let only_successes = messages.iter().all(|m| match m {
        ResultBody::Finished(_) | ResultBody::FinishedBatch(_) => {
            m.finished().iter().all(|f| matches!(f.outcome, Outcome::Succeeded { .. }))
        }
        _ => false,
    });
    if !only_successes {
        return None;
    }
    Some(one_trip(client, messages).await)
}

async fn one_trip(client: &Client, messages: &[ResultBody]) -> Result<Effects, DbError> {
    let mut fx = Effects::default();
    let mut seen: HashSet<(Uuid, u32)> = HashSet::new();
    let mut done: Vec<&Finished> = Vec::new();
    for f in messages.iter().flat_map(|m| m.finished()) {
        if seen.insert((f.node_run_id, f.attempt)) {
            done.push(f);
        } else {
            fx.ignored += 1;
        }
    }
    let touched: Vec<Uuid> = done.iter().map(|f| f.node_run_id).collect();
    let lock = client.prepare_cached(sql::LOCK_RUNS).await?;
    let stmt = client.prepare_cached(sql::SUCCEEDED).await?;
    let record = client.prepare_cached(sql::RECORD_ARTIFACTS).await?;
    let input = SuccessInput::of(&done);
    let params = input.params();
    let lock_params: [&(dyn ToSql + Sync); 1] = [&touched];
    let artifacts = Artifacts::of(&done);
    let artifact_params = artifacts.params();
    // Only batches whose outputs name artifacts pay for the extra statement.
    let record_artifacts = async {
        if artifacts.sha256.is_empty() {
            Ok(0)
        } else {
            client.execute(&record, &artifact_params).await
        }
    };
    let (_, _, rows, _, _) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        client.query(&lock, &lock_params),
        client.query(&stmt, &params),
        record_artifacts,
        client.batch_execute("COMMIT"),
    )?;
    read_succeeded(rows, done.len(), &mut fx);
    Ok(fx)
}

/// The parameters of [`sql::SUCCEEDED`], as parallel arrays.
struct SuccessInput<'a> {
    ids: Vec<Uuid>,
    attempts: Vec<i32>,
    workers: Vec<&'a str>,
    started: Vec<DateTime<Utc>>,
    finished: Vec<DateTime<Utc>>,
    outputs: Vec<&'a Value>,
    lease: f64,
    cache_keys: Vec<Option<&'a str>>,
    cached_from: Vec<Option<Uuid>>,
}

impl<'a> SuccessInput<'a> {
    fn of(done: &[&'a Finished]) -> Self {
        SuccessInput {
            ids: done.iter().map(|f| f.node_run_id).collect(),
            attempts: done.iter().map(|f| f.attempt as i32).collect(),
            workers: done.iter().map(|f| f.worker_id.as_str()).collect(),
            started: done.iter().map(|f| ts(f.started_at_us)).collect(),
            finished: done.iter().map(|f| ts(f.finished_at_us)).collect(),
            outputs: done
                .iter()
                .map(|f| match &f.outcome {
                    Outcome::Succeeded { outputs } => outputs,
                    Outcome::Failed { .. } => unreachable!("only successes are passed here"),
                })
                .collect(),
            lease: LEASE.as_secs_f64(),
            cache_keys: done
                .iter()
                .map(|f| match &f.cache {
                    Some(CacheEnd::Store { key } | CacheEnd::Hit { key, .. }) => Some(key.as_str()),
                    None => None,
                })
                .collect(),
            cached_from: done
                .iter()
                .map(|f| match &f.cache {
                    Some(CacheEnd::Hit { from, .. }) => Some(*from),
                    _ => None,
                })
                .collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.ids,
            &self.attempts,
            &self.workers,
            &self.started,
            &self.finished,
            &self.outputs,
            &self.lease,
            &self.cache_keys,
            &self.cached_from,
        ]
    }
}

/// Reads the rows of [`sql::SUCCEEDED`] for `submitted` successes into `fx`.
fn read_succeeded(rows: Vec<Row>, submitted: usize, fx: &mut Effects) {
    let mut applied = 0;
    let mut queued = Vec::new();
    let mut outbox_ids: HashMap<Uuid, i64> = HashMap::new();
    for r in rows {
        match r.get::<_, &str>(0) {
            "done" => {
                applied += 1;
                fx.succeeded.push((r.get(5), r.get(9), r.get(10)));
            }
            "outbox" => {
                outbox_ids.insert(r.get(2), r.get(1));
            }
            "ready" => queued.push(outbox::task_at(&r, 2)),
            _ => {
                let just: bool = r.get(11);
                fx.runs_succeeded += u64::from(just);
                if just && r.get::<_, Option<Uuid>>(3).is_some() {
                    fx.request_runs_finished += 1;
                }
            }
        }
    }
    fx.ready.extend(queued.into_iter().filter_map(|task| outbox_ids.get(&task.node_run_id).map(|&outbox_id| Ready { outbox_id, task })));
    fx.ignored += (submitted - applied) as u64;
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
        let task = outbox::task_at(&row, 0);
        fx.delayed += outbox::enqueue(tx, vec![task], delay, None).await?.len();
        fx.retried.push(module);
        return Ok(());
    }

    let stmt = tx.prepare_cached(sql::FAIL_NODE).await?;
    tx.execute(&stmt, &[&f.node_run_id, &worker, &started_at, &finished_at, &err, &error.log_tail]).await?;
    fx.failed.push(module);
    if !run_active {
        return Ok(()); // the run had already ended; nothing more to skip or fail
    }
    let why =
        if error.retryable { format!("attempt {} of {max_attempts}", f.attempt) } else { format!("attempt {}, not retryable", f.attempt) };
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
    if let Some(row) = tx.query_opt(&stmt, &[&run_id, &run_error]).await? {
        fx.runs_failed += 1;
        let request: Option<Uuid> = row.get(1);
        if let Some(request) = request {
            fx.request_runs_finished += 1;
            // A request's authoritative graph run failed: a legacy run answers instead.
            if row.get::<_, bool>(2) {
                if let Some((output_type, ready)) = request::insert_fallback(tx, request, policy.defaults).await? {
                    fx.fallbacks.push(output_type);
                    fx.ready.extend(ready);
                }
            }
        }
    }
    Ok(())
}
