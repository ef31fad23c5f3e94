//! Priorities and fair share with real workers (README, "Priorities and fair share"): work
//! that waits is held in the outbox, and what starts next is chosen there.

use renderfleet_tests::*;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

/// One 150 ms sleep node.
fn sleep_graph() -> Value {
    json!({"nodes": [{"id": "s", "type": "util.sleep", "params": {"ms": 150}}]})
}

async fn submit(w: &World, c: &Coord, body: Value) -> Uuid {
    let resp = w.http.post(format!("{}/v1/runs", c.url)).json(&body).send().await.expect("POST /v1/runs");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "POST /v1/runs: {body}");
    body["run_id"].as_str().unwrap().parse().unwrap()
}

/// When each run's node started, in start order.
async fn start_order(w: &World, runs: &[Uuid]) -> Vec<Uuid> {
    let db = w.db().await;
    let rows = db
        .query("SELECT run_id FROM node_runs WHERE run_id = ANY($1) AND started_at IS NOT NULL ORDER BY started_at, id", &[&runs])
        .await
        .unwrap();
    rows.iter().map(|r| r.get("run_id")).collect()
}

/// How many of `others` started after run `id` was created and before it started.
async fn started_while_waiting(w: &World, id: Uuid, others: &[Uuid]) -> i64 {
    let db = w.db().await;
    let row = db
        .query_one(
            "SELECT count(*) AS n FROM node_runs o, runs r JOIN node_runs n ON n.run_id = r.id
             WHERE r.id = $1 AND o.run_id = ANY($2) AND o.started_at > r.created_at AND o.started_at < n.started_at",
            &[&id, &others],
        )
        .await
        .unwrap();
    row.get("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_run_starts_ahead_of_a_bulk_backlog() {
    let mut w = World::new("sched_priority").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[("RENDERFLEET_MODULES", "sleep"), ("RENDERFLEET_CONCURRENCY", "1")]);
    wait_until("the worker to be live", LONG, || async { (w.count("SELECT count(*) FROM workers").await == 1).then_some(()) }).await;
    let subject = json!({"kind": "test"});
    let mut bulk = Vec::new();
    for _ in 0..12 {
        bulk.push(submit(&w, &c, json!({"subject": subject, "graph": sleep_graph(), "priority": "bulk"})).await);
    }
    // The backlog is held in the outbox, not in the broker queue: only the window is there.
    wait_until("bulk tasks held back", LONG, || async {
        (w.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND priority = 0").await >= 5).then_some(())
    })
    .await;
    let depth = w.queue_depth(&w.topology.task_queue("sleep")).await;
    assert!(depth <= 1, "the sleep queue holds {depth} tasks; its window is 1 (1 slot × 0.5, queue_min 1)");
    let rush = submit(&w, &c, json!({"subject": subject, "graph": sleep_graph(), "priority": "rush"})).await;
    let run = w.wait_run(&c, rush, LONG).await;
    assert_eq!((run["status"].as_str(), run["priority"].as_str()), (Some("succeeded"), Some("rush")), "{run:#}");
    let mut all = bulk.clone();
    all.push(rush);
    for id in &bulk {
        w.wait_run(&c, *id, LONG).await;
    }
    // Ahead of it at most the one in the queue's window when it came (and one more if a
    // slot freed while it was being written).
    let ahead = started_while_waiting(&w, rush, &bulk).await;
    assert!(ahead <= 2, "{ahead} bulk runs started while the rush run waited");
    let order = start_order(&w, &all).await;
    assert!(order.iter().position(|r| *r == rush).unwrap() < bulk.len(), "the rush run waited for the whole bulk backlog: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_submitter_is_not_stuck_behind_the_first_ones_backlog() {
    let mut w = World::new("sched_fair").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[("RENDERFLEET_MODULES", "sleep"), ("RENDERFLEET_CONCURRENCY", "1")]);
    wait_until("the worker to be live", LONG, || async { (w.count("SELECT count(*) FROM workers").await == 1).then_some(()) }).await;
    let subject = json!({"kind": "test"});
    let mut first = Vec::new();
    for _ in 0..12 {
        first.push(submit(&w, &c, json!({"subject": subject, "graph": sleep_graph(), "tenant": "catalogue"})).await);
    }
    wait_until("the catalogue's tasks held back", LONG, || async {
        (w.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL").await >= 5).then_some(())
    })
    .await;
    let second: Vec<Uuid> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(submit(&w, &c, json!({"subject": subject, "graph": sleep_graph(), "tenant": "shop-7"})).await);
        }
        v
    };
    let run = w.wait_run(&c, second[1], LONG).await;
    assert_eq!((run["status"].as_str(), run["submitter"].as_str()), (Some("succeeded"), Some("shop-7")), "{run:#}");
    for id in first.iter().chain(&second) {
        w.wait_run(&c, *id, LONG).await;
    }
    // The queue's window (1) was the catalogue's when shop-7 came; then shop-7 goes first
    // and the two take turns.
    let ahead: Vec<i64> = [started_while_waiting(&w, second[0], &first).await, started_while_waiting(&w, second[1], &first).await].into();
    assert!(ahead[0] <= 2, "{} catalogue runs started while shop-7's first waited", ahead[0]);
    assert!(ahead[1] <= 3, "{} catalogue runs started while shop-7's second waited (the submitters should alternate)", ahead[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_limit_caps_its_running_tasks() {
    let mut w = World::new("sched_limit").await;
    // Four slots, but the catalogue may have only one task running or sent at once.
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_SCHEDULING__MAX_RUNNING_PER_SUBMITTER", "1")]).await;
    w.start_worker("w1", &[("RENDERFLEET_MODULES", "sleep"), ("RENDERFLEET_CONCURRENCY", "4")]);
    wait_until("the worker to be live", LONG, || async { (w.count("SELECT count(*) FROM workers").await == 1).then_some(()) }).await;
    let subject = json!({"kind": "test"});
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(submit(&w, &c, json!({"subject": subject, "graph": sleep_graph(), "tenant": "catalogue"})).await);
    }
    let other = submit(&w, &c, json!({"subject": subject, "graph": sleep_graph(), "tenant": "shop-7"})).await;
    for id in runs.iter().chain([&other]) {
        assert_eq!(w.wait_run(&c, *id, LONG).await["status"], "succeeded");
    }
    // No two catalogue nodes ever overlapped.
    let overlaps = w
        .count(&format!(
            "SELECT count(*) FROM node_runs a JOIN node_runs b ON a.id < b.id
             WHERE a.run_id = ANY('{{{ids}}}') AND b.run_id = ANY('{{{ids}}}')
               AND a.started_at < b.finished_at AND b.started_at < a.finished_at",
            ids = runs.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",")
        ))
        .await;
    assert_eq!(overlaps, 0, "the catalogue ran more than one task at once");
    // shop-7 was not held by the catalogue's limit: it ran beside a catalogue task.
    let beside = w
        .count(&format!(
            "SELECT count(*) FROM node_runs a JOIN node_runs b ON a.run_id = '{other}' AND b.run_id <> '{other}'
             WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at"
        ))
        .await;
    assert!(beside >= 1, "shop-7's task waited for the catalogue's");
}
