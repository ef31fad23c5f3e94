//! The transactional outbox: tasks are written in the same transaction as the state change
//! that made a node ready ([`enqueue`]) and published afterwards with publisher confirms.
//!
//! Two paths publish. The hot path: the transaction that queued a task leases its outbox row
//! to this coordinator ([`LEASE`]) and hands the task to [`publish_loop`] right after the
//! commit, so a hop costs no extra claiming transaction. The safety net: due rows that are
//! unleased (or whose lease ran out because their coordinator died) are claimed with
//! `FOR UPDATE SKIP LOCKED` and published. A crash between commit and publish loses
//! nothing; a crash between publish and mark re-publishes, which the result consumer's
//! idempotency makes harmless.

pub mod cache;
pub mod schedule;

use crate::db::{sql, DbError};
use deadpool_postgres::{GenericClient, Pool, Transaction};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use renderfleet_shared::config::OutboxConfig;
use renderfleet_shared::config::SchedulingConfig;
use renderfleet_shared::metrics as m;
use renderfleet_shared::registry::registry;
use renderfleet_shared::topology::Topology;
use renderfleet_shared::wire::{self, ResultBody, ResultMessage, TaskMessage, CONTENT_TYPE, WIRE_VERSION};
use schedule::Scheduler;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a row queued for the hot path is kept from the other publishers.
pub const LEASE: Duration = Duration::from_secs(5);
/// Longest wait for publisher confirms while rows are held.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// A row the broker refused is tried again after this long, without holding back the others.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// A task whose outbox row is written.
#[derive(Debug, Clone)]
pub struct Ready {
    pub outbox_id: i64,
    pub task: TaskMessage,
}

/// Leased tasks in hand-off, and until when this coordinator may still publish them: past
/// that, the lease may have run out and the safety net may already have sent them.
struct Handoff {
    ready: Vec<Ready>,
    usable_until: tokio::time::Instant,
}

/// Part of the lease kept back for clock and hand-off slack.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// Where the publisher sends: tasks to the tasks exchange; results served from the cache to
/// the results exchange, under the coordinator's own broker user (so `results.verify_sender`
/// can tell them from a worker's).
#[derive(Debug, Clone)]
pub struct Route {
    pub tasks: String,
    pub results: String,
    pub user_id: Option<String>,
    /// `None`: the cache is off (`cache.enabled`, or no `artifacts_dir` to check hits in).
    pub cache: Option<cache::Cache>,
    pub scheduling: SchedulingConfig,
    pub topo: Topology,
    /// A worker heartbeating within this long is live (its slots count for the windows).
    pub live_for: Duration,
}

/// Tasks handed from a committed transaction to this coordinator's publisher.
#[derive(Clone)]
pub struct Hot {
    tx: mpsc::Sender<Handoff>,
    rx: Arc<Mutex<mpsc::Receiver<Handoff>>>,
    /// Wakes the safety-net publisher (a retry with a delay, or a hand-off that failed).
    pub kick: Arc<Notify>,
    /// Whether the scheduler holds tasks back for a full queue: a result then frees room, so
    /// the result consumer kicks the publisher.
    pub held: Arc<AtomicBool>,
}

impl Default for Hot {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(4096);
        Self { tx, rx: Arc::new(Mutex::new(rx)), kick: Arc::new(Notify::new()), held: Default::default() }
    }
}

impl Hot {
    /// Wakes the publisher if it holds tasks for room, which a finished task has just made.
    pub fn room_made(&self) {
        if self.held.load(Ordering::Relaxed) {
            self.kick.notify_one();
        }
    }

    /// Hands `ready` to the publisher. Never waits: if the publisher is gone (broker down)
    /// or swamped, the rows' leases run out and the safety net publishes them.
    pub fn send(&self, ready: Vec<Ready>) {
        if ready.is_empty() {
            return;
        }
        let usable_until = tokio::time::Instant::now() + LEASE - LEASE_MARGIN;
        if self.tx.try_send(Handoff { ready, usable_until }).is_err() {
            tracing::debug!("publisher busy or down; leased tasks go out when their lease ends");
            self.kick.notify_one();
        }
    }
}

