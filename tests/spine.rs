//! The spine's promises, against the real RabbitMQ and PostgreSQL and the real binaries:
//! dependency order, retries, at-least-once delivery with exactly-once effects under
//! SIGKILL / SIGSTOP / SIGTERM, duplicate results, competing coordinators, dead-lettering,
//! and refusal of invalid graphs.

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use renderfleet_shared::wire::{self, Finished, Outcome, ResultBody, ResultMessage, TaskMessage, WIRE_VERSION};
use renderfleet_tests::{metric, node, only, wait_until, World};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")).parse().unwrap()
}

fn chain(n: usize, node: Value) -> Value {
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let mut v = node.clone();
            v["id"] = json!(format!("n{i}"));
            v
        })
        .collect();
    let edges: Vec<Value> = (1..n).map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")})).collect();
    json!({"nodes": nodes, "edges": edges})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_runs_in_dependency_order() {
    let mut w = World::new("diamond").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    w.start_worker("w2", &[]);
    let graph = json!({
        "nodes": [{"id":"a","type":"util.noop"},{"id":"b","type":"util.sleep","params":{"ms":300}},
                  {"id":"c","type":"util.sleep","params":{"ms":150}},{"id":"d","type":"util.noop"}],
        "edges": [{"from":"a","to":"b"},{"from":"a","to":"c"},{"from":"b","to":"d"},{"from":"c","to":"d"}]
    });
    let id = w.submit(&c, graph).await;
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let [a, b, cc, d] = ["a", "b", "c", "d"].map(|n| node(&run, n).unwrap().clone());
    for n in [&a, &b, &cc, &d] {
        assert_eq!(n["status"], "succeeded");
        assert_eq!(n["attempt"], 1);
    }
    assert!(time(&b["started_at"]) >= time(&a["finished_at"]));
    assert!(time(&cc["started_at"]) >= time(&a["finished_at"]));
    let both_done = time(&b["finished_at"]).max(time(&cc["finished_at"]));
    assert!(time(&d["started_at"]) >= both_done, "d started before b and c finished: {run:#}");
    assert!(time(&d["queued_at"]) >= time(&b["finished_at"]), "d was queued before b finished");

    // The cheap view for progress polls leaves the nodes out.
    let summary: Value = w.http.get(format!("{}/v1/runs/{id}?nodes=false", c.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["nodes_done"], 4);
    assert_eq!(summary["nodes"], json!([]));

    // The CLI reads the same run.
    let out = renderfleet_tests::renderctl(&["--coordinator", &c.url, "runs", "show", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("run {id}  succeeded  4 of 4 nodes done")), "{text}");
    for n in ["a", "b", "c", "d"] {
        assert!(text.lines().any(|l| l.contains(&format!("─ {n} ")) && l.contains("succeeded")), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderctl_submit_waits_and_reports_failure_in_its_exit_code() {
    let mut w = World::new("renderctl").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    let dir = std::env::temp_dir().join(format!("rf-renderctl-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, r#"{"nodes":[{"id":"x","type":"util.noop"},{"id":"y","type":"util.noop"}],"edges":[{"from":"x","to":"y"}]}"#)
        .unwrap();
    let out = renderfleet_tests::renderctl(&["--coordinator", &c.url, "submit", good.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded  2 of 2 nodes done"));

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"nodes":[{"id":"x","type":"util.fail","params":{"times":5},"max_attempts":1}]}"#).unwrap();
    let out = renderfleet_tests::renderctl(&["--coordinator", &c.url, "submit", bad.to_str().unwrap(), "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fails on purpose"));

    let cyclic = dir.join("cyclic.json");
    std::fs::write(&cyclic, r#"{"nodes":[{"id":"x","type":"util.noop"}],"edges":[{"from":"x","to":"x"}]}"#).unwrap();
    let out = renderfleet_tests::renderctl(&["--coordinator", &c.url, "submit", cyclic.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("[cycle]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_reconnect_after_the_broker_drops_them() {
    let mut w = World::new("reconnect").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    let id = w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"}]})).await;
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");

    // The broker closes every connection of this world (as on a broker restart).
    let closed = renderfleet_tests::close_broker_connections(&format!(" {} ", w.topology.prefix()));
    assert_eq!(closed, 2, "the coordinator's and the worker's connections");
    let url = format!("{}/metrics", c.url);
    let http = w.http.clone();
    wait_until("the coordinator to reconnect", LONG, || {
        let (http, url) = (http.clone(), url.clone());
        async move { (metric(&http, &url, "renderfleet_broker_connects_total", &[]).await >= 2.0).then_some(()) }
    })
    .await;
    w.wait_ready(&c).await;
    let id =
        w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"}],"edges":[{"from":"a","to":"b"}]})).await;
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
    assert!(w.alive("w1") && w.alive("coordinator"));
    assert!(w.log("w1").contains("broker session ended; reconnecting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_node_is_retried_then_fails_with_descendants_skipped() {
    let mut w = World::new("retries").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);

    let ok = json!({"nodes":[{"id":"f","type":"util.fail","params":{"times":2},"max_attempts":3},{"id":"after","type":"util.noop"}],
                    "edges":[{"from":"f","to":"after"}]});
    let bad = json!({"nodes":[{"id":"f","type":"util.fail","params":{"times":2},"max_attempts":2},
                              {"id":"child","type":"util.noop"},{"id":"grandchild","type":"util.noop"}],
                     "edges":[{"from":"f","to":"child"},{"from":"child","to":"grandchild"}]});
    let ok_id = w.submit(&c, ok).await;
    let bad_id = w.submit(&c, bad).await;

    let run = w.wait_run(&c, ok_id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let f = node(&run, "f").unwrap();
    assert_eq!(f["attempt"], 3);
    assert_eq!(f["outputs"]["succeeded_on_attempt"], 3);
    let statuses: Vec<&str> = f["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "failed", "succeeded"]);
    // Backoff: each retry waited at least the configured base delay (50ms, doubling).
    let attempts = f["attempts"].as_array().unwrap();
    let gap = time(&attempts[1]["started_at"]) - time(&attempts[0]["finished_at"]);
    assert!(gap >= chrono::Duration::milliseconds(45), "retry came after only {gap}");

    let run = w.wait_run(&c, bad_id, LONG).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let f = node(&run, "f").unwrap();
    assert_eq!(f["status"], "failed");
    assert_eq!(f["attempt"], 2);
    let msg = f["error"]["message"].as_str().unwrap();
    assert!(msg.contains("attempt 2 fails on purpose"), "{msg}");
    assert_eq!(f["log_tail"], "fail: attempt 2/2 -> error");
    for n in ["child", "grandchild"] {
        let n = node(&run, n).unwrap();
        assert_eq!(n["status"], "skipped");
        assert!(n["error"]["message"].as_str().unwrap().contains("upstream node `f` failed"));
        assert!(n["started_at"].is_null());
    }
    let run_msg = run["error"]["message"].as_str().unwrap();
    assert!(run_msg.contains("node `f` failed (attempt 2 of 2)"), "{run_msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_task_is_redelivered_and_runs_once_to_effect() {
    let mut w = World::new("sigkill_worker").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    let id = w
        .submit(
            &c,
            json!({"nodes":[{"id":"s","type":"util.sleep","params":{"ms":1500}},{"id":"next","type":"util.noop"}],
                                  "edges":[{"from":"s","to":"next"}]}),
        )
        .await;
    let s = w.wait_node(&c, id, "s", "running", LONG).await;
    assert_eq!(s["worker_id"], "w1");
    w.kill("w1");
    let w2 = w.start_worker("w2", &[]);

    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let s = node(&run, "s").unwrap();
    assert_eq!(s["worker_id"], "w2", "the task was redelivered to the second worker");
    assert_eq!(s["attempt"], 1, "redelivery is the same attempt, not a retry");
    let succeeded: Vec<&Value> = s["attempts"].as_array().unwrap().iter().filter(|a| a["status"] == "succeeded").collect();
    assert_eq!(succeeded.len(), 1, "{s:#}");
    assert_eq!(succeeded[0]["worker_id"], "w2");

    let next: Uuid = node(&run, "next").unwrap()["node_run_id"].as_str().unwrap().parse().unwrap();
    let queued = w.count(&format!("SELECT count(*) FROM outbox WHERE node_run_id = '{next}'")).await;
    assert_eq!(queued, 1, "the successor was queued exactly once");
    let ran = metric(&w.http, &w2, "renderfleet_worker_tasks_total", &[("module", "noop")]).await;
    assert_eq!(ran, 1.0, "the successor ran exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_result_changes_nothing() {
    let mut w = World::new("duplicate").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let w1 = w.start_worker("w1", &[]);
    let id = w
        .submit(
            &c,
            json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.sleep","params":{"ms":1000}}],
                                  "edges":[{"from":"a","to":"b"}]}),
        )
        .await;
    w.wait_node(&c, id, "b", "running", LONG).await;
    let before = w.get_run(&c, id).await;
    let a = node(&before, "a").unwrap().clone();
    let a_id: Uuid = a["node_run_id"].as_str().unwrap().parse().unwrap();

    // Replay a's success while b is running: if it were applied again, b's dependency
    // counter would be decremented twice or b queued again.
    let ignored_before = metric(&w.http, &format!("{}/metrics", c.url), "renderfleet_results_total", &[("outcome", "ignored")]).await;
    let dup = ResultMessage {
        v: WIRE_VERSION,
        body: ResultBody::Finished(Finished {
            cache: None,
            node_run_id: a_id,
            attempt: 1,
            worker_id: "impostor".into(),
            started_at_us: 1,
            finished_at_us: 2,
            outcome: Outcome::Succeeded { outputs: json!({"dup": true}) },
        }),
    };
    let bytes = wire::encode(&dup);
    w.publish_raw(&w.topology.results_exchange(), "", &bytes).await;
    w.publish_raw(&w.topology.results_exchange(), "", &bytes).await;
    let url = format!("{}/metrics", c.url);
    let http = w.http.clone();
    wait_until("both duplicates to be consumed", LONG, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let n = metric(&http, &url, "renderfleet_results_total", &[("outcome", "ignored")]).await;
            (n >= ignored_before + 2.0).then_some(())
        }
    })
    .await;

    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded");
    let a_after = node(&run, "a").unwrap();
    assert_eq!(a_after["worker_id"], a["worker_id"], "the duplicate did not overwrite a");
    assert_eq!(a_after["finished_at"], a["finished_at"]);
    assert_eq!(a_after["outputs"], json!({}));
    let b = node(&run, "b").unwrap();
    assert_eq!(b["attempt"], 1);
    assert_eq!(b["attempts"].as_array().unwrap().len(), 1);
    let b_id = b["node_run_id"].as_str().unwrap();
    assert_eq!(w.count(&format!("SELECT count(*) FROM outbox WHERE node_run_id = '{b_id}'")).await, 1);
    assert_eq!(metric(&w.http, &w1, "renderfleet_worker_tasks_total", &[("module", "sleep")]).await, 1.0);
    assert_eq!(run["nodes_done"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_in_flight_resumes_from_postgres() {
    let mut w = World::new("sigkill_coordinator").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let w1 = w.start_worker("w1", &[]);
    let id = w.submit(&c, chain(6, json!({"type":"util.sleep","params":{"ms":250}}))).await;
    w.wait_node(&c, id, "n1", "running", LONG).await;
    w.kill("coordinator");
    // Results pile up in the queue while no coordinator runs: n1's is there once the
    // worker has finished it (n0 and n1 done).
    sleep_tasks_done(&w, &w1, 2.0).await;
    let c2 = w.start_coordinator("coordinator-restarted", &[]).await;

    let run = w.wait_run(&c2, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for i in 0..6 {
        let n = node(&run, &format!("n{i}")).unwrap();
        assert_eq!(n["status"], "succeeded");
        assert_eq!(n["attempt"], 1, "{n:#}");
        let attempts = n["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{n:#}");
        assert_eq!(attempts[0]["status"], "succeeded");
    }
    assert_eq!(run["nodes_done"], 6);
    assert_eq!(w.count("SELECT count(*) FROM outbox").await, 6);
    // A task published just before the kill may run again, but never more than once more.
    let ran = metric(&w.http, &w1, "renderfleet_worker_tasks_total", &[("module", "sleep")]).await;
    assert!((6.0..=7.0).contains(&ran), "ran {ran} sleep tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_waited_out_and_results_are_kept_until_committed() {
    let mut w = World::new("db_outage").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let w1 = w.start_worker("w1", &[]);
    let id = w.submit(&c, chain(4, json!({"type":"util.sleep","params":{"ms":300}}))).await;
    w.wait_node(&c, id, "n1", "running", LONG).await;
    w.database_outage().await;
    let ready = w.http.get(format!("{}/readyz", c.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readyz must report the database outage");
    let body: Value = ready.json().await.unwrap();
    assert!(body["database"].as_str().unwrap().starts_with("unreachable"), "{body}");
    // n1 finishes during the outage; its result must wait in the queue, unacked.
    sleep_tasks_done(&w, &w1, 2.0).await;
    w.database_back().await;

    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for i in 0..4 {
        let n = node(&run, &format!("n{i}")).unwrap();
        assert_eq!(n["attempt"], 1, "{n:#}");
        assert_eq!(n["attempts"].as_array().unwrap().len(), 1, "{n:#}");
    }
    assert!(w.alive("coordinator"));
}

/// Waits until the worker whose metrics are at `url` has finished `n` sleep tasks.
async fn sleep_tasks_done(w: &World, url: &str, n: f64) {
    let http = w.http.clone();
    wait_until(&format!("{n} sleep tasks finished by the worker"), LONG, || {
        let (http, url) = (http.clone(), url.to_string());
        async move {
            let done = metric(&http, &url, "renderfleet_worker_tasks_total", &[("module", "sleep"), ("outcome", "succeeded")]).await;
            (done >= n).then_some(())
        }
    })
    .await;
}

/// An outage three times the heartbeat timeout: heartbeats (and one result) wait in the
/// queue meanwhile, so nothing may be judged lost on silence the coordinator could not hear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_heartbeat_timeout_loses_nothing() {
    let mut w = World::new("long_outage").await;
    let timeout = Duration::from_secs(2);
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RECOVERY__HEARTBEAT_TIMEOUT", "2s")]).await;
    let w1 = w.start_worker("w1", &[("RENDERFLEET_HEARTBEAT_INTERVAL", "200ms")]);
    let one = |ms: u64| json!({"nodes": [{"id": "only", "type": "util.sleep", "params": {"ms": ms}, "max_attempts": 1}]});
    // `long` runs through the whole outage; `short` finishes during it.
    let long = w.submit(&c, one(9000)).await;
    let short = w.submit(&c, one(1500)).await;
    w.wait_node(&c, long, "only", "running", LONG).await;
    w.wait_node(&c, short, "only", "running", LONG).await;
    w.database_outage().await;
    let began = std::time::Instant::now();
    sleep_tasks_done(&w, &w1, 1.0).await; // `short`'s result is waiting in the queue
    tokio::time::sleep((timeout * 3).saturating_sub(began.elapsed())).await;
    w.database_back().await;

    for id in [short, long] {
        let run = w.wait_run(&c, id, LONG).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let n = node(&run, "only").unwrap();
        assert_eq!(n["attempts"].as_array().unwrap().len(), 1, "{n:#}");
    }
    assert_eq!(w.count("SELECT count(*) FROM node_attempts WHERE status <> 'succeeded'").await, 0);
    assert_eq!(metric(&w.http, &w1, "renderfleet_worker_tasks_total", &[("module", "sleep")]).await, 2.0, "nothing ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_task_whose_publisher_died_goes_out_when_the_lease_ends() {
    let mut w = World::new("lease").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let id = w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"}]})).await;
    let queue = w.topology.task_queue("noop");
    wait_until("the task to be published", LONG, || async { (w.queue_depth(&queue).await == 1).then_some(()) }).await;
    wait_until("the row to be marked sent", LONG, || async {
        (w.count("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").await == 1).then_some(())
    })
    .await;
    // As if the coordinator that committed the task died before publishing it: the message
    // never reached the broker and the outbox row is unsent, leased for two more seconds.
    let conn = w.amqp().await;
    conn.create_channel().await.unwrap().queue_purge(queue.as_str().into(), Default::default()).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    let leased = w.db().await.execute("UPDATE outbox SET sent_at = NULL, claimed_until = now() + interval '2 s'", &[]).await.unwrap();
    assert_eq!(leased, 1);
    let t = std::time::Instant::now();
    wait_until("the safety net to publish the task", LONG, || async { (w.queue_depth(&queue).await == 1).then_some(()) }).await;
    assert!(t.elapsed() >= Duration::from_millis(1500), "published during the lease");
    w.start_worker("w1", &[]);
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_share_200_runs_and_dispatch_each_node_once() {
    let mut w = World::new("two_coordinators").await;
    // Both start at once against the empty database: migrations must not race.
    let c1 = w.spawn_coordinator("c1", &[]);
    let c2 = w.spawn_coordinator("c2", &[]);
    w.wait_ready(&c1).await;
    w.wait_ready(&c2).await;
    let m1 = w.start_worker("w1", &[("RENDERFLEET_CONCURRENCY", "4")]);
    let m2 = w.start_worker("w2", &[("RENDERFLEET_CONCURRENCY", "4")]);
    let graph = json!({"nodes":[{"id":"x","type":"util.noop"},{"id":"y","type":"util.noop"}],"edges":[{"from":"x","to":"y"}]});
    let mut ids = Vec::new();
    for i in 0..200 {
        let c = if i % 2 == 0 { &c1 } else { &c2 };
        ids.push(w.submit(c, graph.clone()).await);
    }
    wait_until("200 runs to succeed", LONG, || async {
        (w.count("SELECT count(*) FROM runs WHERE status = 'succeeded'").await == 200).then_some(())
    })
    .await;
    assert_eq!(w.count("SELECT count(*) FROM runs WHERE status <> 'succeeded'").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM node_runs WHERE status = 'succeeded' AND attempt = 1").await, 400);
    assert_eq!(w.count("SELECT count(*) FROM node_attempts").await, 400);
    assert_eq!(w.count("SELECT count(*) FROM outbox").await, 400, "one outbox row per node");
    // Marking published rows is batched off the hot path: it lands shortly after.
    wait_until("every outbox row to be marked sent", LONG, || async {
        (w.count("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").await == 400).then_some(())
    })
    .await;
    let ran = metric(&w.http, &m1, "renderfleet_worker_tasks_total", &[]).await
        + metric(&w.http, &m2, "renderfleet_worker_tasks_total", &[]).await;
    assert_eq!(ran, 400.0, "every node was dispatched and run exactly once");
    // Both coordinators took part.
    for c in [&c1, &c2] {
        let applied = metric(&w.http, &format!("{}/metrics", c.url), "renderfleet_results_total", &[("outcome", "applied")]).await;
        assert!(applied > 0.0, "{} applied no results", c.name);
    }
    // Every migration applied exactly once, though both coordinators started together.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations")).unwrap().count() as i64;
    assert_eq!(w.count("SELECT count(*) FROM refinery_schema_history").await, files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_task_is_dead_lettered_and_the_worker_lives_on() {
    let mut w = World::new("dead_letter").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    w.publish_raw(&w.topology.tasks_exchange(), "noop", b"\xc1 this is not msgpack").await;
    let dead = w.topology.dead_queue();
    wait_until("the message to reach the dead-letter queue", LONG, || async { (w.queue_depth(&dead).await == 1).then_some(()) }).await;

    let got = only(w.take_dead_letters().await);
    assert_eq!(got.data, b"\xc1 this is not msgpack");
    let reason = got.reason();
    assert!(reason.contains("undecodable task"), "{reason}");

    assert!(w.alive("w1"), "the worker survived the poison message");
    let id = w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"}]})).await;
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
}

/// Submits `a → b` (noop, no worker yet) and takes `a`'s task out of its queue, so that a
/// test can publish a task of its own making in its place. Returns the run and `a`'s node_run.
async fn intercept_first_task(w: &World, c: &renderfleet_tests::Coord) -> (Uuid, Uuid) {
    let id =
        w.submit(c, json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"}],"edges":[{"from":"a","to":"b"}]})).await;
    let run = w.get_run(c, id).await;
    let a: Uuid = node(&run, "a").unwrap()["node_run_id"].as_str().unwrap().parse().unwrap();
    let queue = w.topology.task_queue("noop");
    wait_until("the task to be published", LONG, || async { (w.queue_depth(&queue).await == 1).then_some(()) }).await;
    let conn = w.amqp().await;
    conn.create_channel().await.unwrap().queue_purge(queue.as_str().into(), Default::default()).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    (id, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_from_a_newer_version_fails_its_node_instead_of_hanging() {
    let mut w = World::new("future_task").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    // Replace the real task with one a newer coordinator might write (schema version 99).
    let (id, a) = intercept_first_task(&w, &c).await;
    let future = TaskMessage {
        avoid: Vec::new(),
        cache: None,
        v: 99,
        run_id: id,
        node_run_id: a,
        node_id: "a".into(),
        module_key: "noop".into(),
        attempt: 1,
        params: json!({}),
        timeout_ms: 1000,
        inputs: Default::default(),
    };
    w.publish_raw(&w.topology.tasks_exchange(), "noop", &wire::encode(&future)).await;
    w.start_worker("w1", &[]);

    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let a = node(&run, "a").unwrap();
    assert_eq!(a["status"], "failed");
    assert_eq!(a["error"]["kind"], "unsupported");
    let msg = a["error"]["message"].as_str().unwrap();
    assert!(msg.contains("cannot run this task") && msg.contains("version 99"), "{msg}");
    assert_eq!(node(&run, "b").unwrap()["status"], "skipped");
    assert_eq!(w.queue_depth(&w.topology.dead_queue()).await, 1, "the message is kept for inspection");
}

/// The refused result arrives inside a batch of good ones: in the same message (a coalesced
/// `FinishedBatch`) and beside two other messages, read as one batch. The good ones are
/// applied, the refused one fails its node with PostgreSQL's own reason, and its message is
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_database_refuses_fails_its_node_without_blocking_the_others() {
    let mut w = World::new("refused_result").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let one = |id: &str| json!({"nodes":[{"id": id, "type":"util.noop"}]});
    let id = w.submit(&c, one("a")).await;
    let mut goods = Vec::new();
    for _ in 0..5 {
        goods.push(w.submit(&c, one("g")).await);
    }
    let other = w.submit(&c, one("b")).await;
    let node_run = |run: Value, n: &str| -> Uuid { node(&run, n).unwrap()["node_run_id"].as_str().unwrap().parse().unwrap() };
    let a = node_run(w.get_run(&c, id).await, "a");
    let mut g = Vec::new();
    for r in &goods {
        g.push(node_run(w.get_run(&c, *r).await, "g"));
    }
    let end = |i: usize, node_run_id: Uuid, outputs: Value| Finished {
        cache: None,
        node_run_id,
        attempt: 1,
        worker_id: format!("impostor-{i}"),
        started_at_us: 1,
        finished_at_us: 2,
        outcome: Outcome::Succeeded { outputs },
    };
    let good = |i: usize| end(i, g[i], json!({"good": i}));
    let message = |body: ResultBody| wire::encode(&ResultMessage { v: WIRE_VERSION, body });
    // PostgreSQL refuses a NUL character in jsonb text: no retry can store this result.
    let mixed = message(ResultBody::FinishedBatch(vec![good(1), end(9, a, json!({"text": "nul\u{0}here"})), good(2)]));

    // To read the messages as one batch, the consumer is held up while they arrive: the
    // database is away, so it is stuck retrying a batch of one (good 0).
    w.database_outage().await;
    let results = w.topology.results_exchange();
    w.publish_raw(&results, "", &message(ResultBody::Finished(good(0)))).await;
    let deadline = std::time::Instant::now() + LONG;
    while !plain(&w.log("coordinator")).contains("applying results failed; retrying") {
        assert!(std::time::Instant::now() < deadline, "the coordinator never tried to apply the first result");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for bytes in [message(ResultBody::Finished(good(3))), mixed.clone(), message(ResultBody::Finished(good(4)))] {
        w.publish_raw(&results, "", &bytes).await;
    }
    let queue = w.topology.results_queue();
    wait_until("the results to be delivered to the coordinator", LONG, || async { (w.queue_depth(&queue).await == 0).then_some(()) }).await;
    w.database_back().await;

    let dead = w.topology.dead_queue();
    wait_until("the refused result to be dead-lettered", LONG, || async { (w.queue_depth(&dead).await == 1).then_some(()) }).await;
    // The three messages were one batch, which the database refused as a whole.
    let log = plain(&w.log("coordinator"));
    let at = log.find("the database refused a result batch").unwrap_or_else(|| panic!("no refused batch in the log:\n{log}"));
    let batch: String = log[at..].split("batch=").nth(1).unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(batch, "3", "the refused result was not read in one batch with the good ones: {}", &log[at..]);
    // PostgreSQL's reason (SQLSTATE 22P05): the NUL escape cannot be stored as text.
    let pg_reason = ["unsupported Unicode escape sequence", "cannot be converted to text"];

    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let a_node = node(&run, "a").unwrap();
    assert_eq!(a_node["status"], "failed");
    let msg = a_node["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("could not be stored") && msg.contains("dead-letter"), "{msg}");
    assert!(pg_reason.iter().all(|r| msg.contains(r)), "the node's error lacks the database's reason: {msg}");
    assert_eq!(a_node["outputs"], Value::Null, "nothing of the refused result was stored: {a_node:#}");
    for (i, r) in goods.iter().enumerate() {
        let run = w.wait_run(&c, *r, LONG).await;
        assert_eq!(run["status"], "succeeded", "good result {i} of the batch was not applied: {run:#}");
        assert_eq!(node(&run, "g").unwrap()["outputs"], json!({"good": i}));
    }

    // The dead letter is the mixed message, with the database's reason.
    let got = only(w.take_dead_letters().await);
    assert_eq!(got.data, mixed);
    let reason = got.reason();
    assert!(reason.contains("result refused by the database") && pg_reason.iter().all(|r| reason.contains(r)), "{reason}");

    // Nothing else was held back.
    w.start_worker("w1", &[]);
    assert_eq!(w.wait_run(&c, other, LONG).await["status"], "succeeded");
}

/// A process log without its colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_graphs_get_422_with_every_problem_and_write_nothing() {
    let mut w = World::new("invalid").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let graph = json!({
        "nodes": [{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"},{"id":"r","type":"render_magic"}],
        "edges": [{"from":"a","to":"b"},{"from":"b","to":"a"},{"from":"r","to":"ghost"}]
    });
    let resp = w.http.post(format!("{}/v1/runs", c.url)).json(&json!({"subject": {}, "graph": graph})).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_graph");
    let problems = body["problems"].as_array().unwrap();
    let find = |code: &str| problems.iter().find(|p| p["code"] == code).unwrap_or_else(|| panic!("no {code} in {body:#}"));
    assert!(find("cycle")["message"].as_str().unwrap().contains("a, b"));
    let unknown = find("unknown_node_type");
    assert_eq!(unknown["node_id"], "r");
    assert!(unknown["message"].as_str().unwrap().contains("`GET /v1/nodes` lists the node types"));
    assert_eq!(find("dangling_edge")["edge"], 2);

    let cyclic = json!({"nodes":[{"id":"x","type":"util.noop"}],"edges":[{"from":"x","to":"x"}]});
    let resp = w.http.post(format!("{}/v1/runs", c.url)).json(&json!({"subject": {}, "graph": cyclic})).send().await.unwrap();
    assert_eq!(resp.status(), 422);

    let resp = w.http.post(format!("{}/v1/runs", c.url)).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("not a valid request"));

    for table in ["runs", "node_runs", "node_attempts", "outbox"] {
        assert_eq!(w.count(&format!("SELECT count(*) FROM {table}")).await, 0, "{table} was written");
    }
    let resp = w.http.get(format!("{}/v1/runs/{}", c.url, Uuid::now_v7())).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let doc: Value = w.http.get(format!("{}/v1/openapi.json", c.url)).send().await.unwrap().json().await.unwrap();
    for path in ["/v1/runs", "/v1/runs/{id}", "/readyz"] {
        assert!(doc["paths"][path].is_object(), "the OpenAPI document lacks {path}");
    }
    assert!(doc.to_string().contains("unknown_node_type"), "problem codes are documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_first_run() {
    let mut w = World::new("idempotency").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let body = json!({"subject": {"order_line": 7}, "graph": {"nodes": [{"id": "a", "type": "util.noop"}]}});
    let post = |body: Value| w.http.post(format!("{}/v1/runs", c.url)).header("Idempotency-Key", "order-7-still").json(&body).send();
    let first = post(body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post(body.clone()).await.unwrap();
    assert_eq!(again.status(), 200, "a retried request returns the first run");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["run_id"], first["run_id"]);
    assert_eq!(first["id"], first["run_id"], "the run is `id`, as `GET /v1/runs/{{id}}` calls it");
    let other = post(json!({"subject": {"order_line": 8}, "graph": body["graph"]})).await.unwrap();
    assert_eq!(other.status(), 422);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"], "idempotency_key_reused");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(w.count("SELECT count(*) FROM outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_worker_is_detected_by_heartbeat_and_its_late_result_ignored() {
    let mut w = World::new("hung_worker").await;
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RECOVERY__HEARTBEAT_TIMEOUT", "2s")]).await;
    // One slot, so the frozen worker cannot also swallow the retry (a free prefetch slot on
    // a frozen process holds a task until the broker's AMQP heartbeat gives up on it).
    w.start_worker("w1", &[("RENDERFLEET_CONCURRENCY", "1")]);
    let id = w
        .submit(
            &c,
            json!({"nodes":[{"id":"s","type":"util.sleep","params":{"ms":800}},{"id":"t","type":"util.noop"}],
                                  "edges":[{"from":"s","to":"t"}]}),
        )
        .await;
    w.wait_node(&c, id, "s", "running", LONG).await;
    // Frozen, not dead: the broker keeps the task with w1, only the heartbeats stop.
    w.signal("w1", Signal::SIGSTOP);
    w.start_worker("w2", &[]);
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let s = node(&run, "s").unwrap();
    assert_eq!(s["attempt"], 2);
    assert_eq!(s["worker_id"], "w2");
    let attempts = s["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], "lost");
    assert_eq!(attempts[0]["worker_id"], "w1");
    assert!(attempts[0]["error"]["message"].as_str().unwrap().contains("stopped heartbeating"));
    assert_eq!(attempts[1]["status"], "succeeded");

    // Thawed, w1 finishes attempt 1 and reports it: the stale result changes nothing.
    let url = format!("{}/metrics", c.url);
    let ignored = metric(&w.http, &url, "renderfleet_results_total", &[("outcome", "ignored")]).await;
    w.signal("w1", Signal::SIGCONT);
    let http = w.http.clone();
    wait_until("the stale result to be ignored", LONG, || {
        let (http, url) = (http.clone(), url.clone());
        async move { (metric(&http, &url, "renderfleet_results_total", &[("outcome", "ignored")]).await > ignored).then_some(()) }
    })
    .await;
    let after = w.get_run(&c, id).await;
    assert_eq!(node(&after, "s").unwrap(), s, "the late result of attempt 1 changed the node");
    assert_eq!(node(&after, "t").unwrap()["attempt"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_within_grace_and_requeues_past_it() {
    let mut w = World::new("sigterm").await;
    let c = w.start_coordinator("coordinator", &[]).await;

    // Within the grace period: the task in hand finishes, then the worker exits cleanly.
    w.start_worker("patient", &[("RENDERFLEET_SHUTDOWN_GRACE", "10s")]);
    let id = w.submit(&c, json!({"nodes":[{"id":"s","type":"util.sleep","params":{"ms":700}}]})).await;
    w.wait_node(&c, id, "s", "running", LONG).await;
    w.signal("patient", Signal::SIGTERM);
    let status = w.wait_exit("patient", LONG).await;
    assert!(status.success(), "worker exit: {status}");
    let run = w.get_run(&c, id).await;
    let run = if run["status"] == "running" { w.wait_run(&c, id, LONG).await } else { run };
    assert_eq!(run["status"], "succeeded");
    assert_eq!(node(&run, "s").unwrap()["worker_id"], "patient");

    // Past the grace period: the task goes back to the queue and another worker runs it.
    w.start_worker("hasty", &[("RENDERFLEET_SHUTDOWN_GRACE", "200ms")]);
    let id = w.submit(&c, json!({"nodes":[{"id":"s","type":"util.sleep","params":{"ms":3000}}]})).await;
    w.wait_node(&c, id, "s", "running", LONG).await;
    w.signal("hasty", Signal::SIGTERM);
    let status = w.wait_exit("hasty", LONG).await;
    assert!(status.success(), "worker exit: {status}");
    assert!(w.log("hasty").contains("requeueing the tasks still in hand"));
    w.start_worker("next", &[]);
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded");
    let s = node(&run, "s").unwrap();
    assert_eq!(s["worker_id"], "next");
    assert_eq!(s["attempt"], 1, "a requeue after SIGTERM is not a failed attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_start_up_with_the_url_and_the_fix() {
    let mut w = World::new("unreachable").await;
    let port = renderfleet_tests::free_port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/nowhere");
    w.spawn_coordinator("coordinator", &[("DATABASE_URL", &url), ("RENDERFLEET_STARTUP_TIMEOUT", "1s")]);
    let status = w.wait_exit("coordinator", LONG).await;
    assert!(!status.success());
    let log = w.log("coordinator");
    assert!(log.contains(&format!("cannot reach PostgreSQL at postgres://postgres:***@127.0.0.1:{port}/nowhere")), "{log}");
    assert!(log.contains("set DATABASE_URL"), "{log}");
    assert!(!log.contains("secret"), "the password leaked into the log");
    assert!(!log.contains("panicked"), "{log}");

    let port = renderfleet_tests::free_port();
    let amqp = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    w.start_worker("worker", &[("AMQP_URL", &amqp), ("RENDERFLEET_STARTUP_TIMEOUT", "1s")]);
    let status = w.wait_exit("worker", LONG).await;
    assert!(!status.success());
    let log = w.log("worker");
    assert!(log.contains(&format!("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:{port}/%2f")), "{log}");
    assert!(log.contains("set AMQP_URL"), "{log}");
}

/// A cancel withdraws what has not started: a retry waiting out its backoff in the outbox
/// is never sent, and tasks already waiting in a task queue never start a module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_withdraws_tasks_waiting_in_the_outbox_and_in_queues() {
    let mut w = World::new("cancel_withdraws").await;
    // A queue window deep enough for every sleep, so that they wait in the broker queue
    // (the scheduler would otherwise hold most of them in the outbox; tests/scheduling.rs).
    let c = w
        .start_coordinator(
            "coordinator",
            &[("RENDERFLEET_RETRY__BASE", "60s"), ("RENDERFLEET_RETRY__MAX", "60s"), ("RENDERFLEET_SCHEDULING__QUEUE_MIN", "10")],
        )
        .await;
    let fails = w.start_worker("w-fail", &[("RENDERFLEET_MODULES", "fail")]);
    let sleeps = w.start_worker("w-sleep", &[("RENDERFLEET_MODULES", "sleep"), ("RENDERFLEET_CONCURRENCY", "1")]);
    let mut nodes = vec![json!({"id": "f", "type": "util.fail", "params": {"times": 5}, "max_attempts": 3})];
    nodes.extend((0..5).map(|i| json!({"id": format!("s{i}"), "type": "util.sleep", "params": {"ms": 3000}})));
    let id = w.submit(&c, json!({"nodes": nodes})).await;
    // f's retry waits in the outbox; one sleep runs, the others wait in the sleep queue.
    let run = wait_until("a retry in backoff and a sleep running", LONG, || async {
        let run = w.get_run(&c, id).await;
        let f = node(&run, "f").unwrap();
        let running = (0..5).filter(|i| node(&run, &format!("s{i}")).unwrap()["status"] == "running").count();
        (f["attempt"] == 2 && f["status"] == "queued" && running == 1).then_some(run)
    })
    .await;
    let succeeded = (0..5).filter(|i| node(&run, &format!("s{i}")).unwrap()["status"] == "succeeded").count() as f64;
    let waiting = 4.0 - succeeded;
    assert!(waiting >= 1.0, "nothing left waiting in the queue: {run:#}");
    let resp = w.http.post(format!("{}/v1/runs/{id}/cancel", c.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let sleep = |outcome: &'static str| {
        let (http, url) = (w.http.clone(), sleeps.clone());
        async move { metric(&http, &url, "renderfleet_worker_tasks_total", &[("module", "sleep"), ("outcome", outcome)]).await }
    };
    wait_until("every sleep handled", LONG, || async {
        (sleep("withdrawn").await + sleep("cancelled").await + sleep("succeeded").await >= 5.0).then_some(())
    })
    .await;
    // The running sleep may finish before the cancel reaches it, and one that the worker
    // took just before the control message is stopped at once; none of the others starts.
    assert!(sleep("succeeded").await <= succeeded + 1.0, "a waiting sleep ran to its end");
    assert!(sleep("withdrawn").await >= waiting - 1.0, "waiting sleeps started: {} withdrawn of {waiting}", sleep("withdrawn").await);
    assert_eq!(metric(&w.http, &fails, "renderfleet_worker_tasks_total", &[("module", "fail")]).await, 1.0, "the retry never ran");
    assert_eq!(w.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL").await, 0, "the retry's outbox row is withdrawn");
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "cancelled");
}

/// A task that takes down every worker it lands on (here: each is SIGKILLed as soon as it
/// starts the task) is redelivered only `max_deliveries` times; then its node fails saying
/// so, and the next worker lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_is_bounded_by_its_deliveries() {
    let mut w = World::new("poison").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let id = w.submit(&c, json!({"nodes": [{"id": "p", "type": "util.sleep", "params": {"ms": 60000}}]})).await;
    let db = w.db().await;
    let mut killed = 0;
    let failed = loop {
        assert!(killed <= 4, "the task was still delivered after {killed} workers died with it");
        let name = format!("w{killed}");
        w.start_worker(&name, &[("RENDERFLEET_MAX_DELIVERIES", "3")]);
        let took = wait_until(&format!("{name} to take the task or the node to fail"), LONG, || async {
            let row = db.query_one("SELECT status, worker_id FROM node_runs WHERE run_id = $1", &[&id]).await.ok()?;
            let (status, worker): (String, Option<String>) = (row.get("status"), row.get("worker_id"));
            match status.as_str() {
                "failed" => Some(false),
                "running" if worker.as_deref() == Some(name.as_str()) => Some(true),
                _ => None,
            }
        })
        .await;
        if !took {
            break w.wait_run(&c, id, LONG).await;
        }
        w.kill(&name);
        killed += 1;
    };
    assert_eq!(killed, 3, "three workers died with the task; the fourth refused it");
    let p = node(&failed, "p").unwrap();
    assert_eq!(p["status"], "failed", "{p:#}");
    assert_eq!(p["error"]["kind"], "poison", "{p:#}");
    assert!(p["error"]["message"].as_str().unwrap().contains("delivered 3 times"), "{p:#}");
    assert!(w.alive(&format!("w{killed}")), "the worker that refused the poison lives");
    assert_eq!(w.queue_depth(&w.topology.task_queue("sleep")).await, 0);
    assert_eq!(w.queue_depth(&w.topology.dead_queue()).await, 1, "the poison message is kept for inspection");
}

/// SIGTERM with a free slot: the draining worker takes no new task (it waits in its queue
/// until another worker starts), and it keeps heartbeating for itself and its task in hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_takes_no_new_task_and_keeps_heartbeating() {
    let mut w = World::new("draining").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let interval = Duration::from_millis(300);
    w.start_worker(
        "draining",
        &[("RENDERFLEET_CONCURRENCY", "2"), ("RENDERFLEET_SHUTDOWN_GRACE", "60s"), ("RENDERFLEET_HEARTBEAT_INTERVAL", "300ms")],
    );
    let long = w.submit(&c, json!({"nodes":[{"id":"s","type":"util.sleep","params":{"ms":8000}}]})).await;
    w.wait_node(&c, long, "s", "running", LONG).await;
    let db = w.db().await;
    let state = "SELECT w.status, w.last_seen, n.status, n.worker_id, n.heartbeat_at FROM workers w, node_runs n \
                 WHERE w.id = 'draining' AND n.run_id = $1";
    w.signal("draining", Signal::SIGTERM);
    let (drained_seen, drained_beat): (DateTime<Utc>, DateTime<Utc>) = wait_until("the worker to report draining", LONG, || async {
        let r = db.query_one(state, &[&long]).await.unwrap();
        (r.get::<_, String>(0) == "draining")
            .then(|| (r.get(1), r.get::<_, Option<DateTime<Utc>>>(4).expect("a running task has a heartbeat")))
    })
    .await;

    // One slot is free, but the worker is draining: the new task must wait in its queue.
    let next = w.submit(&c, json!({"nodes":[{"id":"n","type":"util.noop"}]})).await;
    let queue = w.topology.task_queue("noop");
    wait_until("the new task to wait in its queue", LONG, || async { (w.queue_depth(&queue).await == 1).then_some(()) }).await;
    let waiting = "SELECT status, worker_id FROM node_runs WHERE run_id = $1";
    // Meanwhile the heartbeats go on: the worker's `last_seen` and its task's `heartbeat_at`
    // take new values, at least 4 intervals past the moment it began draining.
    let (mut seen, mut beats) = (BTreeSet::new(), BTreeSet::new());
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let r = db.query_one(state, &[&long]).await.unwrap();
        let (status, last_seen, s_status, s_worker): (String, DateTime<Utc>, String, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(status, "draining", "the worker stopped draining before its task ended");
        assert_eq!((s_status.as_str(), s_worker.as_deref()), ("running", Some("draining")), "the task in hand is no longer the worker's");
        let heartbeat_at: DateTime<Utc> = r.get::<_, Option<DateTime<Utc>>>(4).expect("a running task has a heartbeat");
        let n = db.query_one(waiting, &[&next]).await.unwrap();
        assert_eq!((n.get::<_, String>(0).as_str(), n.get::<_, Option<String>>(1)), ("queued", None), "the draining worker took a task");
        seen.insert(last_seen);
        beats.insert(heartbeat_at);
        let past = |t: DateTime<Utc>, since: DateTime<Utc>| (t - since).to_std().unwrap_or_default() >= interval * 4;
        if seen.len() >= 5 && beats.len() >= 5 && past(last_seen, drained_seen) && past(heartbeat_at, drained_beat) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "heartbeats stopped while draining: last_seen {seen:?}, heartbeat_at {beats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.queue_depth(&queue).await, 1, "the new task is still in its queue");
    assert!(w.alive("draining"));

    // A worker started now takes it; the draining one finishes its own task and exits.
    w.start_worker("fresh", &[]);
    let run = w.wait_run(&c, next, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let n = node(&run, "n").unwrap();
    assert_eq!(n["worker_id"], "fresh");
    assert_eq!(n["attempts"].as_array().unwrap().len(), 1, "{n:#}");
    let run = w.wait_run(&c, long, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let s = node(&run, "s").unwrap();
    assert_eq!((s["worker_id"].as_str(), s["attempt"].as_i64()), (Some("draining"), Some(1)), "{s:#}");
    let status = w.wait_exit("draining", LONG).await;
    assert!(status.success(), "worker exit: {status}");
}

/// A valid task for `noop` routed to the `sleep` queue, whose worker serves only `sleep`:
/// the attempt fails naming the worker and the misrouting, and the message is dead-lettered
/// with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_the_wrong_queue_fails_its_attempt_and_is_dead_lettered() {
    let mut w = World::new("wrong_queue").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    // The real task is taken away; a copy goes to the sleep queue instead.
    let (id, a) = intercept_first_task(&w, &c).await;
    let task = TaskMessage {
        avoid: Vec::new(),
        cache: None,
        v: WIRE_VERSION,
        run_id: id,
        node_run_id: a,
        node_id: "a".into(),
        module_key: "noop".into(),
        attempt: 1,
        params: json!({}),
        timeout_ms: 1000,
        inputs: Default::default(),
    };
    let bytes = wire::encode(&task);
    let sleep_queue = w.topology.task_queue("sleep");
    w.publish_raw(&w.topology.tasks_exchange(), "sleep", &bytes).await;
    assert_eq!(w.queue_depth(&sleep_queue).await, 1, "the routing key `sleep` leads to the sleep queue");
    w.start_worker("w-sleep", &[("RENDERFLEET_MODULES", "sleep")]);

    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let a_node = node(&run, "a").unwrap();
    assert_eq!(a_node["status"], "failed");
    assert_eq!(a_node["attempt"], 1);
    assert_eq!(a_node["error"]["kind"], "unsupported");
    let msg = a_node["error"]["message"].as_str().unwrap();
    assert!(msg.contains("worker `w-sleep`") && msg.contains("cannot run this task"), "the message does not name the worker: {msg}");
    assert!(msg.contains("module `noop`") && msg.contains("routing key `sleep`"), "the message does not say what was misrouted: {msg}");
    assert!(msg.contains("a task's routing key must be its module"), "the message gives no fix: {msg}");
    assert_eq!(node(&run, "b").unwrap()["status"], "skipped");

    let dead = w.topology.dead_queue();
    wait_until("the message to be dead-lettered", LONG, || async { (w.queue_depth(&dead).await == 1).then_some(()) }).await;
    let got = only(w.take_dead_letters().await);
    assert_eq!(got.data, bytes, "the dead letter is the misrouted task");
    let reason = got.reason();
    assert!(reason.contains("task for module `noop` arrived with routing key `sleep`"), "{reason}");
    assert_eq!(w.queue_depth(&sleep_queue).await, 0);

    // The worker lives on and serves its own queue.
    assert!(w.alive("w-sleep"));
    let id = w.submit(&c, json!({"nodes":[{"id":"s","type":"util.sleep","params":{"ms":10}}]})).await;
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
}

/// Garbage on the results exchange: dead-lettered with its reason; the coordinator lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_result_is_dead_lettered_and_the_coordinator_lives_on() {
    let mut w = World::new("garbage_result").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    w.publish_raw(&w.topology.results_exchange(), "", b"\xc1 not a result").await;
    let dead = w.topology.dead_queue();
    wait_until("the garbage to be dead-lettered", LONG, || async { (w.queue_depth(&dead).await == 1).then_some(()) }).await;
    let got = only(w.take_dead_letters().await);
    assert_eq!(got.data, b"\xc1 not a result");
    let reason = got.reason();
    assert!(reason.contains("undecodable result"), "{reason}");
    let dead_lettered =
        metric(&w.http, &format!("{}/metrics", c.url), "renderfleet_dead_lettered_total", &[("source", "coordinator")]).await;
    assert_eq!(dead_lettered, 1.0);

    assert!(w.alive("coordinator"), "the coordinator survived the garbage");
    w.wait_ready(&c).await;
    let id =
        w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"},{"id":"b","type":"util.noop"}],"edges":[{"from":"a","to":"b"}]})).await;
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
}

/// Retries wait `base · 2^(n−1)` after the n-th failure: with a 200 ms base, the gaps between
/// an attempt's end and the next one's start are at least 200, 400 and 800 ms, and grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_doubles_from_the_base() {
    let mut w = World::new("backoff").await;
    let base = Duration::from_millis(200);
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RETRY__BASE", "200ms"), ("RENDERFLEET_RETRY__MAX", "5s")]).await;
    w.start_worker("w1", &[]);
    let id = w.submit(&c, json!({"nodes":[{"id":"f","type":"util.fail","params":{"times":3},"max_attempts":4}]})).await;
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let f: Uuid = node(&run, "f").unwrap()["node_run_id"].as_str().unwrap().parse().unwrap();
    let rows = w
        .db()
        .await
        .query("SELECT attempt, status, started_at, finished_at FROM node_attempts WHERE node_run_id = $1 ORDER BY attempt", &[&f])
        .await
        .unwrap();
    let statuses: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: Vec<(i32, String)> =
        [(1, "failed"), (2, "failed"), (3, "failed"), (4, "succeeded")].iter().map(|(a, s)| (*a, s.to_string())).collect();
    assert_eq!(statuses, expected);
    let mut gaps = Vec::new();
    for pair in rows.windows(2) {
        let (finished, started): (DateTime<Utc>, DateTime<Utc>) = (pair[0].get(3), pair[1].get(2));
        gaps.push((started - finished).to_std().unwrap_or_default());
    }
    for (i, gap) in gaps.iter().enumerate() {
        let delay = base * 2u32.pow(i as u32);
        assert!(*gap >= delay, "attempt {} started {gap:?} after attempt {} ended; the backoff is {delay:?}", i + 2, i + 1);
    }
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "the gaps do not grow: {gaps:?}");
}

/// The broker loses a module's queue and then drops every connection: the coordinator
/// redeclares the whole topology on reconnecting, so the queue is back (and bound) before
/// any worker that serves it exists, and runs through it succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_queue_is_redeclared_after_a_reconnect() {
    let mut w = World::new("redeclare").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[("RENDERFLEET_MODULES", "noop")]);
    let id = w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"}]})).await;
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");

    let queue = w.topology.task_queue("fail");
    assert!(queue_exists(&w, &queue).await);
    let conn = w.amqp().await;
    conn.create_channel().await.unwrap().queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    assert!(!queue_exists(&w, &queue).await, "the queue was not deleted");

    let closed = renderfleet_tests::close_broker_connections(&format!(" {} ", w.topology.prefix()));
    assert_eq!(closed, 2, "the coordinator's and the worker's connections");
    wait_until("the queue to be declared again", LONG, || async { queue_exists(&w, &queue).await.then_some(()) }).await;
    w.wait_ready(&c).await;

    // The task of a `fail` node reaches the redeclared queue (it is bound again), and waits
    // there for a worker that serves it.
    let id = w.submit(&c, json!({"nodes":[{"id":"f","type":"util.fail","params":{"times":0}}]})).await;
    wait_until("the task to reach the redeclared queue", LONG, || async { (w.queue_depth(&queue).await == 1).then_some(()) }).await;
    w.start_worker("w2", &[("RENDERFLEET_MODULES", "fail")]);
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
    // The worker that lost its connection serves its queue again.
    let id = w.submit(&c, json!({"nodes":[{"id":"a","type":"util.noop"}]})).await;
    let run = w.wait_run(&c, id, LONG).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(node(&run, "a").unwrap()["worker_id"], "w1");
}

/// Whether `queue` exists on the broker (a passive declare, on a connection of its own: a
/// missing queue closes the channel).
async fn queue_exists(w: &World, queue: &str) -> bool {
    let conn = w.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let found = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, "done".into()).await;
    found
}

/// A worker whose clock runs ahead reports an end later than the coordinator's clock: the
/// successor it releases is still queued after its predecessor finished (events stay in
/// order), and the timestamps come from the wall clock at the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_successor_is_never_queued_before_its_predecessor_finished() {
    let mut w = World::new("event_order").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let id = w.submit(&c, chain(2, json!({"type": "util.noop"}))).await;
    let run = w.get_run(&c, id).await;
    let n0: Uuid = node(&run, "n0").unwrap()["node_run_id"].as_str().unwrap().parse().unwrap();
    let ahead = chrono::Utc::now().timestamp_micros() + 10_000_000;
    let end = Finished {
        cache: None,
        node_run_id: n0,
        attempt: 1,
        worker_id: "w-fast-clock".into(),
        started_at_us: ahead - 1000,
        finished_at_us: ahead,
        outcome: Outcome::Succeeded { outputs: json!({}) },
    };
    let message = wire::encode(&ResultMessage { v: WIRE_VERSION, body: ResultBody::Finished(end) });
    w.publish_raw(&w.topology.results_exchange(), "", &message).await;
    let n1 = w.wait_node(&c, id, "n1", "queued", LONG).await;
    let finished = time(&node(&w.get_run(&c, id).await, "n0").unwrap()["finished_at"]);
    assert!(time(&n1["queued_at"]) >= finished, "n1 queued at {} before n0 finished at {finished}", n1["queued_at"]);
    let outbox: DateTime<Utc> = w
        .db()
        .await
        .query_one("SELECT created_at FROM outbox o JOIN node_runs n ON n.id = o.node_run_id WHERE n.node_id = 'n1'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(outbox <= chrono::Utc::now() + chrono::Duration::seconds(1), "outbox rows carry the coordinator's clock: {outbox}");
    w.start_worker("w1", &[]);
    assert_eq!(w.wait_run(&c, id, LONG).await["status"], "succeeded");
}

/// With several coordinators, one that has not read everything it holds (here a stand-in:
/// a watermark that is refreshed but never caught up, as a coordinator cut off from the
/// database would leave it) keeps every sweeper from judging; once it has been gone for the
/// live window, attempts are judged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_has_not_caught_up_holds_every_sweeper_back() {
    let mut w = World::new("watermarks").await;
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_RECOVERY__HEARTBEAT_TIMEOUT", "2s")]).await;
    w.start_worker("w1", &[]);
    let id = w.submit(&c, json!({"nodes": [{"id": "s", "type": "util.sleep", "params": {"ms": 60000}, "max_attempts": 2}]})).await;
    w.wait_node(&c, id, "s", "running", LONG).await;
    let db = w.db().await;
    let other = "coordinator-elsewhere";
    let refresh = "INSERT INTO coordinator_watermarks (instance, caught_up_at, seen_at) VALUES ($1, NULL, clock_timestamp())
                   ON CONFLICT (instance) DO UPDATE SET seen_at = clock_timestamp()";
    db.execute(refresh, &[&other]).await.unwrap();
    w.signal("w1", Signal::SIGSTOP); // its heartbeats stop
                                     // Three timeouts with the other coordinator live and behind: nothing is judged.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        db.execute(refresh, &[&other]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = node(&w.get_run(&c, id).await, "s").unwrap().clone();
    assert_eq!(
        (s["attempt"].as_i64(), s["status"].as_str()),
        (Some(1), Some("running")),
        "judged while another coordinator was behind: {s:#}"
    );
    // Gone: after the live window its watermark no longer counts.
    let lost = wait_until("the quiet attempt to be judged lost", LONG, || async {
        let run = w.get_run(&c, id).await;
        node(&run, "s").filter(|n| n["attempt"] == 2).cloned()
    })
    .await;
    let first = &lost["attempts"][0];
    assert_eq!(first["status"], "lost", "{lost:#}");
    assert!(first["error"]["message"].as_str().unwrap().contains("stopped heartbeating"), "{lost:#}");
    w.signal("w1", Signal::SIGCONT);
}
