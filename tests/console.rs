//! Run inspection: cancelling and retrying runs through the API (the console's buttons call
//! the same code), against the real broker, database and workers.

use renderfleet_tests::{metric, node, wait_until, World};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn post(w: &World, url: String) -> (u16, Value) {
    let resp = w.http.post(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_runs_running_task_is_stopped_on_its_worker() {
    let mut w = World::new("cancel").await;
    let c = w.start_coordinator("c1", &[]).await;
    let metrics = w.start_worker("w1", &[]);
    let id = w
        .submit(
            &c,
            json!({"nodes": [{"id": "long", "type": "util.sleep", "params": {"ms": 60000}}, {"id": "after", "type": "util.noop"}],
                          "edges": [{"from": "long", "to": "after"}]}),
        )
        .await;
    w.wait_node(&c, id, "long", "running", Duration::from_secs(30)).await;
    let t = Instant::now();
    let (status, body) = post(&w, format!("{}/v1/runs/{id}/cancel", c.url)).await;
    assert_eq!((status, body["workers_told"].as_bool()), (200, Some(true)), "{body}");
    // The sleeping attempt is stopped on the worker, not left to run its minute.
    let long = wait_until("the running task to be stopped", Duration::from_secs(20), || async {
        let run = w.get_run(&c, id).await;
        node(&run, "long").filter(|n| n["status"] == "failed").cloned()
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(15), "stopped after {:?}", t.elapsed());
    assert_eq!(long["error"]["kind"], "cancelled", "{long}");
    let run = w.get_run(&c, id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(node(&run, "after").unwrap()["status"], "skipped");
    assert_eq!(metric(&w.http, &metrics, "renderfleet_worker_tasks_total", &[("outcome", "cancelled")]).await, 1.0);
    // Cancelling twice is refused with the run's state, and an unknown run is 404.
    let (status, body) = post(&w, format!("{}/v1/runs/{id}/cancel", c.url)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("cancelled"), "{body}");
    let (status, _) = post(&w, format!("{}/v1/runs/{}/cancel", c.url, uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_failed_run_runs_its_failed_node_again_and_completes() {
    let mut w = World::new("retry").await;
    let c = w.start_coordinator("c1", &[]).await;
    w.start_worker("w1", &[]);
    // Fails its first two attempts; two are allowed, so the run fails.
    let id = w
        .submit(
            &c,
            json!({"nodes": [{"id": "flaky", "type": "util.fail", "params": {"times": 2}, "max_attempts": 2},
                                     {"id": "after", "type": "util.noop"}],
                          "edges": [{"from": "flaky", "to": "after"}]}),
        )
        .await;
    let run = w.wait_run(&c, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(node(&run, "after").unwrap()["status"], "skipped");
    let (status, body) = post(&w, format!("{}/v1/runs/{id}/retry", c.url)).await;
    assert_eq!((status, body["nodes"].as_i64()), (200, Some(2)), "{body}");
    let run = w.wait_run(&c, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let flaky = node(&run, "flaky").unwrap();
    assert_eq!(flaky["attempt"], 3, "a new attempt: {flaky}");
    assert_eq!(flaky["attempts"].as_array().unwrap().len(), 3, "every attempt is kept: {flaky}");
    assert_eq!(run["nodes_done"], 2);
    // A succeeded run cannot be retried.
    let (status, _) = post(&w, format!("{}/v1/runs/{id}/retry", c.url)).await;
    assert_eq!(status, 409);
}
