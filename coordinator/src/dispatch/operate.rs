//! What operators do to runs: cancel one (its running tasks are stopped on their workers
//! through the control exchange), or every run of a render request, and retry one (every
//! failed or skipped node runs again as a new attempt). Each changes state in one
//! transaction, keyed like everything else, so a repeated call is harmless. And to workers:
//! release a module a worker quarantined.

use super::super::outbox::{self, LEASE};
use crate::db::{sql, DbError};
use crate::AppState;
use deadpool_postgres::Transaction;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use renderfleet_platform::broker::Topology;
use renderfleet_shared::wire::{self, ControlBody, ControlMessage, Quarantined, TaskRef, CONTENT_TYPE, WIRE_VERSION};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error("no run {0}; `renderctl runs list` (GET /v1/runs) lists the runs there are, newest first")]
    NotFound(Uuid),
    #[error("run {id} is `{status}`: {why}")]
    Refused { id: Uuid, status: String, why: &'static str },
    #[error("no render request {0}; check the id (`renderctl requests show ID`)")]
    RequestNotFound(Uuid),
    #[error("render request {0} has no running run to cancel: it has finished (`renderctl requests show {0}`)")]
    RequestFinished(Uuid),
    #[error("no worker `{0}` has sent a heartbeat; `renderctl workers list` shows the live ones")]
    WorkerNotFound(String),
    #[error("worker `{worker}` has {what} in quarantine; `renderctl workers list` shows what each worker has")]
    NotQuarantined { worker: String, what: String },
    #[error(
        "the broker is not reachable from this coordinator, so the workers cannot be told; try again once `/readyz` says the broker is ok"
    )]
    BrokerDown,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for OperateError {
    fn from(e: tokio_postgres::Error) -> Self {
        OperateError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for OperateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        OperateError::Db(e.into())
    }
}

async fn refuse(state: &AppState, id: Uuid, why: &'static str) -> OperateError {
    let status = match state.pool.get().await {
        Ok(c) => c.query_opt(sql::GET_RUN, &[&id]).await.ok().flatten().map(|r| r.get::<_, String>(3)),
        Err(_) => None,
    };
    match status {
        None => OperateError::NotFound(id),
        Some(status) => OperateError::Refused { id, status, why },
    }
}

/// Cancels a running run. Returns whether the workers could be told to stop its running
/// tasks now (when the broker is down, those tasks finish and their results are ignored).
pub async fn cancel(state: &AppState, id: Uuid, reason: &str) -> Result<bool, OperateError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(withdrawn) = cancel_in(&tx, id, reason).await? else {
        drop(tx);
        drop(client); // `refuse` takes a connection of its own
        return Err(refuse(state, id, "only a running run can be cancelled").await);
    };
    tx.commit().await?;
    drop(client); // not held while waiting for the broker
                  // A request's run that ended wrote its event (V12): deliver it now, not at the next poll.
    state.request_run_ended();
    metrics::counter!(renderfleet_shared::metrics::RUNS_TOTAL, "status" => "cancelled").increment(1);
    tracing::warn!(run_id = %id, %reason, withdrawn = withdrawn.len(), "run cancelled");
    Ok(tell_workers(state, id, withdrawn).await)
}

/// Run `id` cancelled inside `tx`: its nodes not started skipped, its unsent tasks withdrawn.
/// Returns the attempts the workers must stop or never start; `None` when it is not running.
async fn cancel_in(tx: &Transaction<'_>, id: Uuid, reason: &str) -> Result<Option<Vec<TaskRef>>, DbError> {
    if tx.query_opt(sql::CANCEL_RUN, &[&id, &reason]).await?.is_none() {
        return Ok(None);
    }
    let task = |r: &tokio_postgres::Row| TaskRef { node_run_id: r.get("id"), attempt: r.get::<_, i32>("attempt") as u32 };
    let mut withdrawn: Vec<TaskRef> = tx.query(sql::RUNNING_ATTEMPTS, &[&id]).await?.iter().map(task).collect();
    let skipped = tx.query(sql::SKIP_FOR_CANCEL, &[&id, &reason]).await?;
    withdrawn.extend(skipped.iter().filter(|r| r.get::<_, bool>("queued")).map(task));
    tx.execute(sql::WITHDRAW_UNSENT, &[&id]).await?;
    Ok(Some(withdrawn))
}

/// What cancelling a render request did.
#[derive(Debug)]
pub struct RequestCancelled {
    /// The runs it cancelled: the authoritative one, its shadows, a fallback.
    pub runs: Vec<Uuid>,
    /// Whether every worker could be told at once.
    pub workers_told: bool,
}

