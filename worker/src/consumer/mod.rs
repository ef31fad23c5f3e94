//! The consumer: one supervised broker session at a time. It binds the queues of the
//! modules this worker runs, never holds more tasks than it has free slots (prefetch =
//! concurrency, shared across its queues), hands each task to the executor, and lets the
//! completer publish the result before the task is acked. On SIGTERM it stops taking tasks,
//! lets the ones in hand finish within the grace period, and requeues the rest. A module
//! that keeps failing on this host is quarantined (see [`quarantine`]): its consumer is
//! cancelled until the cool-down ends or an operator releases it.

mod completer;
mod executor;
mod quarantine;

pub(crate) use quarantine::Health;

use crate::module::Module;
use crate::Worker;
use completer::Completer;
use executor::{execute, Executed, StopReason};
use futures_util::stream::{select_all, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};
use renderfleet_platform::broker::{dead_letter, declare};
use renderfleet_shared::metrics as m;
use renderfleet_shared::wire::{
    self, ControlBody, ControlMessage, ErrorKind, Finished, ResultBody, Started, TaskError, TaskMessage, TaskRef, WorkerHeartbeat,
    WorkerStatus,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// An attempt in hand.
struct InHand {
    run_id: Uuid,
    attempt: u32,
    cancel: CancellationToken,
    reason: Arc<Mutex<StopReason>>,
}

type Running = Arc<Mutex<HashMap<Uuid, InHand>>>;

/// How many withdrawn attempts a worker remembers (the newest).
const WITHDRAWN_KEPT: usize = 100_000;

/// Attempts that cancellations withdrew, remembered across broker sessions: their messages
/// may still be waiting in a task queue, and must never start a module.
#[derive(Default)]
pub(crate) struct Withdrawn(Mutex<(HashSet<TaskRef>, VecDeque<TaskRef>)>);

impl Withdrawn {
    fn add(&self, tasks: &[TaskRef]) {
        let mut guard = self.0.lock().expect("withdrawn");
        let (set, order) = &mut *guard;
        for t in tasks {
            if set.insert(*t) {
                order.push_back(*t);
            }
        }
        while order.len() > WITHDRAWN_KEPT {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    fn contains(&self, task: &TaskRef) -> bool {
        self.0.lock().expect("withdrawn").0.contains(task)
    }
}

/// How often a worker named in a task's `avoid` hands it back before running it anyway (the
/// other workers may all be busy or gone since the coordinator looked), and how long it
/// holds it first, so that a lone avoided worker does not spin the task through the broker.
const AVOID_BOUNCES: u32 = 20;
const AVOID_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// How often a task was handed back for naming its worker in `avoid`.
const AVOIDED_HEADER: &str = "x-renderfleet-avoided";

/// Takes an attempt off the in-hand list when its handling ends, whichever way it ends.
struct InHandGuard {
    running: Running,
    node_run_id: Uuid,
}

impl Drop for InHandGuard {
    fn drop(&mut self) {
        self.running.lock().expect("running map").remove(&self.node_run_id);
        metrics::gauge!(m::WORKER_BUSY_SLOTS).decrement(1.0);
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker closed the consumer")]
    Closed,
}

/// Runs sessions until `shutdown`, reconnecting with backoff when the link drops.
pub(crate) async fn supervise(worker: Arc<Worker>, first: Connection, shutdown: CancellationToken) {
    let (url, max) = (worker.config.amqp_url.clone(), worker.config.reconnect_max);
    let name = crate::connection_name(worker.topology.prefix(), &worker.id);
    renderfleet_platform::broker::supervise(&url, &name, "worker", first, max, shutdown.clone(), |conn| {
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move { session(&worker, &conn, &shutdown).await }
    })
    .await;
}

async fn session(worker: &Arc<Worker>, conn: &Connection, shutdown: &CancellationToken) -> Result<(), SessionError> {
    let topo = &worker.topology;
    let keys: Vec<&str> = worker.modules.keys().map(String::as_str).collect();
    let ch = conn.create_channel().await?;
    declare(&ch, &topo.declarations(&keys)).await?;
    // global = true: one limit for all of this channel's consumers, i.e. the worker's slots.
    ch.basic_qos(worker.config.concurrency, BasicQosOptions { global: true }).await?;
    let publish = conn.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let unconfirmed = conn.create_channel().await?;
    let completer = Completer {
        channel: publish.clone(),
        unconfirmed: unconfirmed.clone(),
        exchange: topo.results_exchange(),
        user_id: renderfleet_platform::broker::password_user(&worker.config.amqp_url),
    };
    let (results, pending) = mpsc::channel::<completer::Pending>(usize::from(worker.config.concurrency).max(1) * 4);
    let result_publisher = tokio::spawn(completer::publish_results(completer.clone(), pending));

    // Control messages on a channel of their own: the task channel's prefetch limit would
    // hold a cancellation back while every slot is busy, which is when it matters.
    let control_ch = conn.create_channel().await?;
    let control_queue = control_ch
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default())
        .await?;
    control_ch
        .queue_bind(
            control_queue.name().clone(),
            topo.control_exchange().as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut control = control_ch
        .basic_consume(
            control_queue.name().clone(),
            format!("{}.control", worker.id).as_str().into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;

    // Module -> consumer tag, for the modules not in quarantine.
    let mut consuming: BTreeMap<String, String> = BTreeMap::new();
    let mut deliveries = select_all(Vec::<Consumer>::new());
    let mut generation = 0u32;
    for key in &keys {
        if !worker.health.is_quarantined(key) {
            deliveries.push(consume(&ch, worker, key, &mut generation, &mut consuming).await?);
        }
    }
    tracing::info!(worker_id = %worker.id, modules = ?consuming.keys().collect::<Vec<_>>(), quarantined = ?worker.health.quarantined().iter().map(|q| &q.module).collect::<Vec<_>>(), concurrency = worker.config.concurrency, "consuming");

    let running: Running = Arc::default();
    let tasks = TaskTracker::new();
    let mut beat = tokio::time::interval(worker.config.heartbeat_interval);
    let ended: Result<(), SessionError> = loop {
        tokio::select! {
            d = deliveries.next(), if !deliveries.is_empty() => match d {
                Some(Ok(d)) => {
                    tasks.spawn(handle(worker.clone(), completer.clone(), results.clone(), running.clone(), d));
                }
                Some(Err(e)) => break Err(e.into()),
                // Every module in quarantine: nothing to consume until one comes back.
                None if consuming.is_empty() => {}
                None => break Err(SessionError::Closed),
            },
            _ = worker.health.changed.notified() => {
                if let Err(e) = reconcile(&ch, worker, &keys, &mut generation, &mut consuming, &mut deliveries).await {
                    break Err(e.into());
                }
                let _ = completer.publish_unconfirmed(heartbeat(worker, &running, WorkerStatus::Running)).await;
            }
            c = control.next() => match c {
                Some(Ok(d)) => on_control(worker, &running, &d.data),
                Some(Err(e)) => break Err(e.into()),
                None => break Err(SessionError::Closed),
            },
            _ = beat.tick() => {
                for module in worker.health.release_expired(now_us()) {
                    tracing::info!(module, "quarantine over (cool-down); taking the module again");
                }
                if let Err(e) = completer.publish_unconfirmed(heartbeat(worker, &running, WorkerStatus::Running)).await {
                    tracing::warn!(error = %e, "heartbeat not sent");
                }
            }
            _ = shutdown.cancelled() => break Ok(()),
        }
    };

    if let Err(e) = ended {
        // The link is gone: the broker requeues everything unacked; stop the work in hand.
        stop_all(&running, StopReason::Requeue);
        tasks.close();
        tasks.wait().await;
        drop(results);
        let _ = result_publisher.await;
        return Err(e);
    }

    // Two-phase shutdown: stop fetching, then wait for the work in hand up to the grace period.
    for tag in consuming.values() {
        let _ = ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
    }
    drop(deliveries);
    let in_hand = running.lock().expect("running map").len();
    tracing::info!(in_hand, grace = ?worker.config.shutdown_grace, "draining");
    tasks.close();
    // Keep heartbeating while draining, or a grace period longer than the coordinator's
    // heartbeat timeout would get the tasks in hand declared lost.
    let grace = tokio::time::sleep(worker.config.shutdown_grace);
    tokio::pin!(grace);
    beat.reset_immediately();
    loop {
        tokio::select! {
            _ = tasks.wait() => break,
            _ = beat.tick() => {
                let _ = completer.publish_unconfirmed(heartbeat(worker, &running, WorkerStatus::Draining)).await;
            }
            _ = &mut grace => {
                let n = stop_all(&running, StopReason::Requeue);
                tracing::warn!(requeued = n, "grace period over; requeueing the tasks still in hand");
                tasks.wait().await;
                break;
            }
        }
    }
    drop(results);
    let _ = result_publisher.await;
    let _ = completer.publish_confirmed(heartbeat(worker, &running, WorkerStatus::Stopped)).await;
    // Closing the channels first keeps lapin from logging their forced close as an error.
    for c in [&ch, &control_ch, &publish, &unconfirmed] {
        let _ = c.close(200, "worker stopped".into()).await;
    }
    Ok(())
}

/// Starts consuming `key`'s queue under a tag of its own (a new one each time: a cancelled
/// tag is not reused while the broker may still be finishing its cancel).
async fn consume(
    ch: &Channel,
    worker: &Worker,
    key: &str,
    generation: &mut u32,
    consuming: &mut BTreeMap<String, String>,
) -> Result<Consumer, lapin::Error> {
    *generation += 1;
    let tag = format!("{}.{key}.{generation}", worker.id);
    let queue = worker.topology.task_queue(key);
    let consumer =
        ch.basic_consume(queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    consuming.insert(key.to_string(), tag);
    Ok(consumer)
}

/// Brings the consumers in line with the quarantine: cancels those of quarantined modules
/// (tasks they already hold are handed back as they come out), resumes released ones.
async fn reconcile(
    ch: &Channel,
    worker: &Worker,
    keys: &[&str],
    generation: &mut u32,
    consuming: &mut BTreeMap<String, String>,
    deliveries: &mut futures_util::stream::SelectAll<Consumer>,
) -> Result<(), lapin::Error> {
    let quarantined = worker.health.quarantined();
    for key in keys {
        match (quarantined.iter().find(|q| q.module == *key), consuming.contains_key(*key)) {
            (Some(q), true) => {
                let tag = consuming.remove(*key).expect("consuming");
                ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await?;
                tracing::error!(
                    module = key,
                    failures = q.failures,
                    last_error = %q.last_error,
                    cool_down = ?worker.config.quarantine.cool_down,
                    "module quarantined: it failed tasks in a row for reasons not about their input; this worker stops taking it until the cool-down ends or an operator releases it (`renderctl workers release`)"
                );
            }
            (None, false) => {
                deliveries.push(consume(ch, worker, key, generation, consuming).await?);
                tracing::info!(module = key, "taking the module again");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Cancels every attempt in hand for `reason`; returns how many.
fn stop_all(running: &Running, reason: StopReason) -> usize {
    let map = running.lock().expect("running map");
    for t in map.values() {
        *t.reason.lock().expect("reason") = reason;
        t.cancel.cancel();
    }
    map.len()
}

fn on_control(worker: &Worker, running: &Running, data: &[u8]) {
    match wire::decode::<ControlMessage>(data) {
        Ok(ControlMessage { body: ControlBody::CancelRun { run_id, withdrawn }, .. }) => {
            worker.withdrawn.add(&withdrawn);
            let map = running.lock().expect("running map");
            for t in map.values().filter(|t| t.run_id == run_id) {
                *t.reason.lock().expect("reason") = StopReason::RunCancelled;
                t.cancel.cancel();
            }
        }
        Ok(ControlMessage { body: ControlBody::Release { worker_id, module }, .. }) if worker_id == worker.id => {
            let released = worker.health.release(module.as_deref());
            tracing::info!(?released, "released from quarantine by an operator");
        }
        Ok(ControlMessage { body: ControlBody::Release { .. }, .. }) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring an undecodable control message"),
    }
}

fn heartbeat(worker: &Worker, running: &Running, status: WorkerStatus) -> ResultBody {
    let running: Vec<TaskRef> =
        running.lock().expect("running map").iter().map(|(id, t)| TaskRef { node_run_id: *id, attempt: t.attempt }).collect();
    ResultBody::Heartbeat(WorkerHeartbeat {
        worker_id: worker.id.clone(),
        host: worker.host.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        // What it takes now: a quarantined module is listed apart, so that the coordinator
        // neither counts its slots nor sends it retries it would only fail.
        modules: worker.modules.keys().filter(|k| !worker.health.is_quarantined(k)).cloned().collect(),
        quarantined: worker.health.quarantined(),
        concurrency: u32::from(worker.config.concurrency),
        running,
        status,
        at_us: now_us(),
        tools: worker.tools.clone(),
        fingerprints: worker.fingerprints.clone(),
    })
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// One delivery: decode, run, report, ack.
async fn handle(worker: Arc<Worker>, completer: Completer, results: mpsc::Sender<completer::Pending>, running: Running, d: Delivery) {
    let task = match wire::decode::<TaskMessage>(&d.data) {
        Ok(t) => t,
        Err(e) => {
            return reject(&worker, &completer, &d, ErrorKind::Unsupported, &format!("undecodable task: {e}"), wire::peek_task_ref(&d.data))
                .await
        }
    };
    let task_ref = TaskRef { node_run_id: task.node_run_id, attempt: task.attempt };
    let Some(module) = worker.modules.get(&task.module_key).cloned() else {
        let reason = format!(
            "task for module `{}` arrived with routing key `{}` (exchange `{}`), and this worker does not serve that module; a task's routing key must be its module, as the coordinator publishes them: find what else publishes there",
            task.module_key, d.routing_key, d.exchange
        );
        return reject(&worker, &completer, &d, ErrorKind::Unsupported, &reason, Some(task_ref)).await;
    };
    let span = tracing::info_span!("task", run_id = %task.run_id, node_id = %task.node_id, attempt = task.attempt);
    if worker.withdrawn.contains(&task_ref) {
        metrics::counter!(m::WORKER_TASKS_TOTAL, "module" => module.key(), "outcome" => "withdrawn").increment(1);
        tracing::info!(parent: &span, "task withdrawn by the run's cancellation; not started");
        let _ = d.acker.ack(Default::default()).await;
        return;
    }
    if d.redelivered {
        return redelivered(&worker, &completer, &d, task_ref).await;
    }
    if worker.health.is_quarantined(module.key()) {
        // Prefetched before the consumer was cancelled: for a healthy worker to take.
        metrics::counter!(m::WORKER_TASKS_TOTAL, "module" => module.key(), "outcome" => "quarantined").increment(1);
        if !send_back(&completer, &d, deliveries(&d), None).await {
            let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
        }
        return;
    }
    let bounced = avoided(&d);
    if task.avoid.contains(&worker.id) && bounced < AVOID_BOUNCES {
        metrics::counter!(m::WORKER_TASKS_TOTAL, "module" => module.key(), "outcome" => "avoided").increment(1);
        tracing::debug!(parent: &span, bounced, "this worker failed the node's previous attempt; handing the retry to another");
        tokio::time::sleep(AVOID_PAUSE).await;
        if !send_back(&completer, &d, deliveries(&d), Some(bounced + 1)).await {
            let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
        }
        return;
    }

    let cancel = CancellationToken::new();
    let reason = Arc::new(Mutex::new(StopReason::Requeue));
    running
        .lock()
        .expect("running map")
        .insert(task.node_run_id, InHand { run_id: task.run_id, attempt: task.attempt, cancel: cancel.clone(), reason: reason.clone() });
    // Listed (and heartbeated) until the task is acked or handed back, not just while it runs:
    // a result waiting for its confirm is still this worker's.
    let _in_hand = InHandGuard { running: running.clone(), node_run_id: task.node_run_id };
    metrics::gauge!(m::WORKER_BUSY_SLOTS).increment(1.0);
    let started_at_us = now_us();
    let clock = Instant::now();
    let run = execute(module.as_ref(), &task, &cancel, || *reason.lock().expect("reason"));
    tokio::pin!(run);
    // Short tasks report only their end (which carries the start time): a start message
    // would cost the coordinator a transaction per task for a state nobody would see.
    let report_start = async {
        tokio::time::sleep(worker.config.report_start_after).await;
        let started = Started { node_run_id: task.node_run_id, attempt: task.attempt, worker_id: worker.id.clone(), at_us: started_at_us };
        if let Err(e) = completer.publish_unconfirmed(ResultBody::Started(started)).await {
            tracing::warn!(parent: &span, error = %e, "start not reported");
        }
    };
    let executed = tokio::select! {
        biased;
        done = &mut run => done,
        _ = report_start => run.await,
    };
    let secs = clock.elapsed().as_secs_f64();

    let (outcome, seen) = match executed {
        Executed::Requeue => {
            metrics::counter!(m::WORKER_TASKS_TOTAL, "module" => module.key(), "outcome" => "requeued").increment(1);
            tracing::info!(parent: &span, "task handed back to the queue");
            // On purpose (shutdown past its grace): not a delivery that killed a worker, so
            // it goes back with its count unchanged rather than as a redelivery.
            if !send_back(&completer, &d, deliveries(&d), None).await {
                let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
            }
            return;
        }
        Executed::Report(o, seen) => (o, seen),
    };
    let label = match &outcome {
        wire::Outcome::Succeeded { .. } => "succeeded",
        wire::Outcome::Failed { error } => error.kind.as_str(),
    };
    metrics::counter!(m::WORKER_TASKS_TOTAL, "module" => module.key(), "outcome" => label).increment(1);
    if worker.health.record(module.key(), &seen, now_us()) {
        metrics::counter!(m::WORKER_QUARANTINES_TOTAL, "module" => module.key()).increment(1);
    }
    metrics::histogram!(m::WORKER_TASK_SECONDS, "module" => module.key()).record(secs);
    let finished = Finished {
        node_run_id: task.node_run_id,
        attempt: task.attempt,
        worker_id: worker.id.clone(),
        started_at_us,
        finished_at_us: now_us(),
        // Stored in the node result cache only under the fingerprint of the build that ran it.
        cache: match (&outcome, &task.cache) {
            (wire::Outcome::Succeeded { .. }, Some(hint)) if worker.fingerprints.get(module.key()) == Some(&hint.fingerprint) => {
                Some(wire::CacheEnd::Store { key: hint.key.clone() })
            }
            _ => None,
        },
        outcome,
    };
    // The result is confirmed by the broker before the task is acked.
    let (reply, confirmed) = oneshot::channel();
    let confirmed = results.send((finished, reply)).await.is_ok() && confirmed.await.unwrap_or(false);
    if confirmed {
        if let Err(e) = d.acker.ack(Default::default()).await {
            tracing::warn!(parent: &span, error = %e, "result sent but ack failed; the task will be redelivered and its result ignored");
        }
        tracing::debug!(parent: &span, outcome = label, secs, "task done");
    } else {
        // Back to the queue: the task runs again; better twice than lost.
        tracing::error!(parent: &span, "result not confirmed; requeueing the task");
        let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
    }
}

/// How many deliveries of this task ended without a result before this copy was sent.
fn deliveries(d: &Delivery) -> u32 {
    count_header(d, renderfleet_shared::topology::DELIVERIES_HEADER)
}

/// How often this task was handed back by workers named in its `avoid`.
fn avoided(d: &Delivery) -> u32 {
    count_header(d, AVOIDED_HEADER)
}

fn count_header(d: &Delivery, name: &str) -> u32 {
    let headers = d.properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// A task the broker delivers again: whoever had it before ended without a result (died,
/// lost its link, or handed it back). Classic queues do not count redeliveries, so the
/// count travels in a header: the task goes back to the end of its queue as a copy that
/// carries it (confirmed before the original is acked), and once it reaches
/// `max_deliveries` the task is poison: its attempt fails rather than kill another worker.
async fn redelivered(worker: &Worker, completer: &Completer, d: &Delivery, task: TaskRef) {
    let n = deliveries(d).saturating_add(1);
    let max = worker.config.max_deliveries;
    if max > 0 && n >= max {
        let reason = format!(
            "the task was delivered {n} times and no worker that took it lived to report a result (each died or lost its broker \
             connection while running it); it is treated as poison so that it takes down no more workers: find what kills them \
             (their logs, the kernel's OOM killer), then retry the run"
        );
        metrics::counter!(m::WORKER_TASKS_TOTAL, "module" => "any", "outcome" => "poison").increment(1);
        return reject(worker, completer, d, ErrorKind::Poison, &reason, Some(task)).await;
    }
    if send_back(completer, d, n, None).await {
        tracing::info!(node_run_id = %task.node_run_id, attempt = task.attempt, deliveries = n, "redelivered task sent back with its count");
    } else {
        tracing::warn!("could not send a redelivered task back with its count; the broker keeps the original");
        let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
    }
}

/// Puts a copy of task `d` at the end of its queue with delivery count `n` (and, when given,
/// its `avoid` bounce count), and acks the original once the broker has confirmed the copy
/// (routed: `mandatory`). False when the copy was not taken; the caller then hands the
/// original back.
async fn send_back(completer: &Completer, d: &Delivery, n: u32, bounced: Option<u32>) -> bool {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(renderfleet_shared::topology::DELIVERIES_HEADER.into(), AMQPValue::LongUInt(n));
    if let Some(b) = bounced {
        headers.insert(AVOIDED_HEADER.into(), AMQPValue::LongUInt(b));
    }
    let props = d.properties.clone().with_headers(headers);
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let sent = async {
        completer.channel.basic_publish(d.exchange.as_str().into(), d.routing_key.as_str().into(), options, &d.data, props).await?.await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(30), sent).await {
        Ok(Ok(lapin::Confirmation::Ack(None))) => d.acker.ack(Default::default()).await.is_ok(),
        _ => false,
    }
}

/// A task this worker cannot run (`Unsupported`) or must not (`Poison`): fail its attempt
/// (when the message names one), so the node does not wait forever, then keep the message
/// in the dead-letter queue.
async fn reject(worker: &Worker, completer: &Completer, d: &Delivery, kind: ErrorKind, reason: &str, task: Option<TaskRef>) {
    if let Some(task) = task {
        let finished = Finished {
            cache: None,
            node_run_id: task.node_run_id,
            attempt: task.attempt,
            worker_id: worker.id.clone(),
            started_at_us: 0,
            finished_at_us: now_us(),
            outcome: wire::Outcome::Failed {
                error: TaskError {
                    kind,
                    message: match kind {
                        ErrorKind::Unsupported => {
                            format!("worker `{}` (version {}) cannot run this task: {reason}", worker.id, env!("CARGO_PKG_VERSION"))
                        }
                        _ => reason.to_string(),
                    },
                    retryable: false,
                    log_tail: None,
                },
            },
        };
        if let Err(e) = completer.publish_confirmed(ResultBody::Finished(finished)).await {
            tracing::error!(error = %e, reason, "could not report an unrunnable task; requeueing it");
            let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
            return;
        }
    }
    if let Err(e) = dead_letter(&completer.channel, &worker.topology.dead_exchange(), d, reason, "worker").await {
        tracing::error!(error = %e, reason, "could not dead-letter a message; requeueing it");
        let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
    }
}

/// Modules keyed for lookups; re-exported for `lib.rs`.
pub(crate) type Modules = std::collections::BTreeMap<String, Arc<dyn Module>>;
