//! Shadow mode, comparisons, gates, promotion, rollback and fallback, with real Blender at
//! small sizes: the graph pipeline replaces the legacy one on evidence, and one call sends
//! everything back.

use futures_util::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use renderfleet_tests::browser::Browser;
use renderfleet_tests::{call, metric, token, wait_until, Coord, World};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const RENDER_MODULES: &str =
    "cad_resolve,glb_export,metadata,materials,blender_still,blender_turntable,blender_blend,video_encode,publish,legacy_render,compare";
/// A small still, the same through both pipelines.
const STILL: (u32, u32) = (128, 8);

async fn start(name: &str) -> (World, Coord) {
    let mut w = World::new(name).await;
    // The artifacts directory: the console shows what the workers stored.
    let artifacts = w.artifacts_dir().display().to_string();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ROLLOUT__INTERVAL", "200ms"), ("RENDERFLEET_ARTIFACTS_DIR", &artifacts)]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "2")]);
    (w, c)
}

/// The order-line starter as a workflow; `still` overrides the still's params.
async fn workflow(w: &World, c: &Coord, tweak: impl FnOnce(&mut Value)) -> String {
    let (_, mut graph) = call(w, reqwest::Method::GET, format!("{}/v1/workflows/starters/order_line", c.url), None).await;
    tweak(&mut graph);
    let (status, created) = call(
        w,
        reqwest::Method::POST,
        format!("{}/v1/workflows", c.url),
        Some(json!({"name": "still", "family": "order_line", "graph": graph})),
    )
    .await;
    assert_eq!(status, 201, "{created:#}");
    created["id"].as_str().unwrap().to_string()
}

fn node_mut<'a>(graph: &'a mut Value, id: &str) -> &'a mut Value {
    graph["nodes"].as_array_mut().unwrap().iter_mut().find(|n| n["id"] == id).unwrap()
}

async fn output_type(w: &World, c: &Coord, key: &str, workflow: &str, mode: &str, gate: Value) {
    let (size, samples) = STILL;
    let body = json!({
        "key": key, "family": "order_line", "artifact_kind": "image_png", "workflow_id": workflow,
        "invocation_overrides": {"still": {"width": size, "height": size, "samples": samples}},
        "legacy_preset": {"resolution": size, "samples": samples},
        "rollout_mode": mode, "shadow_sample_pct": 100, "gate_config": gate,
    });
    let (status, created) = call(w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(body)).await;
    assert_eq!(status, 201, "{created:#}");
}

async fn request(w: &World, c: &Coord, key: &str, output_type: &str) -> String {
    let body = json!({"order_line_id": key, "subject": {"cad_file": "as1-oc-214.stp", "product": "as1"}, "output_type": output_type});
    let resp = w.http.post(format!("{}/v1/render-requests", c.url)).header("Idempotency-Key", key).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    body["request_id"].as_str().or(body["id"].as_str()).unwrap_or_else(|| panic!("no request id in {body}")).to_string()
}

/// Waits until the request's answer has ended.
async fn answered(w: &World, c: &Coord, id: &str) -> Value {
    wait_until(&format!("request {id} answered"), Duration::from_secs(120), || async move {
        let (_, r) = call(w, reqwest::Method::GET, format!("{}/v1/render-requests/{id}", c.url), None).await;
        (r["status"] == "succeeded" || r["status"] == "failed").then_some(r)
    })
    .await
}

/// Waits for `n` decided comparisons of `output_type` (of any kind) and returns them.
async fn comparisons(w: &World, c: &Coord, output_type: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} comparisons of {output_type}"), Duration::from_secs(120), || async move {
        let (_, v) = call(w, reqwest::Method::GET, format!("{}/v1/comparisons?output_type={output_type}", c.url), None).await;
        let done: Vec<Value> = v["items"].as_array()?.iter().filter(|k| k["status"] != "comparing").cloned().collect();
        (done.len() >= n).then_some(done)
    })
    .await
}

async fn gate(w: &World, c: &Coord, key: &str) -> Value {
    call(w, reqwest::Method::GET, format!("{}/v1/output-types/{key}/gate", c.url), None).await.1
}

