//! `bench --orders`: the order system's side. How long a rush run waits behind a bulk
//! backlog, and a second submitter's run behind the first one's, in task durations (the goal
//! is 2): 2 workers of one slot each run a `sleep` node of [`TASK_MS`], with thousands of
//! runs queued before the measured ones are submitted, one at a time. Then how soon a
//! webhook hears that a request finished, and how many request lines per second a batch
//! takes against single requests.

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
    /// Requests whose event latency is measured, one after another.
    pub events: usize,
    /// Lines sent in 1,000-line batches, and as single requests.
    pub batched: usize,
    pub singles: usize,
}

impl OrderSizes {
    pub(crate) fn of(quick: bool) -> Self {
        if quick {
            OrderSizes { backlog: 100, tries: 4, events: 10, batched: 1_000, singles: 200 }
        } else {
            OrderSizes { backlog: 5_000, tries: 20, events: 200, batched: 5_000, singles: 1_000 }
        }
    }
}

/// Lines per batch call (the coordinator's most).
const BATCH: usize = 1_000;

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
    rows.extend(event_latency(sizes).await?);
    rows.extend(intake(sizes).await?);
    Ok(rows)
}

async fn call(w: &World, url: String, body: &Value) -> Value {
    let r = w.http.post(&url).json(body).send().await.expect("POST");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

/// When the receiver got each event, by request id.
type Heard = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>>;

/// A webhook receiver on loopback that notes when each event arrives; its URL.
async fn receiver(heard: Heard) -> String {
    async fn take(axum::extract::State(heard): axum::extract::State<Heard>, body: axum::body::Bytes) -> axum::http::StatusCode {
        let at = chrono::Utc::now();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if let Some(id) = v["request"]["id"].as_str() {
                heard.lock().unwrap().insert(id.to_string(), at);
            }
        }
        axum::http::StatusCode::OK
    }
    let app = axum::Router::new().route("/hook", axum::routing::post(take)).with_state(heard);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a receiver port");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A legacy output type: with no render worker its requests wait, so the benchmark can end
/// them (cancel) or just store them.
async fn waiting_output_type(w: &World, c: &Coord, key: &str) {
    let ot = json!({"key": key, "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 64}});
    call(w, format!("{}/v1/output-types", c.url), &ot).await;
}

fn request_line(key: &str, output_type: &str) -> Value {
    json!({"idempotency_key": key, "order_line_id": key, "subject": {"cad_file": "part.stp"}, "output_type": output_type})
}

/// Request finished (its run's `finished_at`) → the webhook received its event, one request
/// at a time, on loopback. The requests end by being cancelled (no render worker needed): the
/// event is written by the same trigger and sent by the same deliverer as a success's, woken
/// by the cancel instead of by the result.
async fn event_latency(sizes: OrderSizes) -> anyhow::Result<Vec<OrderRow>> {
    let mut w = World::new("bench_events").await;
    w.rust_log = "warn".into();
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RECOVERY__SWEEP_INTERVAL", "5s")]).await;
    let heard: Heard = Default::default();
    let url = receiver(heard.clone()).await;
    call(&w, format!("{}/v1/webhooks", c.url), &json!({"url": url, "secret": "whsec-bench-0123456789", "events": ["request.cancelled"]}))
        .await;
    waiting_output_type(&w, &c, "still-evt").await;
    let mut latencies = Vec::new();
    for i in 0..sizes.events {
        let mut line = request_line(&format!("evt-{i}"), "still-evt");
        let key = line.as_object_mut().unwrap().remove("idempotency_key").unwrap();
        let r = w
            .http
            .post(format!("{}/v1/render-requests", c.url))
            .header("Idempotency-Key", key.as_str().unwrap())
            .json(&line)
            .send()
            .await?;
        let request: Value = r.json().await?;
        let id = request["id"].as_str().expect("a request id").to_string();
        call(&w, format!("{}/v1/render-requests/{id}/cancel", c.url), &json!({})).await;
        let received = wait_until("the webhook to hear of the request", LONG, || async { heard.lock().unwrap().get(&id).copied() }).await;
        let db = w.db().await;
        let row = db.query_one("SELECT finished_at FROM runs WHERE request_id = $1::text::uuid AND role = 'authoritative'", &[&id]).await?;
        let finished: chrono::DateTime<chrono::Utc> = row.get("finished_at");
        latencies.push((received - finished).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    eprintln!("bench:   event latency: {:.1?} ms", &latencies[..latencies.len().min(10)]);
    let label = format!("request finished → webhook received ({} requests one at a time, loopback)", sizes.events);
    Ok(vec![
        OrderRow { name: format!("event latency p50, {label}"), value: median(latencies.clone()), unit: "ms", goal_met: None },
        OrderRow { name: format!("event latency p99, {label}"), value: quantile(latencies, 0.99), unit: "ms", goal_met: None },
    ])
}

/// Request lines per second into a coordinator with no worker (the runs wait, each written
/// with its nodes and ready tasks): 1,000-line
/// batches, against single `POST /v1/render-requests` one at a time and eight at a time.
async fn intake(sizes: OrderSizes) -> anyhow::Result<Vec<OrderRow>> {
    use futures_util::{stream, StreamExt};
    let mut w = World::new("bench_intake").await;
    w.rust_log = "warn".into();
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RECOVERY__SWEEP_INTERVAL", "5s")]).await;
    waiting_output_type(&w, &c, "still-in").await;
    let started = std::time::Instant::now();
    for chunk in (0..sizes.batched).collect::<Vec<_>>().chunks(BATCH) {
        let lines: Vec<Value> = chunk.iter().map(|i| request_line(&format!("b-{i}"), "still-in")).collect();
        let v = call(&w, format!("{}/v1/render-requests/batch", c.url), &json!({"requests": lines})).await;
        anyhow::ensure!(v["created"].as_u64() == Some(chunk.len() as u64), "a batch line was refused: {v}");
    }
    let batched = sizes.batched as f64 / started.elapsed().as_secs_f64();
    let single = |prefix: &'static str, i: usize| {
        let w = &w;
        let url = format!("{}/v1/render-requests", c.url);
        async move {
            let mut line = request_line(&format!("{prefix}-{i}"), "still-in");
            let key = line.as_object_mut().unwrap().remove("idempotency_key").unwrap();
            let r = w.http.post(url).header("Idempotency-Key", key.as_str().unwrap()).json(&line).send().await.expect("POST");
            assert_eq!(r.status(), 201);
        }
    };
    let started = std::time::Instant::now();
    for i in 0..sizes.singles {
        single("s", i).await;
    }
    let one_at_a_time = sizes.singles as f64 / started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    stream::iter(0..sizes.singles).map(|i| single("p", i)).buffer_unordered(8).collect::<Vec<_>>().await;
    let eight_at_a_time = sizes.singles as f64 / started.elapsed().as_secs_f64();
    let total = w.count("SELECT count(*) FROM render_requests").await;
    anyhow::ensure!(total as usize == sizes.batched + 2 * sizes.singles, "{total} requests stored");
    eprintln!("bench:   intake: batches {batched:.0}/s, singles {one_at_a_time:.0}/s, 8 at a time {eight_at_a_time:.0}/s");
    Ok(vec![
        OrderRow {
            name: format!("batch intake, {} lines in 1,000-line batches", sizes.batched),
            value: batched,
            unit: "lines/s",
            goal_met: None,
        },
        OrderRow {
            name: format!("single requests one at a time ({})", sizes.singles),
            value: one_at_a_time,
            unit: "lines/s",
            goal_met: None,
        },
        OrderRow {
            name: format!("single requests eight at a time ({})", sizes.singles),
            value: eight_at_a_time,
            unit: "lines/s",
            goal_met: None,
        },
    ])
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
