//! The coordinator's broker sessions: the supervised session that runs the outbox publisher and the result
//! consumer, reconnecting with backoff when the link drops (lapin's own recovery is not used).

use crate::outbox::{self, PublishError};
use crate::results;
use crate::AppState;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::Connection;
use renderfleet_platform::broker::{connect, declare, Topology};
use renderfleet_shared::modules::{Builtins, NodeCatalog};
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
    let mut conn = Some(first);
    let mut delay = Duration::from_millis(200);
    loop {
        let c = match conn.take() {
            Some(c) => c,
            None => match connect(&state.config.amqp_url, "renderfleet-coordinator", "coordinator", Duration::from_secs(5)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "broker reconnect failed");
                    tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = cancel.cancelled() => return }
                    delay = (delay * 2).min(Duration::from_secs(30));
                    continue;
                }
            },
        };
        let started = tokio::time::Instant::now();
        let result = session(&state, &c, &cancel).await;
        state.broker_up.store(false, Ordering::Relaxed);
        let _ = c.close(200, "coordinator session ended".into()).await;
        match result {
            Ok(()) => return,
            Err(e) => tracing::error!(error = %e, "broker session ended; reconnecting"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            delay = Duration::from_millis(200);
        }
        tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = cancel.cancelled() => return }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// One connection's life: declare, then publish and consume until either fails.
async fn session(state: &AppState, conn: &Connection, cancel: &CancellationToken) -> Result<(), SessionError> {
    let topo = Topology::new(state.config.broker_prefix.clone());
    let publish = conn.create_channel().await?;
    declare(&publish, &topo.declarations(&Builtins.node_types())).await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let consume = conn.create_channel().await?;
    consume.basic_qos(state.config.results.prefetch, BasicQosOptions::default()).await?;
    let dead = conn.create_channel().await?;
    dead.confirm_select(ConfirmSelectOptions::default()).await?;
    state.broker_up.store(true, Ordering::Relaxed);
    tracing::info!(prefix = topo.prefix(), "broker session up");

    let session_cancel = cancel.child_token();
    let publisher = outbox::publish_loop(
        state.pool.clone(),
        publish,
        topo.tasks_exchange(),
        state.kick.clone(),
        state.config.outbox.clone(),
        session_cancel.clone(),
    );
    let consumer = results::consume_loop(
        state.pool.clone(),
        consume,
        dead,
        topo.results_queue(),
        topo.dead_exchange(),
        format!("coordinator-{}", state.instance),
        state.kick.clone(),
        state.config.results.clone(),
        state.config.retry.clone(),
        session_cancel.clone(),
    );
    // Whichever ends first ends the session; the other is stopped with it.
    tokio::pin!(publisher, consumer);
    let result = tokio::select! {
        r = &mut publisher => r.map_err(SessionError::from),
        r = &mut consumer => r,
    };
    session_cancel.cancel();
    result
}
