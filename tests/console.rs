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

/// The console in headless Chromium (Debian's `chromium` and `chromedriver`), driven over
/// WebDriver: sign in, find a failed run and its error, retry it and watch it complete, look
/// at a shadow comparison's three images, roll an output type back. A screenshot of every
/// page is saved under `target/test-artifacts/console/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    use fantoccini::{ClientBuilder, Locator};

    let mut w = World::new("console_browser").await;
    let artifacts = w.artifacts_dir().display().to_string();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ROLLOUT__INTERVAL", "200ms"), ("RENDERFLEET_ARTIFACTS_DIR", &artifacts)]).await;
    w.start_render_worker(
        "w1",
        "noop,sleep,fail,cad_resolve,glb_export,materials,blender_still,publish,legacy_render,compare",
        &[("RENDERFLEET_CONCURRENCY", "2")],
    );
    // A run that fails (one attempt allowed) and would succeed on its second.
    let failing = w
        .submit(&c, json!({"nodes": [{"id": "flaky", "type": "util.fail", "params": {"times": 1}, "max_attempts": 1}, {"id": "after", "type": "util.noop"}],
                          "edges": [{"from": "flaky", "to": "after"}]}))
        .await;
    assert_eq!(w.wait_run(&c, failing, Duration::from_secs(30)).await["status"], "failed");
    // A shadow comparison with a difference: the graph turns the camera.
    let (_, mut starter) = {
        let r = w.http.get(format!("{}/v1/workflows/starters/order_line", c.url)).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    for n in starter["nodes"].as_array_mut().unwrap() {
        if n["id"] == "still" {
            n["params"]["camera"]["azimuth_deg"] = json!(70);
        }
    }
    let wf: Value = w
        .http
        .post(format!("{}/v1/workflows", c.url))
        .json(&json!({"name": "turned", "family": "order_line", "graph": starter}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ot = json!({"key": "still-console", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf["id"],
                    "invocation_overrides": {"still": {"width": 160, "height": 160, "samples": 4}}, "legacy_preset": {"resolution": 160, "samples": 4},
                    "rollout_mode": "shadow", "shadow_sample_pct": 100, "gate_config": {"min_samples": 1, "window": 10}});
    assert_eq!(w.http.post(format!("{}/v1/output-types", c.url)).json(&ot).send().await.unwrap().status(), 201);
    let body =
        json!({"order_line_id": "ol-1", "subject": {"cad_file": "as1-oc-214.stp", "product": "as1"}, "output_type": "still-console"});
    w.http.post(format!("{}/v1/render-requests", c.url)).header("Idempotency-Key", "ol-1").json(&body).send().await.unwrap();
    let comparison = wait_until("the comparison", Duration::from_secs(120), || async {
        let v: Value = w.http.get(format!("{}/v1/comparisons", c.url)).send().await.ok()?.json().await.ok()?;
        v["items"].as_array()?.iter().find(|k| k["status"] == "done").map(|k| k["id"].as_str().unwrap().to_string())
    })
    .await;

    // The browser.
    let port = renderfleet_tests::free_port();
    let profile = w.data_dir.join("chromium-profile");
    let mut driver = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver; ops/dev.sh test installs them)");
    let driver_url = format!("http://127.0.0.1:{port}");
    wait_until("chromedriver", Duration::from_secs(20), || async {
        reqwest::get(format!("{driver_url}/status")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
               format!("--user-data-dir={}", profile.display())]}),
    );
    let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("a Chromium session");
    let shots = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = |name: &'static str| {
        let (b, shots) = (b.clone(), shots.clone());
        async move { std::fs::write(shots.join(name), b.screenshot().await.unwrap()).unwrap() }
    };
    // Clicks that submit a form return before the next page has loaded: wait for it.
    let wait_for_page = |what: &'static str, check: fn(&str) -> bool| {
        let b = b.clone();
        async move {
            wait_until(what, Duration::from_secs(20), || {
                let b = b.clone();
                async move { b.current_url().await.ok().filter(|u| check(u.as_str())).map(|_| ()) }
            })
            .await
        }
    };
    let text_of = |css: &'static str| {
        let b = b.clone();
        async move { b.find(Locator::Css(css)).await.unwrap().text().await.unwrap() }
    };

    b.goto(&format!("{}/console/runs", c.url)).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/console/login"), "unsigned visitors are sent to sign in");
    b.find(Locator::Id("token")).await.unwrap().send_keys(renderfleet_tests::token("admin")).await.unwrap();
    b.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    wait_for_page("the signed-in runs page", |u| u.ends_with("/console/runs")).await;
    b.goto(&format!("{}/console/runs", c.url)).await.unwrap();
    // Filter through the form itself (its empty boxes are no filter).
    b.find(Locator::Css("#filter-status option[value='']")).await.unwrap();
    b.execute("document.getElementById('filter-status').value = 'failed'", vec![]).await.unwrap();
    b.find(Locator::Css("form.filters button")).await.unwrap().click().await.unwrap();
    wait_for_page("the filtered list", |u| u.contains("status=failed")).await;
    shot("runs.png").await;
    b.find(Locator::Css(&format!("a[href='/console/runs/{failing}']"))).await.expect("the failed run is listed").click().await.unwrap();
    let error = text_of(".node-error").await;
    assert!(error.contains("fails on purpose"), "the failing node's error is shown: {error}");
    shot("run-failed.png").await;
    b.find(Locator::Id("retry")).await.unwrap().click().await.unwrap();
    // The page reloads itself while the run runs.
    wait_until("the retried run to succeed in the page", Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            let badge = b.find(Locator::Css(".card .badge")).await.ok()?.text().await.ok()?;
            (badge == "succeeded").then_some(())
        }
    })
    .await;
    assert_eq!(b.find_all(Locator::Css(".dag-node[data-status='succeeded']")).await.unwrap().len(), 2, "the DAG shows both nodes done");
    shot("run-detail.png").await;

    b.goto(&format!("{}/console/comparisons/{comparison}", c.url)).await.unwrap();
    assert_eq!(text_of("#verdict").await, "mismatch");
    for id in ["control-image", "candidate-image", "diff-image"] {
        let loaded = b.execute(&format!("return document.getElementById('{id}').naturalWidth"), vec![]).await.unwrap();
        assert_eq!(loaded.as_u64(), Some(160), "{id} is shown");
    }
    shot("comparison.png").await;

    b.goto(&format!("{}/console/rollout", c.url)).await.unwrap();
    assert_eq!(text_of("#rollout-still-console .mode").await, "shadow");
    let promote = b.find(Locator::Css("#rollout-still-console button[disabled]")).await.expect("promote is disabled while the gate fails");
    assert!(promote.attr("title").await.unwrap().unwrap_or_default().contains("gate"), "with the reason");
    b.find(Locator::Id("rollback-still-console")).await.unwrap().click().await.unwrap();
    wait_until("the rollback to show", Duration::from_secs(20), || {
        let b = b.clone();
        async move {
            let mode = b.find(Locator::Css("#rollout-still-console .mode")).await.ok()?.text().await.ok()?;
            (mode == "legacy").then_some(())
        }
    })
    .await;
    shot("rollout.png").await;
    // Preflight and a manual dispatch from the workflow page.
    b.goto(&format!("{}/console/workflows/{}", c.url, wf["id"].as_str().unwrap())).await.unwrap();
    b.find(Locator::Id("preflight")).await.unwrap().click().await.unwrap();
    let preflight = wait_until("the preflight result", Duration::from_secs(20), || {
        let b = b.clone();
        async move { b.find(Locator::Id("preflight-result")).await.ok()?.text().await.ok() }
    })
    .await;
    assert!(preflight.contains("READY") && !preflight.contains("NOT READY"), "{preflight}");
    assert!(preflight.contains("blender_still") && preflight.contains("w1"), "each module with its live worker: {preflight}");
    shot("workflow.png").await;
    b.find(Locator::Id("dispatch")).await.unwrap().click().await.unwrap();
    wait_for_page("the dispatched run's page", |u| u.contains("/console/runs/")).await;
    assert!(text_of(".card").await.contains("legacy"), "rolled back: the request renders legacy");

    b.goto(&format!("{}/console/workers", c.url)).await.unwrap();
    assert!(text_of("#workers").await.contains("w1"));
    shot("workers.png").await;
    b.close().await.unwrap();
    let _ = driver.kill();
    let _ = driver.wait();
    let (_, ot) = {
        let r = w.http.get(format!("{}/v1/output-types/still-console", c.url)).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(ot["rollout_mode"], "legacy", "the console's rollback is the real one");
}
