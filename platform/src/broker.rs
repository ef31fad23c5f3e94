//! The RabbitMQ link: connecting with an
//! error that names the URL and the fix, declaring the topology of DESIGN §4 from
//! [`Topology::declarations`], and dead-lettering a message with its reason.
//!
//! Reconnection is a supervised loop ([`supervise`]) around each binary's session; lapin's
//! automatic recovery is not relied on.

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use renderfleet_shared::config::redact_url;
use renderfleet_shared::metrics as m;
use renderfleet_shared::topology::{self, Declaration};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use renderfleet_shared::topology::Topology;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach RabbitMQ at {url} ({reason}) after {waited:?}; start it (`rabbitmq-server -detached`, or `ops/dev.sh services`), check the user, password and vhost, or set AMQP_URL"
)]
pub struct Unreachable {
    pub url: String,
    pub reason: String,
    pub waited: Duration,
}

/// Connects as `name` (shown in the management UI), retrying until `timeout`.
/// `component` labels the connection counter.
pub async fn connect(url: &str, name: &str, component: &'static str, timeout: Duration) -> Result<Connection, Unreachable> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(url, props).await {
            Ok(c) => {
                metrics::counter!(m::BROKER_CONNECTS_TOTAL, "component" => component).increment(1);
                return Ok(c);
            }
            Err(e) => {
                let waited = started.elapsed();
                if waited + delay > timeout {
                    return Err(Unreachable { url: redact_url(url), reason: e.to_string(), waited });
                }
                tracing::warn!(url = %redact_url(url), error = %e, "RabbitMQ not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The user a component authenticates as with a password (the URL's, RabbitMQ's `guest`
/// when it names none); `None` for other mechanisms (EXTERNAL, a client certificate), where
/// the broker's idea of the user may differ and a wrong `user_id` would close the channel.
pub fn password_user(url: &str) -> Option<String> {
    use lapin::uri::SASLMechanism;
    let uri = url.parse::<lapin::uri::AMQPUri>().ok()?;
    match uri.query.auth_mechanism {
        None | Some(SASLMechanism::Plain) | Some(SASLMechanism::AMQPlain) => Some(uri.authority.userinfo.username),
        Some(_) => None,
    }
}

/// Declares exchanges, queues and bindings (idempotent: same names, same arguments).
pub async fn declare(channel: &Channel, decls: &[Declaration]) -> Result<(), lapin::Error> {
    for d in decls {
        match d {
            Declaration::Exchange { name, kind } => {
                let kind = match kind {
                    topology::ExchangeKind::Direct => ExchangeKind::Direct,
                    topology::ExchangeKind::Fanout => ExchangeKind::Fanout,
                    topology::ExchangeKind::Topic => ExchangeKind::Topic,
                };
                let opts = ExchangeDeclareOptions { durable: true, ..Default::default() };
                channel.exchange_declare(name.as_str().into(), kind, opts, FieldTable::default()).await?;
            }
            Declaration::Queue { name, dead_letter_to } => {
                let mut args = FieldTable::default();
                if let Some(dlx) = dead_letter_to {
                    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
                }
                let opts = QueueDeclareOptions { durable: true, ..Default::default() };
                channel.queue_declare(name.as_str().into(), opts, args).await?;
            }
            Declaration::Bind { queue, exchange, routing_key } => {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Sends a copy of `delivery` to the dead-letter exchange with `reason` in the
/// [`topology::REASON_HEADER`] header and waits for the broker's confirm (when `channel` is
/// in confirm mode), then acks the original: a poison message is kept for inspection and
/// never retried forever. `source` labels the counter.
pub async fn dead_letter(
    channel: &Channel,
    dead_exchange: &str,
    delivery: &lapin::message::Delivery,
    reason: &str,
    source: &'static str,
) -> Result<(), lapin::Error> {
    let original = &delivery.properties;
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(topology::REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert("x-original-routing-key".into(), AMQPValue::LongString(delivery.routing_key.as_str().into()));
    // The sender's `user_id` is kept as a header, not as the property: the broker refuses a
    // `user_id` that is not this connection's user (and closes the channel).
    if let Some(user) = original.user_id() {
        headers.insert("x-original-user-id".into(), AMQPValue::LongString(user.as_str().into()));
    }
    let mut props = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    if let Some(t) = original.content_type() {
        props = props.with_content_type(t.clone());
    }
    if let Some(id) = original.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(at) = original.timestamp() {
        props = props.with_timestamp(*at);
    }
    let confirmation =
        channel.basic_publish(dead_exchange.into(), "".into(), BasicPublishOptions::default(), &delivery.data, props).await?.await?;
    if confirmation.is_nack() {
        // Keep the original rather than lose both: it is redelivered.
        delivery.acker.nack(lapin::options::BasicNackOptions { requeue: true, multiple: false }).await?;
        tracing::error!(reason, "the broker refused the dead letter; the message was requeued");
        return Ok(());
    }
    delivery.acker.ack(Default::default()).await?;
    metrics::counter!(m::DEAD_LETTERED_TOTAL, "source" => source).increment(1);
    tracing::warn!(reason, routing_key = %delivery.routing_key, "message dead-lettered");
    Ok(())
}

/// First pause before reconnecting; doubles up to the caller's maximum.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Runs `session` on `first`, then on new connections whenever a session fails, with
/// exponential backoff up to `max_delay`, until `cancel` or until a session returns `Ok`
/// (a clean shutdown). Each connection is closed after its session. Topology and QoS are the
/// session's to declare, so every reconnect redeclares them.
pub async fn supervise<F, Fut, E>(
    url: &str,
    name: &str,
    component: &'static str,
    first: Connection,
    max_delay: Duration,
    cancel: CancellationToken,
    mut session: F,
) where
    F: FnMut(Arc<Connection>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut next = Some(first);
    let mut delay = RECONNECT_MIN;
    loop {
        let conn = match next.take() {
            Some(c) => c,
            None => match connect(url, name, component, Duration::from_secs(5)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "broker reconnect failed");
                    if !pause(delay, &cancel).await {
                        return;
                    }
                    delay = (delay * 2).min(max_delay);
                    continue;
                }
            },
        };
        let conn = Arc::new(conn);
        let began = tokio::time::Instant::now();
        let result = session(conn.clone()).await;
        let _ = conn.close(200, "session ended".into()).await;
        match result {
            Ok(()) => return,
            Err(e) => tracing::error!(error = %e, "broker session ended; reconnecting"),
        }
        if began.elapsed() > HEALTHY_SESSION {
            delay = RECONNECT_MIN;
        }
        if !pause(delay, &cancel).await {
            return;
        }
        delay = (delay * 2).min(max_delay);
    }
}

/// Sleeps `d`; false when cancelled first.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}
