//! `bench --orders`: the order system's side. How long a rush run waits behind a bulk
//! backlog, and a second submitter's run behind the first one's, in task durations (the goal
//! is 2): 2 workers of one slot each run a `sleep` node of [`TASK_MS`], with thousands of
//! runs queued before the measured ones are submitted, one at a time.

use crate::{median, quantile};
use renderfleet_tests::{wait_until, Coord, World};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// The sleep node's duration: the unit of the waiting figures.
const TASK_MS: u64 = 200;
const LONG: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
pub(crate) struct OrderSizes {
    pub backlog: usize,
    pub tries: usize,
}

impl OrderSizes {
    pub(crate) fn of(quick: bool) -> Self {
        if quick {
            OrderSizes { backlog: 100, tries: 4 }
        } else {
            OrderSizes { backlog: 5_000, tries: 20 }
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct OrderRow {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// Whether it meets the goal, where it has one.
    pub goal_met: Option<bool>,
}

pub(crate) async fn measure(sizes: OrderSizes) -> anyhow::Result<Vec<OrderRow>> {
    let mut rows = Vec::new();
    for (what, backlog_body, probe_body) in [
        (
            "a rush run behind bulk runs",
            json!({"priority": "bulk", "tenant": "catalogue"}),
            json!({"priority": "rush", "tenant": "catalogue"}),
        ),
        (
            "a second submitter's normal run behind the first one's normal runs",
            json!({"priority": "normal", "tenant": "catalogue"}),
            json!({"priority": "normal", "tenant": "shop-7"}),
        ),
    ] {
        let waits = starvation(sizes, &backlog_body, &probe_body).await?;
        let durations: Vec<f64> = waits.iter().map(|ms| ms / TASK_MS as f64).collect();
        eprintln!("bench:   {what}: waits {durations:.2?} task durations");
        let (p50, max) = (median(durations.clone()), quantile(durations, 1.0));
        let label = format!("{what} ({} queued, 2 workers × 1 slot, {TASK_MS} ms tasks)", sizes.backlog);
        rows.push(OrderRow { name: format!("start wait p50, {label}"), value: p50, unit: "task durations", goal_met: Some(p50 <= 2.0) });
        rows.push(OrderRow {
            name: format!("start wait max of {}, {label}", sizes.tries),
            value: max,
            unit: "task durations",
            goal_met: Some(max <= 2.0),
        });
    }
    Ok(rows)
}

fn sleep_run(extra: &Value) -> Value {
    let mut body =
        json!({"subject": {"kind": "bench"}, "graph": {"nodes": [{"id": "s", "type": "util.sleep", "params": {"ms": TASK_MS}}]}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

async fn submit(w: &World, c: &Coord, body: &Value) -> Uuid {
    let r = w.http.post(format!("{}/v1/runs", c.url)).json(body).send().await.expect("POST /v1/runs");
    assert_eq!(r.status(), 201, "POST /v1/runs");
    let v: Value = r.json().await.expect("JSON");
    v["run_id"].as_str().and_then(|s| s.parse().ok()).expect("run_id")
}

/// Queues `sizes.backlog` runs of `backlog`, then submits `sizes.tries` runs of `probe` one
/// after another, each once the previous one started; returns each one's wait from created
/// to started, in ms (coordinator and worker clocks, one machine).
async fn starvation(sizes: OrderSizes, backlog: &Value, probe: &Value) -> anyhow::Result<Vec<f64>> {
    use futures_util::{stream, StreamExt};
    let mut w = World::new("bench_orders").await;
    w.rust_log = "warn".into();
    let c = w
        .start_coordinator("coordinator", &[("RENDERFLEET_RECOVERY__SWEEP_INTERVAL", "5s"), ("RENDERFLEET_OUTBOX__IDLE_POLL", "1s")])
        .await;
    for i in 0..2 {
        w.start_worker(&format!("w{i}"), &[("RENDERFLEET_MODULES", "sleep"), ("RENDERFLEET_CONCURRENCY", "1")]);
    }
    wait_until("both workers live", LONG, || async { (w.count("SELECT count(*) FROM workers").await == 2).then_some(()) }).await;
    let body = sleep_run(backlog);
    let (wr, cr) = (&w, &c);
    stream::iter(0..sizes.backlog).map(|_| submit(wr, cr, &body)).buffer_unordered(16).collect::<Vec<_>>().await;
    let probe = sleep_run(probe);
    let mut waits = Vec::new();
    for _ in 0..sizes.tries {
        let id = submit(&w, &c, &probe).await;
        let wait = wait_until("the measured run to start", LONG, || async {
            let db = w.db().await;
            let row = db
                .query_opt(
                    "SELECT extract(epoch FROM n.started_at - r.created_at)::float8 * 1000 AS ms
                     FROM node_runs n JOIN runs r ON r.id = n.run_id WHERE r.id = $1 AND n.started_at IS NOT NULL",
                    &[&id],
                )
                .await
                .ok()??;
            Some(row.get::<_, f64>("ms"))
        })
        .await;
        waits.push(wait);
    }
    let left = w.count("SELECT count(*) FROM runs WHERE status = 'running'").await;
    anyhow::ensure!(
        left as usize + sizes.tries >= sizes.backlog / 2,
        "the backlog drained during the measurement ({left} runs left): the figures would not be behind a backlog"
    );
    Ok(waits)
}

pub(crate) fn print(rows: &[OrderRow]) {
    println!("| workload | value | unit | goal (≤ 2) |");
    println!("| --- | ---: | --- | --- |");
    for r in rows {
        let goal = match r.goal_met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "",
        };
        println!("| {} | {:.2} | {} | {goal} |", r.name, r.value, r.unit);
    }
}

/// Rows without a real figure.
pub(crate) fn bad(rows: &[OrderRow]) -> Vec<String> {
    rows.iter().filter(|r| !(r.value.is_finite() && r.value >= 0.0)).map(|r| format!("{}: {}", r.name, r.value)).collect()
}