/// Cancels every running run of render request `id` in one transaction (the order system's
/// cancel: the order line was withdrawn). Its `request.cancelled` event follows from the
/// authoritative run's end (migration V12).
pub async fn cancel_request(state: &AppState, id: Uuid, reason: &str) -> Result<RequestCancelled, OperateError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if tx.query_opt(sql::REQUEST_EXISTS, &[&id]).await?.is_none() {
        return Err(OperateError::RequestNotFound(id));
    }
    let mut cancelled = Vec::new();
    for row in tx.query(sql::REQUEST_RUNNING_RUNS, &[&id]).await? {
        let run: Uuid = row.get("id");
        if let Some(withdrawn) = cancel_in(&tx, run, reason).await? {
            cancelled.push((run, withdrawn));
        }
    }
    if cancelled.is_empty() {
        return Err(OperateError::RequestFinished(id));
    }
    tx.commit().await?;
    drop(client);
    state.request_run_ended();
    metrics::counter!(renderfleet_shared::metrics::RUNS_TOTAL, "status" => "cancelled").increment(cancelled.len() as u64);
    tracing::warn!(request_id = %id, %reason, runs = cancelled.len(), "render request cancelled");
    let mut workers_told = true;
    let mut runs = Vec::new();
    for (run, withdrawn) in cancelled {
        workers_told &= tell_workers(state, run, withdrawn).await;
        runs.push(run);
    }
    Ok(RequestCancelled { runs, workers_told })
}

/// Tells worker `worker_id` to take up its quarantined `module` (none: every one) again.
/// Returns the modules it releases.
pub async fn release(state: &AppState, worker_id: &str, module: Option<&str>) -> Result<Vec<String>, OperateError> {
    let client = state.pool.get().await?;
    let row =
        client.query_opt(sql::WORKER_QUARANTINE, &[&worker_id]).await?.ok_or_else(|| OperateError::WorkerNotFound(worker_id.into()))?;
    drop(client);
    let quarantined: Vec<Quarantined> = serde_json::from_value(row.get("quarantined")).unwrap_or_default();
    let released: Vec<String> = quarantined.into_iter().map(|q| q.module).filter(|m| module.is_none_or(|want| want == m)).collect();
    if released.is_empty() {
        let what = module.map(|m| format!("no module `{m}`")).unwrap_or_else(|| "no module".into());
        return Err(OperateError::NotQuarantined { worker: worker_id.into(), what });
    }
    let body = ControlBody::Release { worker_id: worker_id.into(), module: module.map(Into::into) };
    if !broadcast(state, body, format!("release:{worker_id}:{}", Uuid::now_v7())).await {
        return Err(OperateError::BrokerDown);
    }
    tracing::warn!(worker_id, ?released, "quarantine released by an operator");
    Ok(released)
}

/// Publishes the cancellation to every worker (fanout), waiting briefly for the confirm:
/// workers stop the run's tasks in hand and drop the `withdrawn` ones when they arrive.
async fn tell_workers(state: &AppState, run_id: Uuid, withdrawn: Vec<TaskRef>) -> bool {
    broadcast(state, ControlBody::CancelRun { run_id, withdrawn }, format!("cancel:{run_id}")).await
}

/// Publishes `body` on the control exchange (every worker has a queue bound to it), waiting
/// briefly for the broker's confirm; false when it could not be sent.
async fn broadcast(state: &AppState, body: ControlBody, message_id: String) -> bool {
    let Some(channel) = state.control.lock().await.clone() else { return false };
    let msg = ControlMessage { v: WIRE_VERSION, body };
    let topo = Topology::new(state.config.broker_prefix.clone());
    let props = BasicProperties::default().with_content_type(CONTENT_TYPE.into()).with_message_id(message_id.clone().into());
    let sent = async {
        channel
            .basic_publish(topo.control_exchange().as_str().into(), "".into(), BasicPublishOptions::default(), &wire::encode(&msg), props)
            .await?
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), sent).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(message_id, error = %e, "a control message could not be sent to the workers (a cancellation's running tasks then finish and are ignored)");
            false
        }
        Err(_) => false,
    }
}

/// Retries a failed or cancelled run: every failed or skipped node gets a new attempt, and
/// those that wait for nothing are queued at once. Returns how many nodes run again.
pub async fn retry(state: &AppState, id: Uuid) -> Result<i64, OperateError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if tx.query_opt(sql::REOPEN_RUN, &[&id]).await?.is_none() {
        drop(tx);
        drop(client);
        return Err(refuse(
            state,
            id,
            "only a failed or cancelled run with failed or skipped nodes can be retried, once none of its tasks is still queued or stopping, and not a graph run a legacy fallback already answered",
        )
        .await);
    }
    let reset: i64 = tx.query_one(sql::RESET_NODES, &[&id]).await?.get(0);
    let tasks = tx.query(sql::QUEUE_READY, &[&id]).await?.iter().map(|r| outbox::task_at(r, 0)).collect();
    let ready = outbox::enqueue(&tx, tasks, Duration::ZERO, Some(LEASE)).await?;
    tx.commit().await?;
    state.hot.send(ready);
    tracing::warn!(run_id = %id, nodes = reset, "run retried");
    Ok(reset)
}