/// The task message in `row`, whose columns from `first` on are node_run id, run id, node id,
/// module key, params, attempt and timeout_ms (every query that yields tasks keeps this order).
pub fn task_at(row: &tokio_postgres::Row, first: usize) -> TaskMessage {
    TaskMessage {
        avoid: Vec::new(),
        v: WIRE_VERSION,
        node_run_id: row.get(first),
        run_id: row.get(first + 1),
        node_id: row.get(first + 2),
        module_key: row.get(first + 3),
        params: row.get(first + 4),
        attempt: row.get::<_, i32>(first + 5) as u32,
        timeout_ms: row.get::<_, i64>(first + 6) as u64,
        inputs: Default::default(),
        cache: None,
    }
}

/// Fills in the inputs of the tasks whose modules take any (see
/// [`Registry::takes_inputs`](renderfleet_shared::registry::Registry::takes_inputs)): one
/// query for all of them, none at all for a batch of test tasks. Upstream outputs are
/// final once committed, so resolving at publish time is the same as at release time.
pub async fn attach_inputs(client: &impl GenericClient, ready: &mut [Ready]) -> Result<(), DbError> {
    let ids: Vec<Uuid> = ready.iter().filter(|r| registry().takes_inputs(&r.task.module_key)).map(|r| r.task.node_run_id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let stmt = client.prepare_cached(sql::RESOLVE_INPUTS).await?;
    let rows = client.query(&stmt, &[&ids]).await?;
    let mut found: HashMap<Uuid, serde_json::Value> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for r in ready.iter_mut() {
        if let Some(serde_json::Value::Object(inputs)) = found.remove(&r.task.node_run_id) {
            r.task.inputs = inputs;
        }
    }
    Ok(())
}

/// Writes tasks to the outbox inside `tx`; `delay` holds them back (retry backoff); with
/// `lease`, the caller publishes them itself after the commit (see [`Hot::send`]).
pub async fn enqueue(
    tx: &Transaction<'_>,
    tasks: Vec<TaskMessage>,
    delay: Duration,
    lease: Option<Duration>,
) -> Result<Vec<Ready>, DbError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.node_run_id).collect();
    let attempts: Vec<i32> = tasks.iter().map(|t| t.attempt as i32).collect();
    let keys: Vec<&str> = tasks.iter().map(|t| t.module_key.as_str()).collect();
    let delays: Vec<f64> = vec![delay.as_secs_f64(); tasks.len()];
    let lease = lease.map(|l| l.as_secs_f64()).unwrap_or(0.0);
    let stmt = tx.prepare_cached(sql::ENQUEUE).await?;
    let rows = tx.query(&stmt, &[&ids, &attempts, &keys, &delays, &lease]).await?;
    let written: HashMap<Uuid, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    Ok(tasks.into_iter().filter_map(|task| written.get(&task.node_run_id).map(|&outbox_id| Ready { outbox_id, task })).collect())
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

