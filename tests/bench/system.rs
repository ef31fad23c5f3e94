//! renderfleet's own workloads, on the release binaries, each in a fresh world (database and
//! broker prefix). Times come from the node and run timestamps in PostgreSQL, not from
//! the client, so HTTP submission does not enter them.

use futures_util::{stream, StreamExt};
use renderfleet_tests::{wait_until, Coord, World};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

use crate::{median, quantile, Sizes};

/// Task slots per worker process. A slot stays taken until the task's result is confirmed
/// by the broker (then the task is acked), so for no-op tasks the slots, not the CPU, bound
/// throughput: 8 slots per process gave ~4,700 nodes/s with 2 processes, 32 gave ~12,000,
/// 128 gave ~27,000 (ops-side measurement, see the note of the benchmark issue). 64 is what
/// a host running many short tasks would be given.
const SLOTS: &str = "64";
const LONG: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Ours {
    pub independent_runs: usize,
    /// (worker processes, nodes/s)
    pub independent: Vec<(usize, f64)>,
    pub wide_nodes: usize,
    pub wide: Vec<(usize, f64)>,
    pub chain_nodes: usize,
    pub hop_p50_ms: f64,
    pub hop_p99_ms: f64,
    /// (shape, nodes, wall ms per node)
    pub scaling: Vec<(String, usize, f64)>,
    pub coordinator_peak_rss_mib: f64,
}

pub(crate) async fn measure(sizes: Sizes, no_scheduling: bool) -> anyhow::Result<Ours> {
    SCHEDULING_OFF.store(no_scheduling, std::sync::atomic::Ordering::Relaxed);
    let mut independent = Vec::new();
    let mut rss = Vec::new();
    for &workers in sizes.worker_counts {
        let mut rates = Vec::new();
        for _ in 0..sizes.repeats {
            let (rate, peak) = independent_runs(sizes.independent_runs, workers).await;
            rates.push(rate);
            rss.push(peak);
        }
        independent.push((workers, median(rates)));
        eprintln!("bench:   independent, {workers} workers: {:.0} nodes/s", independent.last().unwrap().1);
    }
    let mut wide = Vec::new();
    for &workers in sizes.worker_counts {
        let mut rates = Vec::new();
        for _ in 0..sizes.repeats {
            let (world, _coord, run) = run_graph(wide_graph(sizes.wide), workers).await;
            rates.push((sizes.wide + 2) as f64 / run_seconds(&world, run).await);
        }
        wide.push((workers, median(rates)));
        eprintln!("bench:   wide, {workers} workers: {:.0} nodes/s", wide.last().unwrap().1);
    }
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for _ in 0..sizes.repeats {
        let (world, coord, run) = run_graph(chain_graph(sizes.chain), 1).await;
        let hops = hop_latencies(&world.get_run(&coord, run).await);
        p50s.push(quantile(hops.clone(), 0.5));
        p99s.push(quantile(hops, 0.99));
    }
    eprintln!("bench:   hop p50 {:.2} ms", median(p50s.clone()));
    let mut scaling = Vec::new();
    for &n in sizes.scaling {
        for (shape, graph) in [("chain", chain_graph(n)), ("wide", wide_graph(n.saturating_sub(2).max(1)))] {
            let mut costs = Vec::new();
            for _ in 0..sizes.repeats {
                let (world, coord, run) = run_graph(graph.clone(), 2).await;
                let run = world.get_run(&coord, run).await;
                costs.push(if shape == "chain" { median(hop_latencies(&run)) } else { fan_out_ms_per_node(&run) });
            }
            eprintln!("bench:   {shape} {n}: {:.3} ms/node", median(costs.clone()));
            scaling.push((shape.to_string(), n, median(costs)));
        }
    }
    Ok(Ours {
        independent_runs: sizes.independent_runs,
        independent,
        wide_nodes: sizes.wide,
        wide,
        chain_nodes: sizes.chain,
        hop_p50_ms: median(p50s),
        hop_p99_ms: median(p99s),
        scaling,
        coordinator_peak_rss_mib: rss.into_iter().fold(0.0, f64::max),
    })
}

/// The shipped defaults for the periodic work (the test worlds speed it up for the tests).
const COORDINATOR_DEFAULTS: &[(&str, &str)] = &[
    ("RENDERFLEET_RECOVERY__SWEEP_INTERVAL", "5s"),
    ("RENDERFLEET_RECOVERY__HEARTBEAT_TIMEOUT", "30s"),
    ("RENDERFLEET_OUTBOX__IDLE_POLL", "1s"),
];

/// `bench --no-scheduling`: every workload with the scheduler off.
static SCHEDULING_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn world(name: &str) -> (World, Coord) {
    let mut w = World::new(name).await;
    w.rust_log = "warn".into();
    let mut env = COORDINATOR_DEFAULTS.to_vec();
    if SCHEDULING_OFF.load(std::sync::atomic::Ordering::Relaxed) {
        env.push(("RENDERFLEET_SCHEDULING__ENABLED", "false"));
    }
    let c = w.start_coordinator("coordinator", &env).await;
    (w, c)
}

