//! What operators do to runs: cancel one (its running tasks are stopped on their workers
//! through the control exchange) and retry one (every failed or skipped node runs again as
//! a new attempt). Both change state in one transaction, keyed like everything else, so a
//! repeated call is harmless.

use super::super::outbox::{self, LEASE};
use crate::db::{sql, DbError};
use crate::AppState;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use renderfleet_platform::broker::Topology;
use renderfleet_shared::wire::{self, ControlBody, ControlMessage, TaskRef, CONTENT_TYPE, WIRE_VERSION};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error("no run {0}; check the id (`renderctl runs show ID`)")]
    NotFound(Uuid),
    #[error("run {id} is `{status}`: {why}")]
    Refused { id: Uuid, status: String, why: &'static str },
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
    if tx.query_opt(sql::CANCEL_RUN, &[&id, &reason]).await?.is_none() {
        drop(tx);
        drop(client); // `refuse` takes a connection of its own
        return Err(refuse(state, id, "only a running run can be cancelled").await);
    }
    let task = |r: &tokio_postgres::Row| TaskRef { node_run_id: r.get("id"), attempt: r.get::<_, i32>("attempt") as u32 };
    let mut withdrawn: Vec<TaskRef> = tx.query(sql::RUNNING_ATTEMPTS, &[&id]).await?.iter().map(task).collect();
    let skipped = tx.query(sql::SKIP_FOR_CANCEL, &[&id, &reason]).await?;
    withdrawn.extend(skipped.iter().filter(|r| r.get::<_, bool>("queued")).map(task));
    tx.execute(sql::WITHDRAW_UNSENT, &[&id]).await?;
    tx.commit().await?;
    drop(client); // not held while waiting for the broker
    metrics::counter!(renderfleet_shared::metrics::RUNS_TOTAL, "status" => "cancelled").increment(1);
    tracing::warn!(run_id = %id, %reason, withdrawn = withdrawn.len(), "run cancelled");
    Ok(tell_workers(state, id, withdrawn).await)
}

/// Publishes the cancellation to every worker (fanout), waiting briefly for the confirm:
/// workers stop the run's tasks in hand and drop the `withdrawn` ones when they arrive.
async fn tell_workers(state: &AppState, run_id: Uuid, withdrawn: Vec<TaskRef>) -> bool {
    let Some(channel) = state.control.lock().await.clone() else { return false };
    let msg = ControlMessage { v: WIRE_VERSION, body: ControlBody::CancelRun { run_id, withdrawn } };
    let topo = Topology::new(state.config.broker_prefix.clone());
    let props = BasicProperties::default().with_content_type(CONTENT_TYPE.into()).with_message_id(format!("cancel:{run_id}").into());
    let sent = async {
        channel
            .basic_publish(topo.control_exchange().as_str().into(), "".into(), BasicPublishOptions::default(), &wire::encode(&msg), props)
            .await?
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), sent).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(run_id = %run_id, error = %e, "the cancellation could not be sent to the workers; their running tasks finish and are ignored");
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
