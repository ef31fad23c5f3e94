//! The order system's side of render requests (README, "Render requests from the order
//! side"): batches where a bad line sinks nothing, cancelling a request with all its runs,
//! and a request's progress and estimated finish. No worker is needed: the runs wait.

use renderfleet_tests::*;
use serde_json::{json, Value};

/// A legacy output type: a request for it is one run of three nodes.
async fn legacy_output_type(w: &World, c: &Coord, key: &str) {
    let ot = json!({"key": key, "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 64}});
    let (status, e) = call(w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(ot)).await;
    assert_eq!(status, 201, "{e:#}");
}

fn line(key: &str, output_type: &str) -> Value {
    json!({"idempotency_key": key, "order_line_id": key, "subject": {"cad_file": "as1-oc-214.stp"}, "output_type": output_type})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_every_line_and_a_bad_line_sinks_nothing() {
    let mut w = World::new("req_batch").await;
    let c = w.start_coordinator("c1", &[]).await;
    legacy_output_type(&w, &c, "still-b").await;
    let mut unknown_field = line("ol-3", "still-b");
    unknown_field["urgency"] = json!("high");
    let mut no_key = line("ol-5", "still-b");
    no_key.as_object_mut().unwrap().remove("idempotency_key");
    let mut bad_priority = line("ol-6", "still-b");
    bad_priority["priority"] = json!("asap");
    let batch = json!({"requests": [line("ol-1", "still-b"), line("ol-2", "still-b"), unknown_field, line("ol-4", "no-such-type"), no_key, bad_priority]});
    let url = format!("{}/v1/render-requests/batch", c.url);
    let (status, answer) = call(&w, reqwest::Method::POST, url.clone(), Some(batch.clone())).await;
    assert_eq!(status, 200, "{answer:#}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 400, 422, 400, 400], "{answer:#}");
    assert_eq!((answer["created"].as_u64(), answer["existing"].as_u64(), answer["failed"].as_u64()), (Some(2), Some(0), Some(4)));
    assert_eq!(results.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    // Each refusal names its problem and the fix, as the single endpoint would.
    assert!(results[2]["error"]["message"].as_str().unwrap().contains("urgency"), "{:#}", results[2]);
    assert_eq!(results[3]["error"]["error"], "unknown_output_type", "{:#}", results[3]);
    assert_eq!(results[4]["error"]["error"], "idempotency_key_required", "{:#}", results[4]);
    assert!(results[5]["error"]["message"].as_str().unwrap().contains("asap"), "{:#}", results[5]);
    assert_eq!(results[0]["request"]["order_line_id"], "ol-1");
    let (_, first) =
        call(&w, reqwest::Method::GET, format!("{}{}", c.url, results[0]["request"]["location"].as_str().unwrap()), None).await;
    assert_eq!((first["idempotency_key"].as_str(), first["run"]["status"].as_str()), (Some("ol-1"), Some("running")), "{first:#}");
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, 2, "only the good lines were written");
    // Listed newest first, each with the status of its answering run, a page at a time.
    let (status, page) = call(&w, reqwest::Method::GET, format!("{}/v1/render-requests?limit=1", c.url), None).await;
    assert_eq!(status, 200, "{page:#}");
    let next = page["next"].as_str().expect("a second page").to_string();
    let after: String = next
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let (_, rest) = call(&w, reqwest::Method::GET, format!("{}/v1/render-requests?limit=1&after={after}", c.url), None).await;
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|r| r["order_line_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{page:#} {rest:#}");
    assert!(listed.contains(&"ol-1") && listed.contains(&"ol-2"), "{listed:?}");
    assert!(page["items"][0]["status"] == "running" && page["items"][0]["nodes_total"] == 3, "{page:#}");
    let out = renderctl(&["--coordinator", &c.url, "requests", "list", "--output-type", "still-b"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("REQUEST") && text.contains("ol-1") && text.contains("running"), "{text}");

    // The same batch again: every good line answers with its first request, nothing new.
    let (_, again) = call(&w, reqwest::Method::POST, url.clone(), Some(batch)).await;
    assert_eq!((again["created"].as_u64(), again["existing"].as_u64(), again["failed"].as_u64()), (Some(0), Some(2), Some(4)), "{again:#}");
    assert_eq!(again["results"][0]["request"]["id"], results[0]["request"]["id"]);
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, 2);
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 2, "a retried batch renders nothing twice");

    // Too many lines, or none, is refused as a whole with the limit.
    let many: Vec<Value> = (0..1001).map(|i| line(&format!("m-{i}"), "still-b")).collect();
    let (status, refused) = call(&w, reqwest::Method::POST, url.clone(), Some(json!({"requests": many}))).await;
    assert_eq!(status, 400, "{refused:#}");
    assert!(refused["message"].as_str().unwrap().contains("1 to 1000"), "{refused:#}");
    let (status, _) = call(&w, reqwest::Method::POST, url, Some(json!({"requests": []}))).await;
    assert_eq!(status, 400);

    // renderctl sends a JSON Lines file, reports each refused line by its line number in the
    // file (a line that is not JSON is never sent) and exits 1.
    let file = w.data_dir.join("orders.jsonl");
    let text = [
        line("ol-7", "still-b").to_string(),
        String::new(),
        "{not json".into(),
        line("ol-8", "nope").to_string(),
        line("ol-1", "still-b").to_string(),
    ]
    .join("\n");
    std::fs::create_dir_all(&w.data_dir).unwrap();
    std::fs::write(&file, text).unwrap();
    let out = renderctl(&["--coordinator", &c.url, "requests", "submit-batch", file.to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("orders.jsonl:1: created"), "{stdout}");
    assert!(stdout.contains("orders.jsonl:3: not JSON"), "{stdout}");
    assert!(stdout.contains("orders.jsonl:4: 422 unknown_output_type"), "{stdout}");
    assert!(stdout.contains("orders.jsonl:5: seen before"), "{stdout}");
    assert!(stderr.contains("1 created, 1 seen before, 2 refused"), "{stderr}");
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_request_stops_all_its_runs_and_its_progress_and_estimate_are_shown() {
    let mut w = World::new("req_cancel").await;
    let c = w.start_coordinator("c1", &[]).await;
    // Shadow mode with every request sampled: a legacy run that answers and a graph shadow.
    let (_, graph) = call(&w, reqwest::Method::GET, format!("{}/v1/workflows/starters/order_line", c.url), None).await;
    let (status, wf) = call(
        &w,
        reqwest::Method::POST,
        format!("{}/v1/workflows", c.url),
        Some(json!({"name": "still", "family": "order_line", "graph": graph})),
    )
    .await;
    assert_eq!(status, 201, "{wf:#}");
    let ot = json!({"key": "still-s", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf["id"],
                    "legacy_preset": {"resolution": 64}, "rollout_mode": "shadow", "shadow_sample_pct": 100});
    let (status, e) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(ot)).await;
    assert_eq!(status, 201, "{e:#}");
    let (status, batch) = call(
        &w,
        reqwest::Method::POST,
        format!("{}/v1/render-requests/batch", c.url),
        Some(json!({"requests": [line("ol-c1", "still-s"), line("ol-c2", "still-s")]})),
    )
    .await;
    assert_eq!((status, batch["created"].as_u64()), (200, Some(2)), "{batch:#}");
    let first = batch["results"][0]["request"]["id"].as_str().unwrap().to_string();
    let second = batch["results"][1]["request"]["id"].as_str().unwrap().to_string();
    let runs_of = |id: &str| format!("SELECT count(*) FROM runs WHERE request_id = '{id}' AND status = 'running'");
    assert_eq!(w.count(&runs_of(&first)).await, 2, "a legacy run and its shadow");

    // Progress from the answering run; no estimate without a finished run of the type.
    let view = |id: &str| format!("{}/v1/render-requests/{id}", c.url);
    let (_, r) = call(&w, reqwest::Method::GET, view(&first), None).await;
    assert_eq!(r["progress"], json!({"nodes_done": 0, "nodes_total": 3, "fraction": 0.0}), "{r:#}");
    assert_eq!(r["estimate"], Value::Null, "{r:#}");

    // Cancel: every run of the request, shadow included, in one call; the other request runs on.
    let url = format!("{}/v1/render-requests/{first}/cancel", c.url);
    let (status, cancelled) = call(&w, reqwest::Method::POST, url.clone(), Some(json!({"reason": "order withdrawn"}))).await;
    assert_eq!(status, 200, "{cancelled:#}");
    assert_eq!(cancelled["runs"].as_array().unwrap().len(), 2, "{cancelled:#}");
    assert_eq!(w.count(&runs_of(&first)).await, 0);
    assert_eq!(w.count(&format!("SELECT count(*) FROM runs WHERE request_id = '{first}' AND status = 'cancelled'")).await, 2);
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM node_runs n JOIN runs r ON r.id = n.run_id WHERE r.request_id = '{first}' AND n.status <> 'skipped'"
        ))
        .await,
        0
    );
    assert_eq!(w.count(&format!("SELECT count(*) FROM outbox o JOIN node_runs n ON n.id = o.node_run_id JOIN runs r ON r.id = n.run_id WHERE r.request_id = '{first}' AND o.sent_at IS NULL")).await, 0, "its unsent tasks are withdrawn");
    assert_eq!(w.count(&runs_of(&second)).await, 2, "the other request is untouched");
    let (_, r) = call(&w, reqwest::Method::GET, view(&first), None).await;
    assert_eq!(r["status"], "cancelled", "{r:#}");
    assert_eq!(
        w.count(&format!("SELECT count(*) FROM events WHERE request_id = '{first}' AND type = 'request.cancelled'")).await,
        1,
        "one event for the order system"
    );
    let (status, again) = call(&w, reqwest::Method::POST, url, None).await;
    assert_eq!((status, again["error"].as_str()), (409, Some("request_finished")), "{again:#}");
    let (status, _) = call(&w, reqwest::Method::POST, format!("{}/v1/render-requests/{}/cancel", c.url, uuid::Uuid::nil()), None).await;
    assert_eq!(status, 404);

    // The estimate: the median request-to-finish time of the type's recent runs. No render
    // worker runs here, so a third request's run is finished as a worker would leave it.
    let body = json!({"order_line_id": "ol-c3", "subject": {"cad_file": "as1-oc-214.stp"}, "output_type": "still-s"});
    let resp = w.http.post(format!("{}/v1/render-requests", c.url)).header("Idempotency-Key", "ol-c3").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let third: Value = resp.json().await.unwrap();
    let db = w.db().await;
    db.execute(
        "UPDATE runs SET status = 'succeeded', nodes_done = nodes_total, finished_at = created_at + interval '40 seconds'
         WHERE request_id = $1::text::uuid AND role = 'authoritative'",
        &[&third["id"].as_str().unwrap()],
    )
    .await
    .unwrap();
    let (_, r) = call(&w, reqwest::Method::GET, view(&second), None).await;
    assert_eq!(r["estimate"]["from_runs"], 1, "{r:#}");
    assert_eq!(r["estimate"]["p50_seconds"], 40.0, "{r:#}");
    let finish: chrono::DateTime<chrono::Utc> = r["estimate"]["finish_at"].as_str().unwrap().parse().unwrap();
    let received: chrono::DateTime<chrono::Utc> = r["received_at"].as_str().unwrap().parse().unwrap();
    let ahead = (finish - received).num_seconds();
    assert!((39..=41).contains(&ahead), "finish {finish} is {ahead} s after the request came, not the median 40 s");
    let out = renderctl(&["--coordinator", &c.url, "requests", "show", &second]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("progress 0/3 nodes") && text.contains("estimated finish"), "{text}");
    let out = renderctl(&["--coordinator", &c.url, "requests", "cancel", &second]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("2 run(s) stopped"), "{out:?}");

    // `requests submit --wait` follows the request to its end: cancelled here, so exit 1.
    let url = c.url.clone();
    let waiting = tokio::task::spawn_blocking(move || {
        renderctl(&[
            "--coordinator",
            &url,
            "requests",
            "submit",
            "--order-line",
            "ol-w",
            "--output-type",
            "still-s",
            "--subject",
            r#"{"cad_file": "as1-oc-214.stp"}"#,
            "--wait",
        ])
    });
    let id: uuid::Uuid = wait_until("the waited request", std::time::Duration::from_secs(30), || async {
        w.db().await.query_opt("SELECT id FROM render_requests WHERE order_line_id = 'ol-w'", &[]).await.ok()?.map(|r| r.get("id"))
    })
    .await;
    let (status, _) = call(&w, reqwest::Method::POST, format!("{}/v1/render-requests/{id}/cancel", c.url), None).await;
    assert_eq!(status, 200);
    let out = waiting.await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("running: 0/3 nodes done") && stdout.contains("cancelled"), "{stdout}{stderr}");
}