/// Publishes until `cancel`: hot tasks as they come, due rows when kicked, at the next
/// `not_before` or lease end, or every `idle_poll` at the latest. Returns on a broker error
/// so the supervisor can reconnect; database errors are retried here.
pub async fn publish_loop(
    pool: Pool,
    channel: Channel,
    route: Route,
    hot: Hot,
    cfg: OutboxConfig,
    cancel: CancellationToken,
) -> Result<(), PublishError> {
    let mut rx = hot.rx.lock().await;
    let mut marks = Marks::default();
    let mut sched = Scheduler::new(route.scheduling.clone(), route.topo.clone(), route.live_for, hot.held.clone());
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let wait = match publish_due(&pool, &channel, &route, &mut sched, cfg.batch_size).await {
            Ok(n) if n as i64 >= cfg.batch_size => continue,
            // Held tasks: look at the queues again soon (a result here kicks sooner).
            Ok(_) if sched.holding() => sched.poll(),
            // At least a short pause: rows another coordinator holds locked look overdue.
            Ok(_) => next_due(&pool).await.unwrap_or(cfg.idle_poll).min(cfg.idle_poll).max(Duration::from_millis(20)),
            Err(PublishError::Db(e)) => {
                tracing::warn!(error = %e, "outbox: database error; retrying");
                Duration::from_millis(500)
            }
            Err(e) => return Err(e),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let flush_at = marks.flush_at();
            tokio::select! {
                Some(first) = rx.recv() => {
                    // Hand-offs whose lease may have ended are left to the safety net, which
                    // may already have sent them (a backlog, or a broker outage in between).
                    let now = tokio::time::Instant::now();
                    let mut ready = Vec::new();
                    for h in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                        if h.usable_until > now {
                            ready.extend(h.ready);
                        }
                    }
                    let (ready, hits) = match prepare(&pool, &route, ready).await {
                        Ok(split) => split,
                        Err(e) => {
                            // Left to the safety net, which resolves them again when the lease ends.
                            tracing::warn!(error = %e, "outbox: task inputs or cache entries could not be read; the tasks go out when their lease ends");
                            continue;
                        }
                    };
                    let (ready, released) = match hold_back(&pool, &channel, &mut sched, ready).await {
                        Ok(split) => split,
                        Err(PublishError::Db(e)) => {
                            tracing::warn!(error = %e, "outbox: the scheduler could not read the fleet; the tasks go out when their lease ends");
                            continue;
                        }
                        Err(e) => {
                            marks.flush(&pool).await;
                            return Err(e);
                        }
                    };
                    let (sent, refused) = match publish(&channel, &route, &ready, &hits).await {
                        Ok(done) => done,
                        Err(e) => {
                            marks.flush(&pool).await;
                            return Err(e);
                        }
                    };
                    count_sent(&mut sched, &ready, &refused);
                    metrics::counter!(m::OUTBOX_PUBLISHED_TOTAL).increment(sent.len() as u64);
                    marks.add(sent, refused);
                    if marks.full() {
                        marks.flush(&pool).await;
                    }
                    if released {
                        // Left to the scheduler: its pass takes them in order now.
                        break;
                    }
                }
                _ = tokio::time::sleep_until(flush_at), if !marks.is_empty() => marks.flush(&pool).await,
                _ = hot.kick.notified() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = cancel.cancelled() => {
                    marks.flush(&pool).await;
                    return Ok(());
                }
            }
        }
        marks.flush(&pool).await;
    }
}

/// Hot-path rows published but not yet marked sent. Marking is bookkeeping, batched off
/// the hop's critical path: if it is lost, the lease runs out and the rows go out again,
/// which the result consumer ignores.
#[derive(Default)]
struct Marks {
    sent: Vec<i64>,
    refused: Vec<i64>,
    since: Option<tokio::time::Instant>,
}

/// Longest a published hot row waits to be marked sent (well inside [`LEASE`]).
const MARK_EVERY: Duration = Duration::from_millis(20);
const MARK_BATCH: usize = 2000;

impl Marks {
    fn add(&mut self, sent: Vec<i64>, refused: Vec<i64>) {
        self.since.get_or_insert_with(tokio::time::Instant::now);
        self.sent.extend(sent);
        self.refused.extend(refused);
    }

    fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    fn full(&self) -> bool {
        self.sent.len() >= MARK_BATCH
    }

    fn flush_at(&self) -> tokio::time::Instant {
        self.since.map(|t| t + MARK_EVERY).unwrap_or_else(|| tokio::time::Instant::now() + LEASE)
    }

    async fn flush(&mut self, pool: &Pool) {
        if self.is_empty() {
            return;
        }
        let (sent, refused) = (std::mem::take(&mut self.sent), std::mem::take(&mut self.refused));
        self.since = None;
        let marked = async {
            let client = pool.get().await?;
            client.execute(sql::MARK_SENT_LAZY, &[&sent]).await?;
            if !refused.is_empty() {
                client.execute(sql::DEFER, &[&refused, &REFUSED_RETRY.as_secs_f64()]).await?;
            }
            Ok::<_, PublishError>(())
        };
        if let Err(e) = marked.await {
            tracing::warn!(error = %e, rows = sent.len(), "published tasks could not be marked sent; they go out again when their lease ends");
        }
    }
}

