//! The transactional outbox: task messages are written in the same transaction as the state
//! change that made a node ready ([`enqueue`]), and published afterwards by [`publish_loop`]
//! with publisher confirms. A crash between commit and publish loses nothing: the row stays
//! until a publisher marks it sent. A crash between publish and mark re-publishes it; the
//! result consumer's idempotency makes that harmless.

use crate::db::{sql, DbError};
use deadpool_postgres::{Pool, Transaction};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use renderfleet_shared::config::OutboxConfig;
use renderfleet_shared::metrics as m;
use renderfleet_shared::wire::{self, TaskMessage, CONTENT_TYPE};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Writes task messages to the outbox inside `tx`; `delay` holds them back (retry backoff).
pub async fn enqueue(tx: &Transaction<'_>, tasks: &[TaskMessage], delay: Duration) -> Result<(), DbError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.node_run_id).collect();
    let attempts: Vec<i32> = tasks.iter().map(|t| t.attempt as i32).collect();
    let keys: Vec<&str> = tasks.iter().map(|t| t.module_key.as_str()).collect();
    let payloads: Vec<Vec<u8>> = tasks.iter().map(wire::encode).collect();
    let delays: Vec<f64> = vec![delay.as_secs_f64(); tasks.len()];
    let stmt = tx.prepare_cached(sql::ENQUEUE).await?;
    tx.execute(&stmt, &[&ids, &attempts, &keys, &payloads, &delays]).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not confirm {count} task(s) within {CONFIRM_TIMEOUT:?} (a memory or disk alarm?); they stay in the outbox")]
    ConfirmTimeout { count: usize },
}

/// Longest wait for publisher confirms while the batch's rows are locked.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// A row the broker refused is tried again after this long, without holding back the others.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

impl From<tokio_postgres::Error> for PublishError {
    fn from(e: tokio_postgres::Error) -> Self {
        PublishError::Db(e.into())
    }
}
impl From<deadpool_postgres::PoolError> for PublishError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PublishError::Db(e.into())
    }
}

/// Publishes due rows until `cancel`; wakes on `kick` (a commit that enqueued), at the next
/// `not_before`, or every `idle_poll` at the latest. Returns on a broker error so the
/// supervisor can reconnect; database errors are retried here.
pub async fn publish_loop(
    pool: Pool,
    channel: Channel,
    exchange: String,
    kick: Arc<Notify>,
    cfg: OutboxConfig,
    cancel: CancellationToken,
) -> Result<(), PublishError> {
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let wait = match publish_batch(&pool, &channel, &exchange, cfg.batch_size).await {
            Ok(n) if n as i64 >= cfg.batch_size => continue,
            Ok(_) => next_due(&pool).await.unwrap_or(cfg.idle_poll).min(cfg.idle_poll),
            Err(PublishError::Db(e)) => {
                tracing::warn!(error = %e, "outbox: database error; retrying");
                Duration::from_millis(500)
            }
            Err(e) => return Err(e),
        };
        tokio::select! {
            _ = kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

async fn next_due(pool: &Pool) -> Option<Duration> {
    let client = pool.get().await.ok()?;
    let row = client.query_one(sql::NEXT_DUE, &[]).await.ok()?;
    let secs: Option<f64> = row.get(0);
    secs.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// Claims, publishes and marks one batch; returns how many rows were published.
async fn publish_batch(pool: &Pool, channel: &Channel, exchange: &str, limit: i64) -> Result<usize, PublishError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let claim = tx.prepare_cached(sql::CLAIM_DUE).await?;
    let rows = tx.query(&claim, &[&limit]).await?;
    if rows.is_empty() {
        metrics::gauge!(m::OUTBOX_LAG_SECONDS).set(0.0);
        return Ok(0);
    }
    let lag: f64 = rows.iter().map(|r| r.get::<_, f64>(5)).fold(0.0, f64::max);
    metrics::gauge!(m::OUTBOX_LAG_SECONDS).set(lag);

    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let routing_key: &str = row.get(1);
        let payload: &[u8] = row.get(2);
        let node_run_id: Uuid = row.get(3);
        let attempt: i32 = row.get(4);
        let message_id = format!("{node_run_id}:{attempt}");
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(message_id.clone().into());
        let confirm = channel
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions { mandatory: true, immediate: false }, payload, props)
            .await?;
        pending.push((row.get::<_, i64>(0), confirm, message_id, routing_key.to_string()));
    }
    let mut sent = Vec::with_capacity(rows.len());
    let mut refused = Vec::new();
    let confirms = futures_util::future::join_all(pending.into_iter().map(|(id, confirm, message_id, module)| async move {
        (id, confirm.await, message_id, module)
    }));
    let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, confirms).await.map_err(|_| PublishError::ConfirmTimeout { count: rows.len() })?;
    for (id, confirmation, message_id, module) in confirmed {
        match confirmation? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {
                metrics::counter!(m::NODE_TASKS_TOTAL, "module" => module, "status" => "dispatched").increment(1);
                sent.push(id);
            }
            Confirmation::Ack(Some(_)) => {
                tracing::error!(%message_id, %module, "task unroutable: no queue is bound for module `{module}`; retrying in {REFUSED_RETRY:?}");
                refused.push(id);
            }
            Confirmation::Nack(_) => {
                tracing::error!(%message_id, "the broker refused the task (nack); retrying in {REFUSED_RETRY:?}");
                refused.push(id);
            }
        }
    }
    let mark = tx.prepare_cached(sql::MARK_SENT).await?;
    tx.execute(&mark, &[&sent]).await?;
    if !refused.is_empty() {
        tx.execute(sql::DEFER, &[&refused, &REFUSED_RETRY.as_secs_f64()]).await?;
    }
    tx.commit().await?;
    let ids = sent;
    metrics::counter!(m::OUTBOX_PUBLISHED_TOTAL).increment(ids.len() as u64);
    Ok(ids.len())
}
