//! The coordinator's broker sessions: the supervised session that runs the outbox publisher and the result
//! consumer, reconnecting with backoff when the link drops (lapin's own recovery is not used).

use crate::outbox::{self, PublishError};
use crate::results;
use crate::AppState;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::Connection;
use renderfleet_platform::broker::{declare, Topology};
use renderfleet_shared::registry::registry;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("{0}")]
    Closed(&'static str),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Runs broker sessions until `cancel`, reconnecting with backoff.
pub async fn supervise(state: AppState, first: Connection, cancel: CancellationToken) {
    let url = state.config.amqp_url.clone();
    let max = Duration::from_secs(30);
    let name = crate::connection_name(&state.config.broker_prefix, &state.instance);
    renderfleet_platform::broker::supervise(&url, &name, "coordinator", first, max, cancel.clone(), |conn| {
        let (state, cancel) = (state.clone(), cancel.clone());
        async move {
            let result = session(&state, &conn, &cancel).await;
            state.broker_up.store(false, Ordering::Relaxed);
            result
        }
    })
    .await;
}

/// One connection's life: declare, then publish and consume until either fails.
async fn session(state: &AppState, conn: &Connection, cancel: &CancellationToken) -> Result<(), SessionError> {
    let topo = Topology::new(state.config.broker_prefix.clone());
    let publish = conn.create_channel().await?;
    declare(&publish, &topo.declarations(&registry().module_keys())).await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let consume = conn.create_channel().await?;
    consume.basic_qos(state.config.results.prefetch, BasicQosOptions::default()).await?;
    let dead = conn.create_channel().await?;
    dead.confirm_select(ConfirmSelectOptions::default()).await?;
    let control = conn.create_channel().await?;
    control.confirm_select(ConfirmSelectOptions::default()).await?;
    *state.control.lock().await = Some(control);
    state.broker_up.store(true, Ordering::Relaxed);
    tracing::info!(prefix = topo.prefix(), "broker session up");

    let session_cancel = cancel.child_token();
    let publisher = outbox::publish_loop(
        state.pool.clone(),
        publish,
        route(state, &topo),
        state.hot.clone(),
        state.config.outbox.clone(),
        session_cancel.clone(),
    );
    let consumer = results::consume_loop(state.clone(), consume, dead, topo.results_queue(), topo.dead_exchange(), session_cancel.clone());
    let events = conn.create_channel().await?;
    events.confirm_select(ConfirmSelectOptions::default()).await?;
    let events = crate::events::publish_loop(
        state.pool.clone(),
        events,
        topo.events_exchange(),
        state.events_kick.clone(),
        state.config.webhooks.poll,
        session_cancel.clone(),
    );
    // Whichever ends first ends the session; the others are stopped with it.
    tokio::pin!(publisher, consumer, events);
    let result = tokio::select! {
        r = &mut publisher => r.map_err(SessionError::from),
        r = &mut consumer => r,
        r = &mut events => r.map_err(SessionError::from),
    };
    session_cancel.cancel();
    *state.control.lock().await = None;
    result
}

/// Where this coordinator's publisher sends, and whether it serves from the cache.
fn route(state: &AppState, topo: &Topology) -> outbox::Route {
    let cfg = &state.config;
    let cache = (cfg.cache.enabled && !cfg.artifacts_dir.is_empty()).then(|| outbox::cache::Cache {
        store: cfg.artifacts_dir.clone().into(),
        live_for: cfg.recovery.heartbeat_timeout,
        warned: Default::default(),
    });
    let user_id = renderfleet_platform::broker::password_user(&cfg.amqp_url);
    outbox::Route {
        tasks: topo.tasks_exchange(),
        results: topo.results_exchange(),
        user_id,
        cache,
        scheduling: cfg.scheduling.clone(),
        topo: topo.clone(),
        live_for: cfg.recovery.heartbeat_timeout,
    }
}