fn start_workers(w: &mut World, n: usize) {
    for i in 0..n {
        let env = [("RENDERFLEET_CONCURRENCY", SLOTS), ("RENDERFLEET_METRICS_ADDR", ""), ("RENDERFLEET_HEARTBEAT_INTERVAL", "5s")];
        w.start_worker(&format!("w{i}"), &env);
    }
}

fn chain_graph(n: usize) -> Value {
    let nodes: Vec<Value> = (0..n).map(|i| json!({"id": format!("n{i}"), "type": "util.noop"})).collect();
    let edges: Vec<Value> = (1..n).map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")})).collect();
    json!({"nodes": nodes, "edges": edges})
}

/// source → `n` parallel nodes → sink.
fn wide_graph(n: usize) -> Value {
    let mut nodes = vec![json!({"id": "source", "type": "util.noop"}), json!({"id": "sink", "type": "util.noop"})];
    let mut edges = Vec::new();
    for i in 0..n {
        nodes.push(json!({"id": format!("p{i}"), "type": "util.noop"}));
        edges.push(json!({"from": "source", "to": format!("p{i}")}));
        edges.push(json!({"from": format!("p{i}"), "to": "sink"}));
    }
    json!({"nodes": nodes, "edges": edges})
}

/// Submits `graph` with `workers` already consuming and waits for it.
async fn run_graph(graph: Value, workers: usize) -> (World, Coord, Uuid) {
    let (mut w, c) = world("bench_graph").await;
    start_workers(&mut w, workers);
    // Let the workers bind before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = w.submit(&c, graph).await;
    let done = w.wait_run(&c, run, LONG).await;
    assert_eq!(done["status"], "succeeded", "bench run failed: {done}");
    (w, c, run)
}

/// source finished → sink started, per parallel node, in ms: the scheduling cost of the
/// graph's body without the run's fixed set-up (creation, first and last hop).
fn fan_out_ms_per_node(run: &Value) -> f64 {
    let time = |id: &str, field: &str| {
        bench_node(run, id)[field].as_str().and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok()).expect("timestamp")
    };
    let body = time("sink", "started_at") - time("source", "finished_at");
    let parallel = run["nodes"].as_array().map(|n| n.len() - 2).unwrap_or(1).max(1);
    body.num_microseconds().unwrap_or(0) as f64 / 1e3 / parallel as f64
}

fn bench_node<'a>(run: &'a Value, id: &str) -> &'a Value {
    renderfleet_tests::node(run, id).unwrap_or_else(|| panic!("no node {id}"))
}

/// Run created → run finished (coordinator clock), in seconds.
async fn run_seconds(w: &World, run: Uuid) -> f64 {
    let row = w
        .db()
        .await
        .query_one("SELECT extract(epoch FROM finished_at - created_at)::float8 FROM runs WHERE id = $1", &[&run])
        .await
        .expect("run timing");
    row.get(0)
}

/// previous node finished → this node started, in ms, along a chain n0 → n1 → ...
fn hop_latencies(run: &Value) -> Vec<f64> {
    let time = |v: &Value| v.as_str().and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok());
    let nodes = run["nodes"].as_array().expect("nodes");
    let mut by_id: Vec<(usize, &Value)> =
        nodes.iter().map(|n| (n["node_id"].as_str().unwrap()[1..].parse::<usize>().unwrap(), n)).collect();
    by_id.sort_by_key(|(i, _)| *i);
    by_id
        .windows(2)
        .filter_map(|w| {
            let prev = time(&w[0].1["finished_at"])?;
            let next = time(&w[1].1["started_at"])?;
            Some((next - prev).num_microseconds()? as f64 / 1e3)
        })
        .collect()
}

/// `n` single-node runs created while no worker runs (published, or held by the scheduler
/// until the workers' slots open their queue's window), then drained by
/// `workers` processes. Returns nodes/s from the first node start to the last run marked
/// succeeded, and the coordinator's peak RSS in MiB.
async fn independent_runs(n: usize, workers: usize) -> (f64, f64) {
    let (mut w, c) = world("bench_independent").await;
    let graph = json!({"nodes": [{"id": "n", "type": "util.noop"}]});
    let body = json!({"subject": {"kind": "bench"}, "graph": graph});
    let url = format!("{}/v1/runs", c.url);
    let http = w.http.clone();
    stream::iter(0..n)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                let r = http.post(&url).json(&body).send().await.expect("POST /v1/runs");
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    // Every task written and none in a publisher's hands: published, or held in the outbox
    // for its queue's window (a queue with no live worker holds `scheduling.queue_min`).
    wait_until("every task to be published or held", LONG, || async {
        (w.count("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL OR claimed_until IS NULL OR claimed_until < now()").await
            == n as i64)
            .then_some(())
    })
    .await;
    start_workers(&mut w, workers);
    wait_until("every run to succeed", LONG, || async {
        (w.count("SELECT count(*) FROM runs WHERE status = 'succeeded'").await == n as i64).then_some(())
    })
    .await;
    let row = w
        .db()
        .await
        .query_one("SELECT extract(epoch FROM (SELECT max(finished_at) FROM runs) - (SELECT min(started_at) FROM node_runs))::float8", &[])
        .await
        .expect("timing");
    let secs: f64 = row.get(0);
    let pid = w.pid("coordinator");
    (n as f64 / secs, peak_rss_mib(pid))
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