async fn run_pipeline(w: &World, c: &Coord, request: &Value) -> String {
    let id = request["run"]["run_id"].as_str().unwrap();
    let (_, run) = call(w, reqwest::Method::GET, format!("{}/v1/runs/{id}?nodes=false", c.url), None).await;
    run["pipeline"].as_str().unwrap_or("?").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_matches_open_the_gate_promotion_follows_and_rollback_is_immediate() {
    let (w, c) = start("rollout_gate").await;
    let wf = workflow(&w, &c, |_| {}).await;
    // Durations are not what this test is about (the gate's duration rule has unit tests):
    // under a loaded CI machine the two pipelines' render times can differ by chance.
    output_type(
        &w,
        &c,
        "still-128",
        &wf,
        "shadow",
        json!({"min_samples": 2, "window": 10, "noise_sample_pct": 100, "max_duration_ratio": 10.0}),
    )
    .await;

    let g = gate(&w, &c, "still-128").await;
    assert_eq!(g["gate"]["status"], "insufficient_data", "{g:#}");
    let (status, refused) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types/still-128/promote", c.url), Some(json!({}))).await;
    assert_eq!(status, 409, "{refused:#}");
    assert_eq!(refused["error"], "gate_not_passing");
    assert!(refused["message"].as_str().unwrap().contains("0 of the 2"), "{refused:#}");
    assert_eq!(refused["gate"]["samples"], 0);

    let a = request(&w, &c, "ol-1/still-128", "still-128").await;
    let b = request(&w, &c, "ol-2/still-128", "still-128").await;
    for id in [&a, &b] {
        let r = answered(&w, &c, id).await;
        assert_eq!(r["run"]["status"], "succeeded", "{r:#}");
        assert_eq!(r["run"]["role"], "authoritative");
        assert_eq!(run_pipeline(&w, &c, &r).await, "legacy", "in shadow mode the order system gets the legacy result");
        assert_eq!(r["artifact"]["kind"], "image_png", "{r:#}");
    }
    // Two shadow (graph vs legacy) and two noise (legacy vs legacy) comparisons, all matching.
    let done = comparisons(&w, &c, "still-128", 4).await;
    for k in &done {
        assert_eq!(k["verdict"], "match", "{k:#}");
        assert_eq!(k["metrics"]["identical"].as_bool().or(k["metrics"]["identical_bytes"].as_bool()), Some(true), "{k:#}");
    }
    assert_eq!(done.iter().filter(|k| k["kind"] == "noise").count(), 2);
    let g = gate(&w, &c, "still-128").await;
    assert_eq!(g["gate"]["status"], "pass", "{g:#}");
    assert_eq!(g["gate"]["samples"], 2);
    assert_eq!(g["gate"]["input"]["noise_samples"], 2);

    let (status, promoted) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types/still-128/promote", c.url), Some(json!({}))).await;
    assert_eq!(status, 200, "{promoted:#}");
    assert_eq!((promoted["from_mode"].as_str(), promoted["to_mode"].as_str()), (Some("shadow"), Some("graph")));
    let r = answered(&w, &c, &request(&w, &c, "ol-3/still-128", "still-128").await).await;
    assert_eq!(run_pipeline(&w, &c, &r).await, "graph", "after promotion the graph pipeline answers");
    assert_eq!(r["artifact"]["kind"], "image_png");

    // Rollback: the very next request is legacy.
    let t = Instant::now();
    let (status, rolled) =
        call(&w, reqwest::Method::POST, format!("{}/v1/output-types/still-128/rollback", c.url), Some(json!({"reason": "test"}))).await;
    assert_eq!(status, 200, "{rolled:#}");
    let next = request(&w, &c, "ol-4/still-128", "still-128").await;
    let (_, r) = call(&w, reqwest::Method::GET, format!("{}/v1/render-requests/{next}", c.url), None).await;
    let elapsed = t.elapsed();
    assert_eq!(run_pipeline(&w, &c, &r).await, "legacy");
    eprintln!("rollback call → next request dispatched legacy: {elapsed:?}");

    let (_, events) = call(&w, reqwest::Method::GET, format!("{}/v1/output-types/still-128/rollout-events", c.url), None).await;
    let modes: Vec<(&str, &str)> =
        events["items"].as_array().unwrap().iter().map(|e| (e["from_mode"].as_str().unwrap(), e["to_mode"].as_str().unwrap())).collect();
    assert_eq!(modes, [("graph", "legacy"), ("shadow", "graph")]);
    let actors: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, ["test-admin", "test-admin"], "each change names the token that made it");
    assert_eq!(events["items"][1]["gate_snapshot"]["status"], "pass");

    // The gauges and counters a dashboard reads.
    let url = format!("{}/metrics", c.url);
    wait_until("the mode gauge to show legacy", Duration::from_secs(10), || async {
        (metric(&w.http, &url, "renderfleet_rollout_mode", &[("output_type", "still-128"), ("mode", "legacy")]).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(metric(&w.http, &url, "renderfleet_rollout_mode", &[("output_type", "still-128"), ("mode", "graph")]).await, 0.0);
    assert_eq!(metric(&w.http, &url, "renderfleet_gate_status", &[("output_type", "still-128"), ("status", "pass")]).await, 1.0);
    assert_eq!(
        metric(&w.http, &url, "renderfleet_comparisons_total", &[("output_type", "still-128"), ("kind", "shadow"), ("verdict", "match")])
            .await,
        2.0
    );
    assert_eq!(metric(&w.http, &url, "renderfleet_rollbacks_total", &[("output_type", "still-128"), ("reason", "manual")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_graph_is_a_mismatch_with_a_diff_image_and_a_failing_one_a_candidate_error() {
    let (w, c) = start("rollout_verdicts").await;
    // Another camera angle: the same product, other pixels.
    let turned = workflow(&w, &c, |g| node_mut(g, "still")["params"]["camera"]["azimuth_deg"] = json!(80)).await;
    // Unmapped parts fail the graph's material step; legacy uses the default material.
    let failing = workflow(&w, &c, |g| node_mut(g, "assign")["params"]["on_missing"] = json!("fail")).await;
    output_type(&w, &c, "turned", &turned, "shadow", json!({"min_samples": 1, "window": 10})).await;
    output_type(&w, &c, "failing", &failing, "shadow", json!({"min_samples": 1, "window": 10})).await;
    // The same difference, excused by a named rule: counted apart, never as a match.
    let rule = json!([{"name": "camera-moved", "max_fail_percent": 100.0}]);
    output_type(&w, &c, "turned-ok", &turned, "shadow", json!({"min_samples": 1, "window": 10, "ignore_rules": rule})).await;
    let a = request(&w, &c, "ol-1/turned", "turned").await;
    let b = request(&w, &c, "ol-1/failing", "failing").await;
    request(&w, &c, "ol-1/turned-ok", "turned-ok").await;

    let k = comparisons(&w, &c, "turned", 1).await.remove(0);
    assert_eq!(k["verdict"], "mismatch", "{k:#}");
    assert!(k["metrics"]["fail_share"].as_f64().unwrap() > 0.01, "{k:#}");
    assert!(k["metrics"]["psnr_db"].as_f64().unwrap() < 40.0, "{k:#}");
    let diff = k["diff_sha256"].as_str().expect("a diff image for a mismatch");
    let path = w.artifacts_dir().join("sha256").join(&diff[..2]).join(diff);
    assert!(std::fs::metadata(&path).map(|m| m.len() > 100).unwrap_or(false), "diff image at {}", path.display());
    assert_eq!(answered(&w, &c, &a).await["run"]["status"], "succeeded");

    let k = comparisons(&w, &c, "failing", 1).await.remove(0);
    assert_eq!(k["verdict"], "candidate_error", "{k:#}");
    let r = answered(&w, &c, &b).await;
    assert_eq!(r["run"]["status"], "succeeded", "the order system still gets the legacy result: {r:#}");
    assert_eq!(r["artifact"]["kind"], "image_png");
    let g = gate(&w, &c, "failing").await;
    assert_eq!(g["gate"]["status"], "fail", "{g:#}");
    let g = gate(&w, &c, "turned").await;
    assert_eq!(g["gate"]["status"], "fail", "{g:#}");

    let k = comparisons(&w, &c, "turned-ok", 1).await.remove(0);
    assert_eq!((k["verdict"].as_str(), k["ignore_rule"].as_str()), (Some("ignored"), Some("camera-moved")), "{k:#}");
    let g = gate(&w, &c, "turned-ok").await;
    assert_eq!((g["gate"]["status"].as_str(), g["gate"]["samples"].as_u64()), (Some("insufficient_data"), Some(0)), "{g:#}");

    // Listing by verdict, and a bad verdict is refused with the known ones.
    let (_, v) = call(&w, reqwest::Method::GET, format!("{}/v1/comparisons?verdict=mismatch", c.url), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (status, v) = call(&w, reqwest::Method::GET, format!("{}/v1/comparisons?verdict=bogus", c.url), None).await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("candidate_error"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_mode_falls_back_to_legacy_and_rolls_back_by_itself() {
    let (w, c) = start("rollout_fallback").await;
    // The order system's view on the broker: every event of the output type.
    let conn = w.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let q =
        ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.unwrap();
    let exchange = w.topology.events_exchange();
    ch.queue_bind(
        q.name().as_str().into(),
        exchange.as_str().into(),
        "request.*.fragile".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let failing = workflow(&w, &c, |g| node_mut(g, "assign")["params"]["on_missing"] = json!("fail")).await;
    output_type(&w, &c, "fragile", &failing, "graph", json!({"min_samples": 2, "window": 10, "max_graph_failure_rate": 0.2})).await;
    let mut answers = Vec::new();
    for key in ["ol-1/fragile", "ol-2/fragile"] {
        let id = request(&w, &c, key, "fragile").await;
        let r = answered(&w, &c, &id).await;
        assert_eq!(r["run"]["status"], "succeeded", "{r:#}");
        assert_eq!(r["run"]["role"], "fallback", "{r:#}");
        assert_eq!(run_pipeline(&w, &c, &r).await, "legacy");
        assert_eq!(r["artifact"]["kind"], "image_png");
        answers.push(r);
    }
    // Each request: `request.fallback` (never `request.failed`: it was not over), then
    // `request.succeeded` for the legacy run with its image and where to download it.
    let mut consumer = ch.basic_consume(q.name().as_str().into(), "test".into(), Default::default(), FieldTable::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.expect("4 events").unwrap().unwrap();
        let e: Value = serde_json::from_slice(&msg.data).unwrap();
        assert_eq!(msg.routing_key.as_str(), format!("{}.fragile", e["type"].as_str().unwrap()));
        seen.push(e);
    }
    for r in &answers {
        let mine: Vec<&Value> = seen.iter().filter(|e| e["request"]["id"] == r["id"]).collect();
        let types: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["request.fallback", "request.succeeded"], "{mine:#?}");
        let done = mine[1];
        assert_eq!((done["run"]["id"].as_str(), done["run"]["pipeline"].as_str()), (r["run"]["run_id"].as_str(), Some("legacy")));
        let a = &done["artifacts"][0];
        assert_eq!((a["kind"].as_str(), a["sha256"].as_str()), (Some("image_png"), r["artifact"]["sha256"].as_str()), "{done:#}");
        let download = w.http.get(format!("{}{}", c.url, a["path"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(download.status(), 200);
        assert_eq!(download.bytes().await.unwrap().len() as u64, a["bytes"].as_u64().unwrap(), "the download is the artifact");
        // And from the command line, checked against its hash.
        let file = w.data_dir.join(format!("{}.png", r["id"].as_str().unwrap()));
        let out = renderfleet_tests::renderctl(&[
            "--coordinator",
            &c.url,
            "artifacts",
            "get",
            a["sha256"].as_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("SHA-256 checked"), "{out:?}");
        assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(w.artifact_path(a)).unwrap());
    }
    let out = renderfleet_tests::renderctl(&["--coordinator", &c.url, "artifacts", "get", &"0".repeat(64)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in this coordinator's store"), "{out:?}");
    let _ = conn.close(200, "done".into()).await;
    let url = format!("{}/metrics", c.url);
    assert_eq!(metric(&w.http, &url, "renderfleet_fallbacks_total", &[("output_type", "fragile")]).await, 2.0);
    let events = wait_until("the automatic rollback", Duration::from_secs(30), || async {
        let (_, e) = call(&w, reqwest::Method::GET, format!("{}/v1/output-types/fragile/rollout-events", c.url), None).await;
        (!e["items"].as_array()?.is_empty()).then_some(e)
    })
    .await;
    let e = &events["items"][0];
    assert_eq!(
        (e["from_mode"].as_str(), e["to_mode"].as_str(), e["actor"].as_str()),
        (Some("graph"), Some("legacy"), Some("auto")),
        "{e:#}"
    );
    assert!(e["reason"].as_str().unwrap().contains("2 of the last 2"), "{e:#}");
    let (_, ot) = call(&w, reqwest::Method::GET, format!("{}/v1/output-types/fragile", c.url), None).await;
    assert_eq!(ot["rollout_mode"], "legacy");
    assert_eq!(metric(&w.http, &url, "renderfleet_rollbacks_total", &[("output_type", "fragile"), ("reason", "auto")]).await, 1.0);
    // Resuming is explicit: promote goes to shadow first, never straight back to graph.
    let (status, p) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types/fragile/promote", c.url), Some(json!({}))).await;
    assert_eq!((status, p["to_mode"].as_str()), (200, Some("shadow")), "{p:#}");
}

#[test]
fn the_alert_rules_load_in_promtool() {
    // Not skipped when promtool is missing: the rules would go unchecked without a word.
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/prometheus/alerts.yml"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's `prometheus` package, which has it \
                 (`apt-get install --no-install-recommends prometheus`; `ops/dev.sh test` installs it)"
            )
        });
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_are_compared_frame_by_frame_and_blend_files_by_their_objects() {
    let (w, c) = start("rollout_kinds").await;
    let turntable = |samples: u32| {
        json!({"nodes": [
            {"id": "resolve", "type": "cad.resolve"}, {"id": "export", "type": "cad.export_glb"}, {"id": "assign", "type": "material.assign"},
            {"id": "turntable", "type": "render.turntable", "params": {"width": 64, "height": 64, "samples": samples, "frame_count": 4}},
            {"id": "encode", "type": "video.encode", "params": {"fps": 12}}, {"id": "publish", "type": "output.publish"}],
         "edges": [{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "parts", "to": "assign"},
                   {"from": "export", "from_port": "glb", "to": "turntable", "to_port": "glb"}, {"from": "assign", "to": "turntable", "to_port": "materials"},
                   {"from": "turntable", "to": "encode"}, {"from": "encode", "to": "publish"}]})
    };
    // Twice the samples of the legacy preset: the same product, other noise in every frame.
    let video_wf = workflow(&w, &c, |g| *g = turntable(4)).await;
    let body = json!({"key": "spin", "family": "order_line", "artifact_kind": "video_mp4", "workflow_id": video_wf,
                      "legacy_preset": {"resolution": 64, "samples": 2, "frames": 4, "fps": 12},
                      "rollout_mode": "shadow", "shadow_sample_pct": 100, "gate_config": {"min_samples": 1, "window": 10}});
    let (status, created) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(body)).await;
    assert_eq!(status, 201, "{created:#}");
    // The scene seen from another angle: other bytes, the same objects and materials.
    let blend_wf = workflow(&w, &c, |g| {
        *g = json!({"nodes": [
            {"id": "resolve", "type": "cad.resolve"}, {"id": "export", "type": "cad.export_glb"}, {"id": "assign", "type": "material.assign"},
            {"id": "blend", "type": "export.blend", "params": {"camera": {"azimuth_deg": 80}}}, {"id": "publish", "type": "output.publish"}],
         "edges": [{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "parts", "to": "assign"},
                   {"from": "export", "from_port": "glb", "to": "blend", "to_port": "glb"}, {"from": "assign", "to": "blend", "to_port": "materials"},
                   {"from": "blend", "to": "publish"}]})
    })
    .await;
    let body = json!({"key": "scene", "family": "order_line", "artifact_kind": "blend", "workflow_id": blend_wf, "legacy_preset": {},
                      "rollout_mode": "shadow", "shadow_sample_pct": 100, "gate_config": {"min_samples": 1, "window": 10}});
    let (status, created) = call(&w, reqwest::Method::POST, format!("{}/v1/output-types", c.url), Some(body)).await;
    assert_eq!(status, 201, "{created:#}");
    request(&w, &c, "ol-1/spin", "spin").await;
    request(&w, &c, "ol-1/scene", "scene").await;

    let k = comparisons(&w, &c, "spin", 1).await.remove(0);
    assert_eq!(k["verdict"], "mismatch", "{k:#}");
    assert_eq!(k["metrics"]["frames_compared"], 4, "{k:#}");
    assert!(k["metrics"]["worst"]["rmse"].as_f64().unwrap() > 0.0, "{k:#}");
    turntable_in_the_console(&w, &c, &k).await;
    let k = comparisons(&w, &c, "scene", 1).await.remove(0);
    assert_eq!(k["verdict"], "match", "{k:#}");
    assert_eq!(k["metrics"]["identical_bytes"], false, "the camera moved, so the files differ: {k:#}");
    assert!(k["metrics"]["objects"].as_u64().unwrap() >= 18, "{k:#}");
}

/// The console's comparison view of a turntable: a frame scrubber with every frame's verdict
/// from the compare module; stepping frames shows the two videos' frames, and the heat map
/// of a mismatched frame finds failing pixels.
async fn turntable_in_the_console(w: &World, c: &Coord, k: &Value) {
    use fantoccini::Locator;
    let browser = Browser::start(&w.data_dir.join("chromium"), "rollout").await;
    browser.sign_in(&c.url, token("admin")).await;
    let b = browser.client.clone();
    b.goto(&format!("{}/console/comparisons/{}", c.url, k["id"].as_str().unwrap())).await.unwrap();
    let js = |script: &'static str| {
        let b = b.clone();
        async move { b.execute(script, vec![]).await.unwrap() }
    };
    let ready = || async {
        wait_until("the comparison view", Duration::from_secs(20), || async {
            let state = js("return document.getElementById('compare-view').dataset.state").await;
            assert_ne!(state, "error", "{}", js("return document.body.innerText").await);
            (state == "ready").then_some(())
        })
        .await
    };
    ready().await;
    let verdicts = js("return [...document.querySelectorAll('#frame-ticks span')].map(s => s.dataset.verdict)").await;
    let expected: Vec<&str> =
        k["metrics"]["frames"].as_array().unwrap().iter().map(|f| if f["match"] == true { "match" } else { "mismatch" }).collect();
    assert_eq!(verdicts, json!(expected), "one tick per frame, with the compare module's verdict");
    assert_eq!(js("return document.getElementById('compare-view').dataset.size").await, "64x64");
    // It opens on the first mismatched frame; the arrow keys step.
    let first = expected.iter().position(|v| *v == "mismatch").unwrap();
    assert_eq!(js("return document.getElementById('compare-view').dataset.frame").await, first.to_string());
    let label = b.find(Locator::Id("frame-label")).await.unwrap().text().await.unwrap();
    assert!(label.starts_with(&format!("frame {} of 4 · mismatch", first + 1)), "{label}");
    let next = (first + 1) % 4;
    let key = if next > first { "\u{E014}" } else { "\u{E012}" };
    b.find(Locator::Css("body")).await.unwrap().send_keys(&key.repeat(next.abs_diff(first))).await.unwrap();
    ready().await;
    assert_eq!(js("return document.getElementById('compare-view').dataset.frame").await, next.to_string());
    let label = b.find(Locator::Id("frame-label")).await.unwrap().text().await.unwrap();
    assert!(label.starts_with(&format!("frame {} of 4 · {}", next + 1, expected[next])), "{label}");
    // The heat map of a mismatched frame.
    b.find(Locator::Css(&format!("#frame-ticks span[data-frame='{first}']"))).await.unwrap().click().await.unwrap();
    ready().await;
    b.find(Locator::Id("mode-heat")).await.unwrap().click().await.unwrap();
    let failing = js("return Number(document.getElementById('compare-view').dataset.heatFailing)").await;
    assert!(failing.as_u64().unwrap() > 0, "a mismatched frame has failing pixels: {failing}");
    browser.shot("comparison-turntable.png").await;
    browser.close().await;
}