/// Names, in each retried task, the workers that failed its earlier attempts, while another
/// worker of its module is live ([`sql::AVOID`]): a black-hole host must not eat every retry.
/// One query for the retries among `ready`, none for first attempts.
pub async fn attach_avoid(client: &impl GenericClient, route: &Route, ready: &mut [Ready]) -> Result<(), DbError> {
    let retried: Vec<&Ready> = ready.iter().filter(|r| r.task.attempt > 1).collect();
    if retried.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = retried.iter().map(|r| r.task.node_run_id).collect();
    let attempts: Vec<i32> = retried.iter().map(|r| r.task.attempt as i32).collect();
    let stmt = client.prepare_cached(sql::AVOID).await?;
    let rows = client.query(&stmt, &[&ids, &attempts, &route.live_for.as_secs_f64()]).await?;
    let mut found: HashMap<Uuid, Vec<String>> = rows.iter().map(|r| (r.get("node_run_id"), r.get("avoid"))).collect();
    for r in ready.iter_mut() {
        if let Some(avoid) = found.remove(&r.task.node_run_id) {
            r.task.avoid = avoid;
        }
    }
    Ok(())
}

/// [`attach_inputs`], [`attach_avoid`] and the [`cache`] lookup on a pooled connection, only
/// taken when a task needs one of them.
async fn prepare(pool: &Pool, route: &Route, mut ready: Vec<Ready>) -> Result<(Vec<Ready>, Vec<cache::Hit>), DbError> {
    let r = registry();
    if !ready.iter().any(|t| r.takes_inputs(&t.task.module_key) || r.cache_type(&t.task.module_key).is_some() || t.task.attempt > 1) {
        return Ok((ready, Vec::new()));
    }
    let client = pool.get().await?;
    attach_inputs(&client, &mut ready).await?;
    attach_avoid(&client, route, &mut ready).await?;
    match &route.cache {
        Some(c) => cache::lookup(&client, c, ready).await,
        None => Ok((ready, Vec::new())),
    }
}

