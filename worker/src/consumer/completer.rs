//! Publishes what workers report to the results exchange. A result is published with a
//! publisher confirm *before* its task is acked, so a crash in between redelivers the task
//! rather than losing the result.

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use renderfleet_shared::wire::{self, Finished, ResultBody, ResultMessage, CONTENT_TYPE, WIRE_VERSION};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub(crate) struct Completer {
    /// In confirm mode: results and dead letters.
    pub(crate) channel: Channel,
    /// Not in confirm mode: starts and heartbeats. (A confirm-mode channel keeps every
    /// confirm nobody awaits until the connection closes.)
    pub(crate) unconfirmed: Channel,
    pub(crate) exchange: String,
    /// The broker user this worker connects as, sent as each message's `user_id`: the
    /// broker refuses a `user_id` that is not the connection's own, so the coordinator can
    /// trust it to say who reported (`results.verify_sender`). None: not sent.
    pub(crate) user_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CompleteError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not take the result (nack or unroutable)")]
    Refused,
}

/// Longest wait for the broker to confirm a result message.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most attempt ends coalesced into one result message.
const BATCH_MAX: usize = 256;

/// An attempt's end waiting to be published; the reply says whether the broker confirmed it.
pub(crate) type Pending = (Finished, oneshot::Sender<bool>);

/// Publishes attempt ends as they come. Whatever is ready while the previous publish waits
/// for its confirm goes out together in one message: a quiet worker sends each end alone,
/// at once; a busy one sends fewer, larger messages.
pub(crate) async fn publish_results(completer: Completer, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (mut finished, replies): (Vec<Finished>, Vec<oneshot::Sender<bool>>) = batch.into_iter().unzip();
        let body = if finished.len() == 1 { ResultBody::Finished(finished.remove(0)) } else { ResultBody::FinishedBatch(finished) };
        // Bounded: a broker stuck in a memory or disk alarm must not hold the tasks forever
        // (they are requeued instead).
        let confirmed = match tokio::time::timeout(CONFIRM_TIMEOUT, completer.publish_confirmed(body)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, results = replies.len(), "results not confirmed by the broker");
                false
            }
            Err(_) => {
                tracing::error!(results = replies.len(), "no confirm from the broker within {CONFIRM_TIMEOUT:?}");
                false
            }
        };
        for reply in replies {
            let _ = reply.send(confirmed);
        }
    }
}

impl Completer {
    /// Publishes and waits for the broker's confirm.
    pub(crate) async fn publish_confirmed(&self, body: ResultBody) -> Result<(), CompleteError> {
        match self.publish(&self.channel, body).await?.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            _ => Err(CompleteError::Refused),
        }
    }

    /// Publishes without waiting for the confirm (progress and heartbeats: the next one
    /// supersedes a lost one).
    pub(crate) async fn publish_unconfirmed(&self, body: ResultBody) -> Result<(), CompleteError> {
        drop(self.publish(&self.unconfirmed, body).await?);
        Ok(())
    }

    async fn publish(&self, channel: &Channel, body: ResultBody) -> Result<lapin::PublisherConfirm, lapin::Error> {
        let payload = wire::encode(&ResultMessage { v: WIRE_VERSION, body });
        let mut props = BasicProperties::default().with_delivery_mode(2).with_content_type(CONTENT_TYPE.into());
        if let Some(user) = &self.user_id {
            props = props.with_user_id(user.as_str().into());
        }
        channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions { mandatory: true, immediate: false },
                &payload,
                props,
            )
            .await
    }
}
