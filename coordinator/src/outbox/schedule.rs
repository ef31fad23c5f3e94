//! What the publisher may send now. Each module's broker queue holds at most its window of
//! waiting tasks (`shared::scheduling::window`: one per live worker slot, more for workers
//! that take tasks faster than the publisher refills the queue); every other
//! ready task waits in the outbox, where the next to go is chosen by priority and then by its
//! fair-queueing tag (migration V11). A queue that deep lets a rush task, or another
//! submitter's single task, start about one task duration after it is ready, behind any
//! backlog; a FIFO broker queue of 10,000 would make it wait for all of them.
//!
//! Why not RabbitMQ's priority queues: they are a classic-queue argument (quorum queues
//! have two levels only, from RabbitMQ 4.0), an existing queue cannot take the argument
//! without being deleted, and they give no fair share. Ordering in the outbox works for any
//! queue type and does both.
//!
//! The window is counted from the broker's own figure (a passive declare: the messages ready
//! in the queue, not those a worker holds), at most `poll` old, plus what this coordinator
//! sent since. Several coordinators may each fill the same window: a queue is then at most
//! that many windows deep.

use super::{PublishError, Ready};
use crate::db::{sql, DbError};
use deadpool_postgres::{GenericClient, Pool};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Channel;
use renderfleet_shared::config::SchedulingConfig;
use renderfleet_shared::metrics as m;
use renderfleet_shared::registry::registry;
use renderfleet_shared::scheduling::{average, window, Uptake};
use renderfleet_shared::topology::Topology;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often live worker slots are read: a worker that joins opens its queues' windows
/// this soon.
const SLOTS_EVERY: Duration = Duration::from_millis(250);
/// The shortest span a take rate is measured over.
const RATE_SPAN: Duration = Duration::from_millis(250);
/// How often the held tasks are counted for their gauge (a count over the waiting rows).
const GAUGE_EVERY: Duration = Duration::from_secs(2);

/// A queue's depth as last seen.
struct Depth {
    ready: u32,
    at: Instant,
    /// Sent since `at`.
    sent: u32,
}

/// The scheduler's view of the queues. Owned by the publish loop.
pub struct Scheduler {
    cfg: SchedulingConfig,
    topo: Topology,
    live_for: Duration,
    slots: HashMap<String, u32>,
    slots_at: Option<Instant>,
    gauge_at: Option<Instant>,
    depth: HashMap<String, Depth>,
    /// Modules whose ready tasks wait in the outbox for room: new ones join them there.
    held: HashSet<String>,
    /// Routing keys of waiting rows that name no module of the registry (a module since
    /// removed): they are published unlimited, and refused by the broker as unroutable.
    strays: HashSet<String>,
    /// How fast each module's workers take tasks while some are held.
    uptake: HashMap<String, Uptake>,
    /// Tasks taken from each held module's queue since when, towards its next rate.
    taken: HashMap<String, (Instant, u32)>,
    /// Seconds from one pass to the next while tasks are held (moving average).
    refill: f64,
    last_pass: Option<Instant>,
    /// Whether any module is held, for the result consumer (a result frees room: kick).
    any_held: Arc<AtomicBool>,
}

/// Room per module, for one pass.
pub type Room = HashMap<String, u32>;