async fn next_due(pool: &Pool) -> Option<Duration> {
    let client = pool.get().await.ok()?;
    let row = client.query_one(sql::NEXT_DUE, &[]).await.ok()?;
    let secs: Option<f64> = row.get(0);
    secs.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The hot path's tasks that may go now (see [`Scheduler::split_hot`]); the others' leases
/// are given up, so they wait in the outbox for the scheduler.
async fn hold_back(pool: &Pool, channel: &Channel, sched: &mut Scheduler, ready: Vec<Ready>) -> Result<(Vec<Ready>, bool), PublishError> {
    if !sched.enabled() || ready.is_empty() {
        return Ok((ready, false));
    }
    let mut needed: HashMap<&str, u32> = HashMap::new();
    for r in &ready {
        *needed.entry(r.task.module_key.as_str()).or_default() += 1;
    }
    let modules: Vec<&str> = needed.keys().copied().collect();
    let room = sched.room(pool, channel, &modules, Some(&needed)).await?;
    let (send, release) = sched.split_hot(ready, &room);
    if !release.is_empty() {
        // If this is lost, the lease runs out a little later and the rows wait all the same.
        let released = async { pool.get().await?.execute(sql::RELEASE, &[&release]).await.map_err(DbError::from) };
        if let Err(e) = released.await {
            tracing::warn!(error = %e, "outbox: held tasks keep their lease until it ends");
        }
    }
    Ok((send, !release.is_empty()))
}

/// Counts the tasks the broker took against their queues' windows.
fn count_sent(sched: &mut Scheduler, ready: &[Ready], refused: &[i64]) {
    let refused: HashSet<i64> = refused.iter().copied().collect();
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for r in ready.iter().filter(|r| !refused.contains(&r.outbox_id)) {
        *per.entry(r.task.module_key.as_str()).or_default() += 1;
    }
    for (module, n) in per {
        sched.sent(module, n);
    }
}

/// Claims, publishes and marks one batch of due rows; returns how many were published.
/// With scheduling on, each module gets at most the room in its queue, in priority and
/// fair-queueing order.
async fn publish_due(pool: &Pool, channel: &Channel, route: &Route, sched: &mut Scheduler, limit: i64) -> Result<usize, PublishError> {
    if !sched.enabled() {
        return publish_due_fifo(pool, channel, route, limit).await;
    }
    sched.passing();
    sched.refresh_gauge(pool).await?;
    let modules = sched.modules();
    let waiting: Vec<String> = {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(sql::MODULES_WAITING).await?;
        client.query(&stmt, &[&modules]).await?.iter().map(|r| r.get(0)).collect()
    };
    sched.drained(&waiting);
    if waiting.is_empty() {
        metrics::gauge!(m::OUTBOX_LAG_SECONDS).set(0.0);
        return Ok(0);
    }
    let names: Vec<&str> = waiting.iter().map(String::as_str).collect();
    let room = sched.room(pool, channel, &names, None).await?;
    let (mut asked, mut quotas) = (Vec::new(), Vec::new());
    for m in &waiting {
        let quota = room.get(m).copied().unwrap_or(0).min(limit.clamp(0, i32::MAX as i64) as u32);
        if quota == 0 {
            sched.set_held(m, true);
        } else {
            asked.push(m.clone());
            quotas.push(quota as i32);
        }
    }
    if asked.is_empty() {
        return Ok(0);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut limits = sched.limits(&tx, &asked).await?;
    let claim = tx.prepare_cached(sql::CLAIM_SCHEDULED).await?;
    let rows = tx.query(&claim, &[&asked, &quotas, &limits.refused_modules, &limits.refused]).await?;
    // Lag is the publisher falling behind: only rows whose queue had room before this pass.
    let lag = rows.iter().filter(|r| !sched.is_held(r.get("routing_key"))).map(|r| r.get::<_, f64>("lag")).fold(0.0, f64::max);
    metrics::gauge!(m::OUTBOX_LAG_SECONDS).set(lag);
    let mut claimed: HashMap<String, i32> = HashMap::new();
    let mut ready = Vec::with_capacity(rows.len());
    for r in &rows {
        let module: String = r.get("routing_key");
        *claimed.entry(module.clone()).or_default() += 1;
        if limits.take(sched.config(), &module, r.get("submitter")) {
            ready.push(Ready { outbox_id: r.get("id"), task: task_at(r, 1) });
        }
    }
    tracing::debug!(?asked, ?quotas, refused = ?limits.refused, claimed = rows.len(), sending = ready.len(), "scheduler pass");
    for (m, quota) in asked.iter().zip(&quotas) {
        // A full quota: more may be waiting behind it.
        sched.set_held(m, claimed.get(m).copied().unwrap_or(0) >= *quota);
    }
    let published = publish_claimed(&tx, channel, route, ready).await?;
    tx.commit().await?;
    count_sent(sched, &published.0, &published.1);
    metrics::counter!(m::OUTBOX_PUBLISHED_TOTAL).increment(published.2 as u64);
    Ok(published.2)
}

/// [`publish_due`] with scheduling off: due rows in the order they became due.
async fn publish_due_fifo(pool: &Pool, channel: &Channel, route: &Route, limit: i64) -> Result<usize, PublishError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let claim = tx.prepare_cached(sql::CLAIM_DUE).await?;
    let rows = tx.query(&claim, &[&limit]).await?;
    if rows.is_empty() {
        metrics::gauge!(m::OUTBOX_LAG_SECONDS).set(0.0);
        return Ok(0);
    }
    let lag: f64 = rows.iter().map(|r| r.get::<_, f64>(8)).fold(0.0, f64::max);
    metrics::gauge!(m::OUTBOX_LAG_SECONDS).set(lag);
    let ready: Vec<Ready> = rows.iter().map(|r| Ready { outbox_id: r.get(0), task: task_at(r, 1) }).collect();
    let (_, _, sent) = publish_claimed(&tx, channel, route, ready).await?;
    tx.commit().await?;
    metrics::counter!(m::OUTBOX_PUBLISHED_TOTAL).increment(sent as u64);
    Ok(sent)
}

/// Publishes claimed rows inside their claiming transaction and marks them (sent, or
/// deferred when refused). Returns the tasks published, the refused rows and how many went.
async fn publish_claimed(
    tx: &Transaction<'_>,
    channel: &Channel,
    route: &Route,
    mut ready: Vec<Ready>,
) -> Result<(Vec<Ready>, Vec<i64>, usize), PublishError> {
    attach_inputs(tx, &mut ready).await?;
    attach_avoid(tx, route, &mut ready).await?;
    let (ready, hits) = match &route.cache {
        Some(c) => cache::lookup(tx, c, ready).await?,
        None => (ready, Vec::new()),
    };
    let (sent, refused) = publish(channel, route, &ready, &hits).await?;
    let mark = tx.prepare_cached(sql::MARK_SENT).await?;
    tx.execute(&mark, &[&sent]).await?;
    if !refused.is_empty() {
        tx.execute(sql::DEFER, &[&refused, &REFUSED_RETRY.as_secs_f64()]).await?;
    }
    Ok((ready, refused, sent.len()))
}

/// Publishes tasks (persistent, mandatory) and the results of cache hits, and waits for every
/// confirm. Returns the outbox ids the broker took and those it refused (nack, or
/// unroutable: no queue for the module).
async fn publish(channel: &Channel, route: &Route, ready: &[Ready], hits: &[cache::Hit]) -> Result<(Vec<i64>, Vec<i64>), PublishError> {
    // Issued together rather than one after another: each publish waits on lapin's I/O
    // loop, and a fan-out of thousands of tasks would otherwise pay that wait thousands of
    // times. Order does not matter; every task is its own message.
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let persistent = || BasicProperties::default().with_delivery_mode(2).with_content_type(CONTENT_TYPE.into());
    let tasks = ready.iter().map(|r| {
        let payload = wire::encode(&r.task);
        let props = persistent().with_message_id(r.task.message_id().into());
        async move { channel.basic_publish(route.tasks.as_str().into(), r.task.module_key.as_str().into(), options, &payload, props).await }
    });
    let results = hits.iter().map(|h| {
        let payload = wire::encode(&ResultMessage { v: WIRE_VERSION, body: ResultBody::Finished(h.finished.clone()) });
        let mut props = persistent();
        if let Some(user) = &route.user_id {
            props = props.with_user_id(user.as_str().into());
        }
        async move { channel.basic_publish(route.results.as_str().into(), "".into(), options, &payload, props).await }
    });
    let (tasks, results) = futures_util::future::join(futures_util::future::join_all(tasks), futures_util::future::join_all(results)).await;
    let pending: Vec<_> = tasks.into_iter().chain(results).collect::<Result<_, _>>()?;
    let count = pending.len();
    let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, futures_util::future::join_all(pending))
        .await
        .map_err(|_| PublishError::ConfirmTimeout { count })?;
    let mut sent = Vec::with_capacity(count);
    let mut refused = Vec::new();
    let what = ready.iter().map(|r| (r.outbox_id, Some(&r.task))).chain(hits.iter().map(|h| (h.outbox_id, None)));
    for ((outbox_id, task), confirmation) in what.zip(confirmed) {
        match (confirmation?, task) {
            (Confirmation::Ack(None) | Confirmation::NotRequested, Some(task)) => {
                metrics::counter!(m::NODE_TASKS_TOTAL, "module" => task.module_key.clone(), "status" => "dispatched").increment(1);
                sent.push(outbox_id);
            }
            (Confirmation::Ack(None) | Confirmation::NotRequested, None) => sent.push(outbox_id),
            (Confirmation::Ack(Some(_)), Some(task)) => {
                let module = &task.module_key;
                tracing::error!(message_id = %task.message_id(), %module, "task unroutable: no queue is bound for module `{module}`; retrying in {REFUSED_RETRY:?}");
                refused.push(outbox_id);
            }
            (Confirmation::Ack(Some(_)), None) => {
                tracing::error!(exchange = %route.results, "a cached result was unroutable: no results queue is bound; retrying in {REFUSED_RETRY:?}");
                refused.push(outbox_id);
            }
            (Confirmation::Nack(_), _) => {
                tracing::error!(outbox_id, "the broker refused a message (nack); retrying in {REFUSED_RETRY:?}");
                refused.push(outbox_id);
            }
        }
    }
    Ok((sent, refused))
}
