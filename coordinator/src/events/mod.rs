//! Completion events (migration V12, `shared::events`): the database writes an event in the
//! transaction that ends a request's answering run; from there this module publishes it on
//! the `<prefix>.events` topic exchange ([`publish_loop`], in the broker session) and
//! [`webhooks`] delivers it to each subscription. Both send the same body, built once.

pub mod webhooks;

use crate::db::{sql, DbError};
use deadpool_postgres::{GenericClient, Pool};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::events::{self, Event, EventArtifact, EventRequest, EventRun, EventType};
use renderfleet_shared::scheduling::Priority;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where a delivered artifact can be downloaded (`GET`, scope `read`).
pub fn artifact_path(sha256: &str) -> String {
    format!("/v1/artifacts/{sha256}")
}

/// The bodies of events `ids`, built from the request and run the first time and kept, so
/// every delivery of an event is the same bytes.
pub async fn payloads(client: &impl GenericClient, ids: &[Uuid]) -> Result<HashMap<Uuid, Value>, DbError> {
    let mut out = HashMap::new();
    for row in client.query(sql::EVENTS_FOR_PAYLOAD, &[&ids]).await? {
        let id: Uuid = row.get("id");
        if let Some(kept) = row.get::<_, Option<Value>>("payload") {
            out.insert(id, kept);
            continue;
        }
        let kind = EventType::parse(row.get("type")).unwrap_or(EventType::Failed);
        let run_id: Uuid = row.get("run_id");
        let artifacts = match (kind, row.get::<_, Option<String>>("artifact_kind")) {
            (EventType::Succeeded, Some(artifact_kind)) => client
                .query(sql::RUN_ARTIFACTS_OF_KIND, &[&run_id, &artifact_kind])
                .await?
                .iter()
                .filter_map(|r| serde_json::from_value::<ArtifactRef>(r.get("artifact")).ok())
                .map(|a| EventArtifact { path: artifact_path(&a.sha256), kind: a.kind, sha256: a.sha256, bytes: a.bytes, mime: a.mime })
                .collect(),
            _ => Vec::new(),
        };
        // The status the event reports, not the run's now (a fallback goes on running).
        let status = match kind {
            EventType::Succeeded => "succeeded",
            EventType::Failed => "failed",
            EventType::Cancelled => "cancelled",
            EventType::Fallback => "running",
        };
        let event = Event {
            id,
            kind,
            created_at: row.get("created_at"),
            request: EventRequest {
                id: row.get("request_id"),
                order_line_id: row.get("order_line_id"),
                output_type: row.get("output_type_key"),
                idempotency_key: row.get("idempotency_key"),
                priority: Priority::from_rank(row.get("priority")).unwrap_or_default(),
                submitter: row.get("submitter"),
            },
            run: EventRun { id: run_id, pipeline: row.get("pipeline"), status: status.into() },
            artifacts,
            error: if matches!(kind, EventType::Failed | EventType::Cancelled) { row.get("error") } else { None },
        };
        let built = serde_json::to_value(&event).expect("an event serializes");
        let kept: Option<Value> = client.query_one(sql::KEEP_PAYLOAD, &[&id, &built]).await?.get("payload");
        let kept = match kept {
            Some(kept) => kept,
            // Another builder (the exchange's publisher, another coordinator's deliverer)
            // kept one while this statement waited for its row: this statement's snapshot
            // predates it, a new statement sees it.
            None => client.query_one(sql::EVENT_PAYLOAD, &[&id]).await?.get::<_, Option<Value>>("payload").unwrap_or(built),
        };
        out.insert(id, kept);
    }
    Ok(out)
}

/// Publishes events on the exchange until `cancel`, woken by `kick` (a request ended here)
/// or every `poll`. Returns on a broker error so the session can reconnect.
pub async fn publish_loop(
    pool: Pool,
    channel: Channel,
    exchange: String,
    kick: Arc<Notify>,
    poll: Duration,
    cancel: CancellationToken,
) -> Result<(), lapin::Error> {
    loop {
        match publish_pending(&pool, &channel, &exchange).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(PublishEventsError::Broker(e)) => return Err(e),
            Err(PublishEventsError::Db(e)) => tracing::warn!(error = %e, "events: database error; retrying"),
        }
        tokio::select! {
            _ = kick.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishEventsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
}

impl From<tokio_postgres::Error> for PublishEventsError {
    fn from(e: tokio_postgres::Error) -> Self {
        PublishEventsError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for PublishEventsError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PublishEventsError::Db(e.into())
    }
}

/// Publishes one batch of unpublished events (persistent, confirmed) and marks them.
async fn publish_pending(pool: &Pool, channel: &Channel, exchange: &str) -> Result<usize, PublishEventsError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx.query(sql::CLAIM_UNPUBLISHED_EVENTS, &[&100i64]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get("id")).collect();
    let bodies = payloads(&tx, &ids).await?;
    let mut confirms = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: Uuid = r.get("id");
        let kind = EventType::parse(r.get("type")).unwrap_or(EventType::Failed);
        let key = events::routing_key(kind, r.get("output_type_key"));
        let Some(body) = bodies.get(&id) else {
            tracing::error!(event = %id, "an event whose request or run is gone is not published");
            continue;
        };
        let body = serde_json::to_vec(body).expect("JSON");
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.to_string().into())
            .with_type(kind.as_str().into());
        // Not mandatory: an exchange nobody has bound a queue to simply drops the event.
        confirms.push(channel.basic_publish(exchange.into(), key.as_str().into(), BasicPublishOptions::default(), &body, props).await?);
    }
    for c in confirms {
        if c.await?.is_nack() {
            // Nothing marked: the whole batch goes again (consumers deduplicate on the id).
            tracing::error!("the broker refused an event (nack); the batch is published again");
            return Ok(0);
        }
    }
    tx.execute(sql::MARK_EVENTS_PUBLISHED, &[&ids]).await?;
    tx.commit().await?;
    Ok(ids.len())
}