impl Scheduler {
    pub fn new(cfg: SchedulingConfig, topo: Topology, live_for: Duration, any_held: Arc<AtomicBool>) -> Self {
        Self {
            cfg,
            topo,
            live_for,
            slots: HashMap::new(),
            slots_at: None,
            gauge_at: None,
            depth: HashMap::new(),
            held: HashSet::new(),
            strays: HashSet::new(),
            uptake: HashMap::new(),
            taken: HashMap::new(),
            refill: 0.0,
            last_pass: None,
            any_held,
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    pub fn config(&self) -> &SchedulingConfig {
        &self.cfg
    }

    /// Whether tasks wait in the outbox for room (the loop then looks again every `poll`).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    pub fn poll(&self) -> Duration {
        self.cfg.poll
    }

    /// The modules the publisher looks for waiting rows of.
    pub fn modules(&self) -> Vec<String> {
        registry().module_keys().into_iter().map(String::from).chain(self.strays.iter().cloned()).collect()
    }

    /// No rows wait for the modules outside `waiting`: they are not held any more.
    pub fn drained(&mut self, waiting: &[String]) {
        let gone: Vec<String> = self.held.iter().filter(|m| !waiting.contains(m)).cloned().collect();
        for m in gone {
            self.set_held(&m, false);
        }
    }

    /// Whether `module` had tasks held back before this pass.
    pub fn is_held(&self, module: &str) -> bool {
        self.held.contains(module)
    }

    pub fn set_held(&mut self, module: &str, held: bool) {
        if held {
            self.held.insert(module.to_string());
        } else {
            self.held.remove(module);
        }
        self.any_held.store(!self.held.is_empty(), Ordering::Relaxed);
    }

    /// Live slots per module, read at most every [`SLOTS_EVERY`].
    async fn refresh_slots(&mut self, pool: &Pool) -> Result<(), DbError> {
        if self.slots_at.is_some_and(|at| at.elapsed() < SLOTS_EVERY) {
            return Ok(());
        }
        let client = pool.get().await?;
        let rows = client.query(sql::LIVE_SLOTS, &[&self.live_for.as_secs_f64()]).await?;
        self.slots = rows.iter().map(|r| (r.get("module"), r.get::<_, i64>("slots").clamp(0, u32::MAX as i64) as u32)).collect();
        self.slots_at = Some(Instant::now());
        Ok(())
    }

    /// The held-tasks gauge and the routing keys of no module, every [`GAUGE_EVERY`] (a
    /// count over the waiting rows: on scheduler passes, never on a hop).
    pub async fn refresh_gauge(&mut self, pool: &Pool) -> Result<(), DbError> {
        if self.gauge_at.is_some_and(|at| at.elapsed() < GAUGE_EVERY) {
            return Ok(());
        }
        let client = pool.get().await?;
        self.gauge_at = Some(Instant::now());
        let waiting = client.query(sql::OUTBOX_WAITING, &[]).await?;
        let waiting: HashMap<String, i64> = waiting.iter().map(|r| (r.get("routing_key"), r.get("tasks"))).collect();
        let known: HashSet<&str> = registry().module_keys().into_iter().collect();
        self.strays = waiting.keys().filter(|k| !known.contains(k.as_str())).cloned().collect();
        for module in known {
            let held = if self.is_held(module) { waiting.get(module).copied().unwrap_or(0) } else { 0 };
            metrics::gauge!(m::OUTBOX_HELD_TASKS, "module" => module.to_string()).set(held as f64);
        }
        Ok(())
    }

    /// The window of `module` now.
    pub fn window(&self, module: &str) -> u32 {
        let cover = self.uptake.get(module).map(|u| u.cover(self.refill)).unwrap_or(0);
        window(self.slots.get(module).copied().unwrap_or(0), self.cfg.queue_per_slot, self.cfg.queue_min, cover)
    }

    /// A publisher pass started. While tasks are held, the time from one pass to the next is
    /// how long a queue waits to be refilled (the results that free room, the kick, the pass).
    pub fn passing(&mut self) {
        let now = Instant::now();
        if let Some(before) = self.last_pass.filter(|_| self.holding()) {
            let period = now.duration_since(before).as_secs_f64();
            if period < 1.0 {
                self.refill = average(self.refill, period);
            }
        }
        self.last_pass = Some(now);
    }

    /// How many more tasks each of `modules` may send now. Depths older than `max_age` are
    /// asked of the broker (together); a module outside the registry has no queue to ask
    /// about, so it is not limited (the broker refuses its tasks as unroutable).
    ///
    /// `needed` is how many each module would send: a depth whose estimate (the broker's
    /// figure plus what was sent since, an over-count, since workers take tasks meanwhile)
    /// leaves that much room is not asked again, so a hop on the hot path rarely waits for
    /// the broker. `None`: ask for every module (a scheduler pass).
    pub async fn room(
        &mut self,
        pool: &Pool,
        channel: &Channel,
        modules: &[&str],
        needed: Option<&HashMap<&str, u32>>,
    ) -> Result<Room, PublishError> {
        if !self.enabled() {
            return Ok(modules.iter().map(|m| (m.to_string(), u32::MAX)).collect());
        }
        self.refresh_slots(pool).await?;
        let known: HashSet<&str> = registry().module_keys().into_iter().collect();
        let fits = |m: &str, d: &Depth| match needed {
            Some(n) => self.window(m).saturating_sub(d.ready.saturating_add(d.sent)) >= n.get(m).copied().unwrap_or(1),
            None => false,
        };
        let stale: Vec<&str> =
            modules.iter().copied().filter(|m| known.contains(m) && !self.depth.get(*m).is_some_and(|d| fits(m, d))).collect();
        let asked = stale.iter().map(|m| {
            let queue = self.topo.task_queue(m);
            async move {
                let opts = QueueDeclareOptions { passive: true, ..Default::default() };
                channel.queue_declare(queue.as_str().into(), opts, FieldTable::default()).await
            }
        });
        let answers = futures_util::future::join_all(asked).await;
        let now = Instant::now();
        for (m, answer) in stale.iter().zip(answers) {
            let ready = answer?.message_count();
            if let Some(before) = self.depth.get(*m).filter(|_| self.held.contains(*m)) {
                // Counted over at least RATE_SPAN: a slot takes its task at once, so a rate
                // over a few milliseconds would be that burst, not what the workers keep up.
                let taken = (before.ready + before.sent).saturating_sub(ready);
                let span = self.taken.entry(m.to_string()).or_insert((before.at, 0));
                span.1 += taken;
                let secs = now.duration_since(span.0).as_secs_f64();
                if secs >= RATE_SPAN.as_secs_f64() {
                    self.uptake.entry(m.to_string()).or_default().observe(span.1, secs);
                    *span = (now, 0);
                }
            } else {
                self.taken.remove(*m);
            }
            self.depth.insert(m.to_string(), Depth { ready, at: now, sent: 0 });
        }
        Ok(modules
            .iter()
            .map(|m| {
                let room = match self.depth.get(*m) {
                    Some(d) if known.contains(m) => self.window(m).saturating_sub(d.ready.saturating_add(d.sent)),
                    _ => u32::MAX,
                };
                (m.to_string(), room)
            })
            .collect())
    }

    /// `n` tasks of `module` were sent: they wait in its queue until the next look.
    pub fn sent(&mut self, module: &str, n: usize) {
        if let Some(d) = self.depth.get_mut(module) {
            d.sent = d.sent.saturating_add(n as u32);
        }
    }

    /// Splits hot-path tasks into those to send now and those to leave to the scheduler
    /// (their lease is given up): a held module's, and what does not fit its room. With
    /// submitter limits, every task goes through the scheduler, which counts them.
    pub fn split_hot(&mut self, ready: Vec<Ready>, room: &Room) -> (Vec<Ready>, Vec<i64>) {
        if self.cfg.limited() {
            return (Vec::new(), ready.iter().map(|r| r.outbox_id).collect());
        }
        let mut left: HashMap<String, u32> = room.clone();
        let (mut send, mut release) = (Vec::with_capacity(ready.len()), Vec::new());
        let mut newly_held = Vec::new();
        for r in ready {
            let module = &r.task.module_key;
            let room = left.entry(module.clone()).or_insert(u32::MAX);
            if self.held.contains(module) || *room == 0 {
                if !self.held.contains(module) {
                    newly_held.push(module.clone());
                }
                release.push(r.outbox_id);
            } else {
                *room -= 1;
                send.push(r);
            }
        }
        for m in newly_held {
            self.set_held(&m, true);
        }
        (send, release)
    }

    /// Submitters at their limit per module of `modules`, and how many more each limited
    /// one may start. Nothing is counted when no submitter has a limit.
    pub async fn limits(&self, client: &impl GenericClient, modules: &[String]) -> Result<Limits, DbError> {
        if !self.cfg.limited() || modules.is_empty() {
            return Ok(Limits::default());
        }
        let mut limits = Limits { on: true, ..Default::default() };
        for r in client.query(sql::IN_FLIGHT, &[&modules]).await? {
            let (module, submitter): (String, String) = (r.get("module_key"), r.get("submitter"));
            let limit = self.cfg.limit_of(&submitter);
            if limit == 0 {
                continue;
            }
            let left = limit.saturating_sub(r.get::<_, i64>("tasks").clamp(0, u32::MAX as i64) as u32);
            if left == 0 {
                limits.refused_modules.push(module.clone());
                limits.refused.push(submitter.clone());
            }
            limits.left.insert((module, submitter), left);
        }
        Ok(limits)
    }
}

/// What submitters' limits allow in one pass (see [`Scheduler::limits`]).
#[derive(Debug, Default)]
pub struct Limits {
    on: bool,
    /// (module, submitter) pairs at their limit, which the claim skips, as parallel arrays.
    pub refused_modules: Vec<String>,
    pub refused: Vec<String>,
    /// Per (module, submitter) with a limit and tasks in flight: how many more may go.
    left: HashMap<(String, String), u32>,
}

impl Limits {
    /// Whether a task of `submitter` for `module` may go, counting it if so.
    pub fn take(&mut self, cfg: &SchedulingConfig, module: &str, submitter: &str) -> bool {
        if !self.on {
            return true;
        }
        let limit = cfg.limit_of(submitter);
        if limit == 0 {
            return true;
        }
        let left = self.left.entry((module.to_string(), submitter.to_string())).or_insert(limit);
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
}
