//! The contract layer against a real coordinator and PostgreSQL: the node palette,
//! workflows (validate, store, version, repair), output types and their refusals.

use renderfleet_tests::World;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn post(w: &World, url: String, body: Value) -> (u16, Value) {
    let resp = w.http.post(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put(w: &World, url: String, body: Value) -> (u16, Value) {
    let resp = w.http.put(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(w: &World, url: String) -> (u16, Value) {
    let resp = w.http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn codes(body: &Value) -> Vec<String> {
    body["problems"].as_array().map(|a| a.iter().map(|p| p["code"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn palette_lists_contracts_grouped_by_family_module_and_role() {
    let mut w = World::new("palette").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let (status, body) = get(&w, format!("{}/v1/nodes", c.url)).await;
    assert_eq!(status, 200);
    let order_line: Vec<&str> = body["by_family"]["order_line"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(order_line.contains(&"render.still") && order_line.contains(&"material.assign"), "{order_line:?}");
    assert!(!order_line.contains(&"util.noop"), "test nodes are hidden from editors");
    assert_eq!(body["by_module"]["glb_export"], json!(["cad.export_glb"]));
    assert!(body["by_execution_role"]["sink"].as_array().unwrap().contains(&json!("output.publish")));
    let still = body["node_types"].as_array().unwrap().iter().find(|t| t["type_key"] == "render.still").unwrap();
    assert_eq!(still["params_schema"]["properties"]["samples"]["default"], 64);
    assert_eq!(still["inputs"][0], json!({"name": "glb", "kind": "glb", "required": true, "many": false}));
    let (_, all) = get(&w, format!("{}/v1/nodes?all=true", c.url)).await;
    assert!(all["by_module"]["noop"].as_array().unwrap().contains(&json!("util.noop")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_validate_store_version_and_repair() {
    let mut w = World::new("workflows").await;
    let c = w.start_coordinator("coordinator", &[]).await;

    // Starters validate, and a starter stored, repaired and read back is unchanged.
    for family in ["cad_file", "order_line"] {
        let (status, starter) = get(&w, format!("{}/v1/workflows/starters/{family}", c.url)).await;
        assert_eq!(status, 200);
        let (_, v) = post(&w, format!("{}/v1/workflows/validate", c.url), starter.clone()).await;
        assert_eq!(v["valid"], true, "{v:#}");
        assert_eq!(v["problems"], json!([]));
        let (status, created) =
            post(&w, format!("{}/v1/workflows", c.url), json!({"name": family, "family": family, "graph": starter})).await;
        assert_eq!(status, 201, "{created:#}");
        let id = created["id"].as_str().unwrap();
        let (_, repaired) = post(&w, format!("{}/v1/workflows/{id}/repair", c.url), json!({})).await;
        assert_eq!(repaired["changed"], false, "{repaired:#}");
        let (_, back) = get(&w, format!("{}/v1/workflows/{id}", c.url)).await;
        assert_eq!(back["version"], 1);
        assert_eq!(back["graph"], starter, "stored, repaired and read back: unchanged");
    }
    let (status, _) = get(&w, format!("{}/v1/workflows/starters/pottery", c.url)).await;
    assert_eq!(status, 404);

    // An edit is a new version; the old one stays readable.
    let (_, starter) = get(&w, format!("{}/v1/workflows/starters/order_line", c.url)).await;
    let (_, created) =
        post(&w, format!("{}/v1/workflows", c.url), json!({"name": "still", "family": "order_line", "graph": starter})).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut edited = starter.clone();
    let still = edited["nodes"].as_array_mut().unwrap().iter_mut().find(|n| n["id"] == "still").unwrap();
    still["params"]["samples"] = json!(128);
    let (status, v2) =
        put(&w, format!("{}/v1/workflows/{id}", c.url), json!({"name": "still", "family": "order_line", "graph": edited})).await;
    assert_eq!(status, 200, "{v2:#}");
    assert_eq!(v2["version"], 2);
    let (_, v1) = get(&w, format!("{}/v1/workflows/{id}?version=1", c.url)).await;
    let samples =
        |g: &Value| g["graph"]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "still").unwrap()["params"]["samples"].clone();
    assert_eq!(samples(&v1), 64);
    let (_, latest) = get(&w, format!("{}/v1/workflows/{id}", c.url)).await;
    assert_eq!(samples(&latest), 128);
    let (status, body) =
        put(&w, format!("{}/v1/workflows/{id}", c.url), json!({"name": "still", "family": "cad_file", "graph": edited})).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("family_change")));

    // An invalid graph is refused with every problem, and nothing is stored.
    let before = w.count("SELECT count(*) FROM workflows").await;
    let bad = json!({"nodes": [{"id": "s", "type": "render.still", "params": {"sampels": 2}}, {"id": "p", "type": "output.publish"}],
                     "edges": [{"from": "s", "to": "p"}, {"from": "s", "to": "ghost"}]});
    let (status, body) = post(&w, format!("{}/v1/workflows", c.url), json!({"name": "bad", "family": "order_line", "graph": bad})).await;
    assert_eq!(status, 422);
    let got = codes(&body);
    for want in ["invalid_param", "missing_required_input", "dangling_edge"] {
        assert!(got.iter().any(|c| c == want), "no {want} in {body:#}");
    }
    assert_eq!(w.count("SELECT count(*) FROM workflows").await, before);

    // A mixed-family import is stored, flagged, and repair says so.
    let mixed = json!({"nodes": [
        {"id": "r", "type": "cad.resolve"}, {"id": "g", "type": "cad.export_glb"}, {"id": "meta", "type": "cad.extract_metadata"},
        {"id": "p", "type": "output.publish"}],
        "edges": [{"from": "r", "to": "g"}, {"from": "g", "from_port": "glb", "to": "meta"}, {"from": "meta", "from_port": "metadata", "to": "p"}]});
    let (status, body) =
        post(&w, format!("{}/v1/workflows", c.url), json!({"name": "import", "family": "order_line", "graph": mixed})).await;
    assert_eq!(status, 201, "{body:#}");
    assert_eq!(body["mixed_family"], true);
    let mixed_id = body["id"].as_str().unwrap();
    let (_, rep) = post(&w, format!("{}/v1/workflows/{mixed_id}/repair?dry_run=true", c.url), json!({})).await;
    assert_eq!(rep["mixed_family"], true);
    assert!(codes(&rep).contains(&"family_mismatch".to_string()), "{rep:#}");

    // Repair of a stored legacy graph (old type names, ports left out, no defaults), as an
    // import from before the registry would leave it.
    let legacy = json!({"family": "order_line", "nodes": [
        {"id": "resolve", "type": "cad.resolve", "params": {}}, {"id": "export", "type": "cad.step_to_glb", "params": {}},
        {"id": "still", "type": "render.image", "params": {"samples": 16}}, {"id": "publish", "type": "output.publish", "params": {}}],
        "edges": [{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "glb", "to": "still"}, {"from": "still", "to": "publish"}]});
    let legacy_id = uuid::Uuid::now_v7();
    w.db()
        .await
        .execute(
            "INSERT INTO workflows (id, version, name, family, graph) VALUES ($1, 1, 'imported', 'order_line', $2)",
            &[&legacy_id, &legacy],
        )
        .await
        .unwrap();
    let (_, dry) = post(&w, format!("{}/v1/workflows/{legacy_id}/repair?dry_run=true", c.url), json!({})).await;
    assert_eq!(dry["changed"], true, "{dry:#}");
    assert_eq!(dry["version"], 1, "a dry run writes nothing");
    let changes = dry["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    for want in ["`cad.step_to_glb` is now `cad.export_glb`", "`render.image` is now `render.still`", "defaults filled in", "ports named"] {
        assert!(changes.contains(want), "no `{want}` in:\n{changes}");
    }
    assert_eq!(w.count(&format!("SELECT count(*) FROM workflows WHERE id = '{legacy_id}'")).await, 1);
    let (_, done) = post(&w, format!("{}/v1/workflows/{legacy_id}/repair", c.url), json!({})).await;
    assert_eq!((done["changed"].as_bool(), done["version"].as_i64()), (Some(true), Some(2)), "{done:#}");
    let (_, again) = post(&w, format!("{}/v1/workflows/{legacy_id}/repair", c.url), json!({})).await;
    assert_eq!(again["changed"], false, "repair is idempotent: {again:#}");
    let (_, repaired) = get(&w, format!("{}/v1/workflows/{legacy_id}", c.url)).await;
    assert_eq!(repaired["repaired_from"], 1);
    let (_, v) = post(&w, format!("{}/v1/workflows/validate", c.url), repaired["graph"].clone()).await;
    assert_eq!(v["problems"], json!([]), "a repaired graph is canonical: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_types_refuse_what_would_fail_at_dispatch() {
    let mut w = World::new("output_types").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let (_, starter) = get(&w, format!("{}/v1/workflows/starters/order_line", c.url)).await;
    let (_, wf) = post(&w, format!("{}/v1/workflows", c.url), json!({"name": "still", "family": "order_line", "graph": starter})).await;
    let wf = wf["id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/output-types", c.url);
    let base = json!({"key": "still-2000", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf,
                      "invocation_overrides": {"still": {"width": 2000, "height": 2000}}, "legacy_preset": {"resolution": 2000},
                      "rollout_mode": "shadow", "shadow_sample_pct": 10});
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let refusals = [
        (json!({"family": "cad_file"}), "family_mismatch"),
        (json!({"artifact_kind": "video_mp4"}), "artifact_kind_not_produced"),
        (json!({"invocation_overrides": {"still": {"sampels": 8}}}), "invalid_overrides"),
        (json!({"invocation_overrides": {"turntable": {}}}), "invalid_overrides"),
        (json!({"workflow_id": null, "invocation_overrides": null}), "workflow_required"),
        (json!({"workflow_id": null, "invocation_overrides": null, "rollout_mode": "graph"}), "workflow_required"),
        (json!({"workflow_id": uuid::Uuid::now_v7()}), "unknown_workflow"),
        (json!({"key": "Bad Key"}), "invalid_key"),
        (json!({"shadow_sample_pct": 101}), "invalid_sample"),
        (json!({"legacy_preset": {"sampels": 8}}), "invalid_legacy_preset"),
        (json!({"legacy_preset": {"resolution": 99999}}), "invalid_legacy_preset"),
    ];
    for (patch, code) in refusals {
        let (status, body) = post(&w, url.clone(), with(patch.clone())).await;
        assert_eq!((status, body["error"].as_str()), (422, Some(code)), "{patch}: {body:#}");
        assert!(body["message"].as_str().unwrap().len() > 20, "{body:#}");
    }
    let (_, body) = post(&w, url.clone(), with(json!({"invocation_overrides": {"still": {"sampels": 8}}}))).await;
    assert_eq!(body["problems"][0]["param_path"], "/still/sampels");
    let (status, body) = post(&w, url.clone(), with(json!({"bogus": 1}))).await;
    assert_eq!(status, 400, "unknown fields are refused: {body:#}");
    assert_eq!(w.count("SELECT count(*) FROM output_types").await, 0, "no refusal wrote anything");

    // A legacy-only output type is valid.
    let (status, body) = post(
        &w,
        url.clone(),
        json!({"key": "legacy-blend", "family": "order_line", "artifact_kind": "blend", "legacy_preset": {"preset": "blend_v1"}}),
    )
    .await;
    assert_eq!(status, 201, "{body:#}");
    assert_eq!((body["rollout_mode"].as_str(), body["workflow_id"].is_null()), (Some("legacy"), true));

    let (status, body) = post(&w, url.clone(), base.clone()).await;
    assert_eq!(status, 201, "{body:#}");
    let (status, _) = post(&w, url.clone(), base.clone()).await;
    assert_eq!(status, 409, "a key is created once");
    let (status, body) = put(&w, format!("{url}/still-2000"), with(json!({"shadow_sample_pct": 50}))).await;
    assert_eq!((status, body["revision"].as_i64(), body["shadow_sample_pct"].as_f64()), (200, Some(2), Some(50.0)), "{body:#}");
    let (status, body) = put(&w, format!("{url}/still-2000"), with(json!({"artifact_kind": "blend"}))).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("artifact_kind_not_produced")));
    let (_, after) = get(&w, format!("{url}/still-2000")).await;
    assert_eq!(after["artifact_kind"], "image_png", "a refused edit changes nothing");
    // The mode moves only through promote and rollback (gate checked, event recorded); an
    // edit that leaves it out keeps it.
    let (status, body) = put(&w, format!("{url}/still-2000"), with(json!({"rollout_mode": "graph"}))).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("mode_change_via_rollout")), "{body:#}");
    assert!(body["message"].as_str().unwrap().contains("promote"), "{body:#}");
    let (status, body) = put(&w, format!("{url}/still-2000"), with(json!({"rollout_mode": null, "description": "edited"}))).await;
    assert_eq!((status, body["rollout_mode"].as_str()), (200, Some("shadow")), "{body:#}");
    let (status, body) = get(&w, format!("{url}/nope")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_output_type")));
    let (_, list) = get(&w, url.clone()).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

/// An order-line workflow of test nodes that delivers an image (so output types can bind it):
/// `util.noop` stands in for the render, `output.publish` is its sink.
async fn image_workflow(w: &World, url: &str) -> String {
    let (_, starter) = get(w, format!("{url}/v1/workflows/starters/order_line")).await;
    let (status, created) =
        post(w, format!("{url}/v1/workflows"), json!({"name": "still", "family": "order_line", "graph": starter})).await;
    assert_eq!(status, 201, "{created:#}");
    created["id"].as_str().unwrap().to_string()
}

async fn output_type(w: &World, url: &str, body: Value) {
    let (status, created) = post(w, format!("{url}/v1/output-types"), body).await;
    assert_eq!(status, 201, "{created:#}");
}

async fn render(w: &World, url: &str, key: &str, body: Value) -> (u16, Value) {
    let resp = w.http.post(format!("{url}/v1/render-requests")).header("Idempotency-Key", key).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_requests_are_idempotent_and_follow_the_rollout_mode() {
    let mut w = World::new("render_requests").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let wf = image_workflow(&w, &c.url).await;
    output_type(
        &w,
        &c.url,
        json!({"key": "legacy-still", "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 2000}}),
    )
    .await;
    output_type(
        &w,
        &c.url,
        json!({"key": "shadow-still", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf,
                                   "rollout_mode": "shadow", "shadow_sample_pct": 100}),
    )
    .await;
    output_type(
        &w,
        &c.url,
        json!({"key": "graph-still", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf,
                                   "rollout_mode": "graph", "invocation_overrides": {"still": {"width": 1000}}}),
    )
    .await;
    let body = |ot: &str| json!({"order_line_id": "ol-1", "subject": {"product": "bracket"}, "output_type": ot});

    // Legacy: one authoritative legacy run with the preset; the same key again (even at the
    // same moment) answers with the first request and creates nothing.
    let (a, b) =
        tokio::join!(render(&w, &c.url, "ol-1/legacy", body("legacy-still")), render(&w, &c.url, "ol-1/legacy", body("legacy-still")));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{a:?} {b:?}");
    assert_eq!(a.1["id"], b.1["id"]);
    assert_eq!(a.1["run"]["pipeline"], "legacy");
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, 1);
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 1);
    let preset = w.db().await.query_one("SELECT params FROM node_runs WHERE module_key = 'legacy_render'", &[]).await.unwrap();
    assert_eq!(preset.get::<_, Value>(0)["preset"], json!({"resolution": 2000}));
    let (status, reused) = render(&w, &c.url, "ol-1/legacy", body("shadow-still")).await;
    assert_eq!((status, reused["error"].as_str()), (422, Some("idempotency_key_reused")), "{reused:#}");

    // Shadow at 100 %: the legacy run is authoritative, the graph run a shadow the order
    // system never sees.
    let (status, shadow) = render(&w, &c.url, "ol-1/shadow", body("shadow-still")).await;
    assert_eq!(status, 201, "{shadow:#}");
    assert_eq!(shadow["run"]["pipeline"], "legacy");
    let id = shadow["id"].as_str().unwrap();
    let roles = w.count(&format!("SELECT count(*) FROM runs WHERE request_id = '{id}' AND role = 'shadow' AND pipeline = 'graph'")).await;
    assert_eq!(roles, 1);
    let (_, seen) = get(&w, format!("{}/v1/render-requests/{id}", c.url)).await;
    assert_eq!(seen["run"]["pipeline"], "legacy", "only the authoritative run is shown: {seen:#}");

    // Graph: the workflow with the output type's overrides, pinned to the version it ran.
    let (status, graph) = render(&w, &c.url, "ol-1/graph", body("graph-still")).await;
    assert_eq!(status, 201, "{graph:#}");
    assert_eq!(graph["run"]["pipeline"], "graph");
    let run = graph["run"]["run_id"].as_str().unwrap();
    let row = w
        .db()
        .await
        .query_one(&format!("SELECT r.workflow_version, n.params FROM runs r JOIN node_runs n ON n.run_id = r.id WHERE r.id = '{run}' AND n.node_id = 'still'"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(1));
    let params: Value = row.get(1);
    assert_eq!((params["width"].as_i64(), params["height"].as_i64()), (Some(1000), Some(2000)), "override over defaults: {params}");

    // Bad requests write nothing.
    let before = w.count("SELECT count(*) FROM render_requests").await;
    let (status, e) = render(&w, &c.url, "ol-2", body("no-such-type")).await;
    assert_eq!((status, e["error"].as_str()), (422, Some("unknown_output_type")), "{e:#}");
    let resp = w.http.post(format!("{}/v1/render-requests", c.url)).json(&body("legacy-still")).send().await.unwrap();
    assert_eq!(resp.status(), 400, "no Idempotency-Key");
    let (status, e) =
        render(&w, &c.url, "ol-3", json!({"order_line_id": "ol-3", "subject": {}, "output_type": "legacy-still", "urgency": 1})).await;
    assert_eq!(status, 400, "unknown field: {e:#}");
    assert!(e["message"].as_str().unwrap().contains("urgency"), "{e:#}");
    let (status, e) =
        render(&w, &c.url, "ol-3", json!({"order_line_id": "ol-3", "subject": {}, "output_type": "legacy-still", "priority": "urgent"}))
            .await;
    assert_eq!(status, 400, "unknown priority: {e:#}");
    assert!(e["message"].as_str().unwrap().contains("`rush`"), "the allowed priorities are named: {e:#}");
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_shows_resolved_params_and_which_modules_have_live_workers() {
    let mut w = World::new("preflight").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let wf = image_workflow(&w, &c.url).await;
    output_type(
        &w,
        &c.url,
        json!({"key": "still-1000", "family": "order_line", "artifact_kind": "image_png", "workflow_id": wf,
                                   "rollout_mode": "graph", "invocation_overrides": {"still": {"samples": 16}}}),
    )
    .await;
    let (status, pf) =
        post(&w, format!("{}/v1/workflows/{wf}/preflight", c.url), json!({"subject": {"product": "x"}, "output_type": "still-1000"})).await;
    assert_eq!(status, 200, "{pf:#}");
    assert_eq!(pf["ok"], false, "no worker runs the real modules here");
    let msgs = pf["problems"].as_array().unwrap().iter().map(|p| p["message"].as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(msgs.contains("no live worker serves module `blender_still`"), "{msgs}");
    assert!(
        msgs.contains("the subject has no `cad_file`, which node `resolve` (cad.resolve) reads"),
        "a subject that would fail on the worker: {msgs}"
    );
    let still = pf["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "still").unwrap();
    assert_eq!((still["params"]["samples"].as_i64(), still["params"]["width"].as_i64()), (Some(16), Some(2000)));

    // A workflow of test nodes, with a worker that serves them: ready.
    let graph = json!({"family": "order_line", "nodes": [{"id": "a", "type": "util.noop"}, {"id": "b", "type": "util.sleep", "params": {"ms": 1}}],
                       "edges": [{"from": "a", "to": "b"}]});
    let (_, created) = post(&w, format!("{}/v1/workflows", c.url), json!({"name": "test", "family": "order_line", "graph": graph})).await;
    let test_wf = created["id"].as_str().unwrap().to_string();
    let (_, pf) = post(&w, format!("{}/v1/workflows/{test_wf}/preflight", c.url), json!({"subject": {}})).await;
    assert_eq!(pf["ok"], false, "no worker yet: {pf:#}");
    let worker = w.start_worker("w1", &[]);
    let _ = worker;
    let pf = renderfleet_tests::wait_until("the worker's heartbeat to reach preflight", Duration::from_secs(20), || async {
        let (_, pf) = post(&w, format!("{}/v1/workflows/{test_wf}/preflight", c.url), json!({"subject": {}})).await;
        (pf["ok"] == true).then_some(pf)
    })
    .await;
    assert_eq!(pf["modules"]["sleep"]["workers"].as_array().unwrap().len(), 1, "{pf:#}");
    // A draining worker takes no new work: it is not live for preflight.
    let nap = w.submit(&c, json!({"nodes": [{"id": "nap", "type": "util.sleep", "params": {"ms": 8000}}]})).await;
    w.wait_node(&c, nap, "nap", "running", Duration::from_secs(20)).await;
    w.signal("w1", nix::sys::signal::Signal::SIGTERM);
    renderfleet_tests::wait_until("the draining worker not counted", Duration::from_secs(20), || async {
        let draining = w.count("SELECT count(*) FROM workers WHERE status = 'draining'").await == 1;
        let (_, pf) = post(&w, format!("{}/v1/workflows/{test_wf}/preflight", c.url), json!({"subject": {}})).await;
        (draining && pf["ok"] == false).then_some(())
    })
    .await;
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 1, "preflight runs nothing (the one run is the sleep above)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_token_with_its_scope() {
    let mut w = World::new("auth").await;
    let c = w.start_coordinator("coordinator", &[("RENDERFLEET_MAX_REQUEST_BYTES", "4096")]).await;
    let bare = reqwest::Client::new();
    // Every operation of the OpenAPI document, which the router is built from.
    let doc: Value = bare.get(format!("{}/v1/openapi.json", c.url)).send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let url = format!(
                "{}{}",
                c.url,
                path.replace("{id}", "00000000-0000-0000-0000-000000000000").replace("{family}", "order_line").replace("{key}", "x")
            );
            let req = |token: Option<&str>| {
                let mut r =
                    bare.request(method.to_uppercase().parse().unwrap(), &url).header("content-type", "application/json").body("{}");
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                r.send()
            };
            let Some(scope) = op["security"][0]["bearer"][0].as_str() else {
                assert!(!path.starts_with("/v1/"), "{method} {path} is documented without a scope");
                assert_eq!(req(None).await.unwrap().status(), 200, "{method} {path} is open");
                continue;
            };
            checked += 1;
            let resp = req(None).await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} without a token");
            assert!(resp.headers().contains_key("www-authenticate"));
            let resp = req(Some("not-a-token")).await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with an unknown token");
            let other = if scope == "read" { "submit" } else { "read" };
            let resp = req(Some(renderfleet_tests::token(other))).await.unwrap();
            assert_eq!(resp.status(), 403, "{method} {path} with scope {other}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["message"].as_str().unwrap().contains(&format!("needs scope `{scope}`")), "{body:#}");
            for allowed in [scope, "admin"] {
                let status = req(Some(renderfleet_tests::token(allowed))).await.unwrap().status().as_u16();
                assert!(status != 401 && status != 403, "{method} {path} refused scope {allowed}: {status}");
            }
        }
    }
    assert!(checked >= 17, "only {checked} guarded operations in the document");
    // Open: health, readiness, metrics, the OpenAPI document.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(bare.get(format!("{}{path}", c.url)).send().await.unwrap().status(), 200, "{path}");
    }
    // An oversized body: a JSON error naming the limit and the setting.
    let resp = w
        .http
        .post(format!("{}/v1/workflows/validate", c.url))
        .header("content-type", "application/json")
        .body("x".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // axum's own refusals come in the API's error shape too.
    for (path, status, code, says) in
        [("/v1/nodes?bogus=1", 400, "invalid_request", "bogus"), ("/v1/nope", 404, "not_found", "GET /v1/nope")]
    {
        let resp = w.http.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], code, "{body:#}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body:#}");
    }
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");
    assert!(
        body["message"].as_str().unwrap().contains("4096 bytes")
            && body["message"].as_str().unwrap().contains("RENDERFLEET_MAX_REQUEST_BYTES")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_coordinator_refuses_to_start_and_metrics_can_move() {
    let mut w = World::new("auth_config").await;
    let c = w.spawn_coordinator("no-tokens", &[("RENDERFLEET_AUTH__TOKENS", "")]);
    let status = w.wait_exit("no-tokens", Duration::from_secs(20)).await;
    assert!(!status.success());
    assert!(w.log("no-tokens").contains("RENDERFLEET_AUTH__OPEN"), "{}", w.log("no-tokens"));
    let _ = c;
    let port = renderfleet_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let c = w.start_coordinator("split-metrics", &[("RENDERFLEET_METRICS_ADDR", addr.as_str())]).await;
    assert_eq!(w.http.get(format!("{}/metrics", c.url)).send().await.unwrap().status(), 404);
    assert_eq!(w.http.get(format!("http://{addr}/metrics")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderctl_validates_creates_and_repairs_workflows() {
    let mut w = World::new("renderctl_workflows").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let (_, mut starter) = get(&w, format!("{}/v1/workflows/starters/order_line", c.url)).await;
    let still = starter["nodes"].as_array_mut().unwrap().iter_mut().find(|n| n["id"] == "still").unwrap();
    still["params"]["sampels"] = json!(3);
    let file = std::env::temp_dir().join(format!("rf-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&file, starter.to_string()).unwrap();
    let path = file.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--coordinator", c.url.as_str()];
        all.extend_from_slice(args);
        let out = renderfleet_tests::renderctl(&all);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&["workflows", "validate", path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("did you mean `samples`?"), "{out}");
    starter["nodes"].as_array_mut().unwrap().iter_mut().find(|n| n["id"] == "still").unwrap()["params"]
        .as_object_mut()
        .unwrap()
        .remove("sampels");
    std::fs::write(&file, starter.to_string()).unwrap();
    let (code, out) = run(&["workflows", "create", path, "--name", "still"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("version 1 created"), "{out}");
    // A graph stored before a rename: repair --all --dry-run reports it and writes nothing.
    let old = json!({"family": "order_line", "nodes": [{"id": "a", "type": "noop", "params": {}}]});
    w.db()
        .await
        .execute(
            "INSERT INTO workflows (id, version, name, family, graph) VALUES ($1, 1, 'old', 'order_line', $2)",
            &[&uuid::Uuid::now_v7(), &old],
        )
        .await
        .unwrap();
    let (code, out) = run(&["workflows", "repair", "--all", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("`noop` is now `util.noop`") && out.contains("2 workflow(s): 1 would change"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM workflows").await, 2);
    let (code, out) = run(&["workflows", "repair", "--all"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM workflows").await, 3, "one new version, for the old graph only");
    // The example run files the README and the demo use hold their graph under `graph`:
    // the workflow commands take them as they are.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/examples");
    for example in ["order-line.json", "still-and-turntable.json"] {
        let path = examples.join(example);
        let path = path.to_str().unwrap();
        let (code, out) = run(&["workflows", "validate", path]);
        assert!(code == Some(0) && out.contains(": valid"), "workflows validate {example}: {out}");
        let (code, out) = run(&["workflows", "create", path, "--name", example]);
        assert!(code == Some(0) && out.contains("version 1 created"), "workflows create {example}: {out}");
    }
    let (code, out) = run(&["--help"]);
    assert!(code == Some(0) && out.contains("Exit status: 0 done; 1 the work failed") && out.contains("2 the command could not"), "{out}");
    let ot = json!({"key": "still-cli", "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 64}});
    assert_eq!(post(&w, format!("{}/v1/output-types", c.url), ot).await.0, 201);
    let (code, out) = run(&["output-types", "list"]);
    assert!(code == Some(0) && out.starts_with("KEY") && out.contains("still-cli") && out.contains("legacy"), "a table, not JSON: {out}");
    let (code, out) = run(&["--token", "not-a-token", "output-types", "list"]);
    assert!(code == Some(2) && out.contains("give one with --token or RENDERFLEET_TOKEN"), "the fix is the flag: {out}");
    let (_, out) = run(&["token", "new", "ops", "read+operate"]);
    assert!(out.contains("ops:read+operate:"), "{out}");
    let (code, out) = run(&["token", "new", "ops", "reed"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("unknown scope `reed`"), "{out}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_naming_the_field_and_nothing_is_written() {
    let mut w = World::new("nul_text").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let materials = w.count("SELECT count(*) FROM materials").await;
    let noop = json!({"nodes": [{"id": "a", "type": "util.noop"}]});
    let bodies = [
        ("/v1/runs", json!({"subject": {"name": "a\u{0}b"}, "graph": noop}), "`/subject/name`"),
        ("/v1/runs", json!({"subject": {}, "graph": {"nodes": [{"id": "a\u{0}", "type": "util.noop"}]}}), "`/graph/nodes/0/id`"),
        ("/v1/workflows", json!({"name": "still\u{0}", "family": "order_line", "graph": noop}), "`/name`"),
        ("/v1/workflows/validate", json!({"nodes": [{"id": "a", "type": "util.noop", "params": {"k\u{0}": 1}}]}), "`/nodes/0/params`"),
    ];
    for (path, body, field) in bodies {
        let (status, e) = post(&w, format!("{}{path}", c.url), body).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("nul_in_text")), "{path}: {e:#}");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(field) && m.contains("remove it"), "{path}: {m}");
    }
    let urls = [
        ("/v1/output-types/a%00b", "path parameter `key`"),
        ("/v1/comparisons?verdict=match&output_type=a%00b", "query parameter `output_type`"),
    ];
    for (path, field) in urls {
        let (status, e) = get(&w, format!("{}{path}", c.url)).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("nul_in_text")), "{path}: {e:#}");
        assert!(e["message"].as_str().unwrap().contains(field), "{path}: {e:#}");
    }
    let (status, e) = put(&w, format!("{}/v1/products/a%00b/material-map", c.url), json!({"assignments": {}})).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("nul_in_text")), "{e:#}");
    assert!(e["message"].as_str().unwrap().contains("path parameter `product`"), "{e:#}");
    let (status, e) = put(&w, format!("{}/v1/materials/st%00eel", c.url), json!({"base_color": "#B0B4B8"})).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("nul_in_text")), "{e:#}");
    for table in ["runs", "workflows", "product_material_maps"] {
        assert_eq!(w.count(&format!("SELECT count(*) FROM {table}")).await, 0, "{table} was written");
    }
    assert_eq!(w.count("SELECT count(*) FROM materials").await, materials);
}

/// Sends `request` on `stream` and reads one response: its head (lower-cased) and body.
async fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return (head, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.expect("an answer within 10 s").unwrap();
        assert!(n > 0, "the connection closed before a whole response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refusals_with_an_unread_body_close_the_connection_and_say_so() {
    let mut w = World::new("auth_close").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let addr = c.url.trim_start_matches("http://").to_string();
    let body = r#"{"nodes": [{"id": "a", "type": "util.noop"}]}"#;
    let post = |path: &str, token: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for (path, token, status) in [("/v1/workflows/validate", "not-a-token", 401), ("/v1/workflows", renderfleet_tests::token("read"), 403)]
    {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let (head, _) = exchange(&mut s, &post(path, token)).await;
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(
            head.lines().any(|l| l == "connection: close"),
            "a {status} that left the body unread must say `Connection: close`:\n{head}"
        );
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await.expect("the server closes the connection");
        assert!(matches!(end, Ok(0) | Err(_)), "nothing follows the answer: {end:?}");
    }
    // Without a body, a refusal keeps the connection, and the next request on it goes through.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let (head, _) = exchange(&mut s, &format!("GET /v1/nodes HTTP/1.1\r\nhost: {addr}\r\n\r\n")).await;
    assert!(head.starts_with("http/1.1 401") && !head.contains("connection: close"), "{head}");
    let (head, answer) = exchange(&mut s, &post("/v1/workflows/validate", renderfleet_tests::token("read"))).await;
    assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}\n{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_problems_answer_with_the_first_hundred_and_the_total() {
    let mut w = World::new("many_problems").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let edges: Vec<Value> = (0..5000).map(|_| json!({"from": "a", "to": "b"})).collect();
    let graph = json!({"nodes": [{"id": "a", "type": "util.noop"}, {"id": "b", "type": "util.noop"}], "edges": edges});
    let (status, e) = post(&w, format!("{}/v1/runs", c.url), json!({"subject": {}, "graph": graph})).await;
    assert_eq!((status, e["error"].as_str()), (422, Some("invalid_graph")), "{e:#}");
    assert_eq!((e["problems"].as_array().unwrap().len(), e["problems_total"].as_u64()), (100, Some(4999)));
    assert!(codes(&e).iter().all(|c| c == "duplicate_edge"), "{e:#}");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("4999 problem(s)") && m.contains("4899 more not shown"), "{m}");
    let (status, v) = post(&w, format!("{}/v1/workflows/validate", c.url), graph).await;
    assert_eq!((status, v["valid"].as_bool()), (200, Some(false)));
    assert_eq!((v["problems"].as_array().unwrap().len(), v["problems_total"].as_u64()), (100, Some(4999)));
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_would_fail_only_on_a_worker_is_refused_at_submission() {
    let mut w = World::new("worker_failures").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let turntable = |resolve: Value, turntable: Value| {
        json!({"family": "order_line", "nodes": [
            {"id": "resolve", "type": "cad.resolve", "params": resolve}, {"id": "export", "type": "cad.export_glb"},
            {"id": "turntable", "type": "render.turntable", "params": turntable}, {"id": "publish", "type": "output.publish"}],
            "edges": [{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "glb", "to": "turntable"},
                      {"from": "turntable", "to": "publish"}]})
    };
    let subject = json!({"product": "bracket", "cad_file": "bracket.stp"});
    let refusals = [
        (subject.clone(), turntable(json!({}), json!({"frame_range": {"start": 5, "end": 2}})), "invalid_param", "/frame_range"),
        (
            subject.clone(),
            turntable(json!({}), json!({"frame_count": 10, "frame_range": {"start": 0, "end": 10}})),
            "invalid_param",
            "/frame_range/end",
        ),
        (subject.clone(), turntable(json!({"max_bytes": 1e30}), json!({})), "invalid_param", "/max_bytes"),
        (json!({"cad_file": "/etc/passwd"}), turntable(json!({}), json!({})), "invalid_subject", "/subject/cad_file"),
        (json!({"cad_file": "../../etc/passwd"}), turntable(json!({}), json!({})), "invalid_subject", "/subject/cad_file"),
        (json!({"cad_file": ""}), turntable(json!({}), json!({})), "invalid_subject", "/subject/cad_file"),
    ];
    for (subject, graph, code, pointer) in refusals {
        let (status, e) = post(&w, format!("{}/v1/runs", c.url), json!({"subject": subject, "graph": graph})).await;
        assert_eq!(status, 422, "{e:#}");
        let p = e["problems"].as_array().unwrap().iter().find(|p| p["code"] == code);
        assert_eq!(p.map(|p| &p["param_path"]), Some(&json!(pointer)), "{subject} {code}: {e:#}");
    }
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0, "no refusal wrote anything");
    // The same graph with sound values runs; an integer written as a float is stored as an integer.
    let graph = turntable(json!({"max_bytes": 1e9}), json!({"frame_range": {"start": 2, "end": 5}}));
    let (status, e) = post(&w, format!("{}/v1/runs", c.url), json!({"subject": subject, "graph": graph})).await;
    assert_eq!(status, 201, "{e:#}");
    let row = w.db().await.query_one("SELECT params FROM node_runs WHERE node_id = 'resolve'", &[]).await.unwrap();
    assert_eq!(row.get::<_, Value>(0)["max_bytes"], json!(1_000_000_000u64));
    // A render request and a preflight check the subject too.
    let wf = image_workflow(&w, &c.url).await;
    output_type(
        &w,
        &c.url,
        json!({"key": "still", "family": "order_line", "artifact_kind": "image_png", "legacy_preset": {"resolution": 512}}),
    )
    .await;
    let bad = json!({"product": "bracket", "cad_file": "../x.stp"});
    let (status, e) = render(&w, &c.url, "ol-9", json!({"order_line_id": "ol-9", "subject": bad, "output_type": "still"})).await;
    assert_eq!((status, e["error"].as_str()), (422, Some("invalid_subject")), "{e:#}");
    assert_eq!(e["problems"][0]["param_path"], "/subject/cad_file");
    assert_eq!(w.count("SELECT count(*) FROM render_requests").await, 0);
    let (status, pf) = post(&w, format!("{}/v1/workflows/{wf}/preflight", c.url), json!({"subject": bad})).await;
    assert_eq!(status, 200, "{pf:#}");
    assert!(codes(&pf).contains(&"invalid_subject".to_string()), "{pf:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_metrics_pass_promtool_check_metrics() {
    // Without promtool this test fails rather than passing unchecked.
    if let Err(e) = std::process::Command::new("promtool").arg("--version").output() {
        panic!("promtool cannot run ({e}): install Debian's `prometheus` package (`apt-get install prometheus`), which provides /usr/bin/promtool");
    }
    let mut w = World::new("promtool").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let worker = w.start_worker("w1", &[]);
    let graph = json!({"nodes": [{"id": "a", "type": "util.noop"}, {"id": "b", "type": "util.fail", "params": {"times": 1}}],
                       "edges": [{"from": "a", "to": "b"}]});
    let id = w.submit(&c, graph).await;
    assert_eq!(w.wait_run(&c, id, Duration::from_secs(60)).await["status"], "succeeded");
    for (what, url) in [("coordinator", format!("{}/metrics", c.url)), ("worker", worker)] {
        let text = w.http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("renderfleet_") && text.contains("# HELP"), "{what}:\n{text}");
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on the {what}'s metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_saves_positions_and_messages_and_lists_versions() {
    let mut w = World::new("editor_versions").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let (_, mut starter) = get(&w, format!("{}/v1/workflows/starters/order_line", c.url)).await;
    starter["nodes"][0]["position"] = json!({"x": 12.5, "y": -40});
    let body = json!({"name": "still", "family": "order_line", "graph": starter, "message": "first draft"});
    let (status, created) = post(&w, format!("{}/v1/workflows", c.url), body).await;
    assert_eq!(status, 201, "{created:#}");
    assert_eq!(created["graph"]["nodes"][0]["position"], json!({"x": 12.5, "y": -40.0}), "positions pass validation unchanged");
    let id = created["id"].as_str().unwrap().to_string();
    let mut edited = starter.clone();
    edited["nodes"].as_array_mut().unwrap().truncate(3);
    edited["edges"] = json!([{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "parts", "to": "assign"}]);
    let (status, body) = put(
        &w,
        format!("{}/v1/workflows/{id}", c.url),
        json!({"name": "still", "family": "order_line", "graph": edited, "message": "x".repeat(501)}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (422, Some("invalid_message")), "{body:#}");
    assert!(body["message"].as_str().unwrap().contains("501 characters"), "{body:#}");
    let (status, v2) = put(
        &w,
        format!("{}/v1/workflows/{id}", c.url),
        json!({"name": "still v2", "family": "order_line", "graph": starter, "message": "é".repeat(500)}),
    )
    .await;
    assert_eq!(status, 200, "500 characters fit, however many bytes: {v2:#}");
    let (_, latest) = get(&w, format!("{}/v1/workflows/{id}", c.url)).await;
    assert_eq!((latest["version"].as_i64(), latest["message"].as_str().map(|m| m.chars().count())), (Some(2), Some(500)));
    assert_eq!(latest["graph"]["nodes"][0]["position"], json!({"x": 12.5, "y": -40.0}));
    let (_, v1) = get(&w, format!("{}/v1/workflows/{id}?version=1", c.url)).await;
    assert_eq!(v1["message"], "first draft");

    // A repair says what it was; a version saved without a message has none.
    w.db()
        .await
        .execute(
            "INSERT INTO workflows (id, version, name, family, graph) SELECT id, 3, name, family, graph #- '{nodes,3,params}' FROM workflows WHERE id = $1 AND version = 2",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap();
    let (_, repaired) = post(&w, format!("{}/v1/workflows/{id}/repair", c.url), json!({})).await;
    assert_eq!((repaired["changed"].as_bool(), repaired["version"].as_i64()), (Some(true), Some(4)), "{repaired:#}");
    let (status, versions) = get(&w, format!("{}/v1/workflows/{id}/versions", c.url)).await;
    assert_eq!(status, 200, "{versions:#}");
    assert_eq!(versions["id"], id.as_str());
    let items = versions["items"].as_array().unwrap();
    let summary: Vec<(i64, Value, Value)> =
        items.iter().map(|v| (v["version"].as_i64().unwrap(), v["message"].clone(), v["repaired_from"].clone())).collect();
    assert_eq!(
        summary,
        [
            (4, json!("repair of v3"), json!(3)),
            (3, Value::Null, Value::Null),
            (2, json!("é".repeat(500)), Value::Null),
            (1, json!("first draft"), Value::Null)
        ],
        "newest first"
    );
    assert_eq!(
        (items[0]["node_count"].as_i64(), items[0]["name"].as_str(), items[0]["mixed_family"].as_bool()),
        (Some(5), Some("still v2"), Some(false))
    );
    assert!(items[0]["created_at"].is_string() && items[0].get("graph").is_none(), "{:#}", items[0]);
    let (status, body) = get(&w, format!("{}/v1/workflows/{}/versions", c.url, uuid::Uuid::now_v7())).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("workflow_not_found")));

    // A position off any canvas is a problem on its node.
    let mut far = starter.clone();
    far["nodes"][1]["position"] = json!({"x": 0, "y": 1e8});
    let (_, v) = post(&w, format!("{}/v1/workflows/validate", c.url), far).await;
    assert_eq!((v["valid"].as_bool(), codes(&v)), (Some(false), vec!["invalid_field".to_string()]), "{v:#}");
    assert_eq!(v["problems"][0]["node_id"], "export");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_options_say_where_a_dragged_edge_fits_and_why_not() {
    let mut w = World::new("connections").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let (_, mut graph) = get(&w, format!("{}/v1/workflows/starters/order_line", c.url)).await;
    graph["nodes"].as_array_mut().unwrap().push(json!({"id": "encode", "type": "video.encode"}));
    graph["nodes"].as_array_mut().unwrap().push(json!({"id": "publish2", "type": "output.publish"}));
    let url = format!("{}/v1/workflows/connections", c.url);
    let read = reqwest::Client::new();
    let ask = |body: Value| {
        let (read, url) = (read.clone(), url.clone());
        async move {
            let resp = read.post(url).bearer_auth(renderfleet_tests::token("read")).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, o) = ask(json!({"graph": graph, "from": {"node": "still", "port": "image"}})).await;
    assert_eq!(status, 200, "{o:#}");
    let target =
        |node: &str, port: &str| o["targets"].as_array().unwrap().iter().find(|t| t["node"] == node && t["port"] == port).unwrap().clone();
    assert_eq!(target("publish2", "artifact"), json!({"node": "publish2", "port": "artifact", "fits": true, "reason": null}));
    assert_eq!(target("encode", "frames")["reason"], "`still.image` gives image_png; `encode.frames` takes frames");
    assert_eq!(target("publish", "artifact")["reason"], "`still.image` → `publish.artifact` is already connected");
    assert_eq!(o["node_types"], json!([{"type_key": "output.publish", "port": "artifact"}]));
    let (status, o) = ask(json!({"graph": graph, "to": {"node": "still", "port": "glb"}})).await;
    assert_eq!(status, 200, "{o:#}");
    let glb = o["targets"].as_array().unwrap().iter().find(|t| t["node"] == "export" && t["port"] == "glb").unwrap();
    assert_eq!(glb["reason"], "`export.glb` → `still.glb` is already connected", "{o:#}");

    for (body, code, says) in [
        (json!({"graph": graph}), "invalid_request", "exactly one of `from`"),
        (
            json!({"graph": graph, "from": {"node": "still", "port": "image"}, "to": {"node": "publish2", "port": "artifact"}}),
            "invalid_request",
            "exactly one",
        ),
        (json!({"graph": graph, "from": {"node": "ghost", "port": "image"}}), "unknown_node", "`ghost`"),
        (
            json!({"graph": graph, "from": {"node": "still", "port": "frames"}}),
            "unknown_port",
            "no output `frames`; its outputs: `image` (image_png)",
        ),
    ] {
        let (status, e) = ask(body).await;
        assert_eq!((status, e["error"].as_str()), (422, Some(code)), "{e:#}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e:#}");
    }
}

/// The coordinator binary next to this test's (target/debug/).
fn coordinator_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("coordinator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_openapi_prints_the_served_document_without_a_server() {
    // No configuration, database or broker: an empty environment.
    let out = std::process::Command::new(coordinator_bin()).arg("openapi").env_clear().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut w = World::new("openapi_cli").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    let served = reqwest::get(format!("{}/v1/openapi.json", c.url)).await.unwrap().bytes().await.unwrap();
    assert!(out.stdout == served, "`coordinator openapi` differs from /v1/openapi.json");
    let doc: Value = serde_json::from_slice(&served).unwrap();
    for schema in ["Palette", "NodeType", "ValidationView", "ConnectionOptions", "WorkflowVersions", "Position"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "no schema {schema}");
    }
    assert_eq!(doc["paths"]["/v1/workflows/connections"]["post"]["security"], json!([{"bearer": ["read"]}]));
    assert_eq!(doc["paths"]["/v1/workflows/{id}/versions"]["get"]["security"], json!([{"bearer": ["read"]}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_test_types_appear_only_where_enabled() {
    let mut w = World::new("registry_probe").await;
    let plain = w.start_coordinator("plain", &[]).await;
    let probed = w.start_coordinator("probed", &[("RENDERFLEET_REGISTRY_TEST_TYPES", "1")]).await;
    let probe = |palette: &Value| palette["node_types"].as_array().unwrap().iter().find(|t| t["type_key"] == "test.palette_probe").cloned();
    let (_, palette) = get(&w, format!("{}/v1/nodes", plain.url)).await;
    assert_eq!(probe(&palette), None, "not without RENDERFLEET_REGISTRY_TEST_TYPES=1");
    let (_, palette) = get(&w, format!("{}/v1/nodes", probed.url)).await;
    // Tests run the debug binaries; a release build has no test types whatever it is told.
    if cfg!(not(debug_assertions)) {
        assert_eq!(probe(&palette), None);
        return;
    }
    let t = probe(&palette).expect("the probe in a debug build with RENDERFLEET_REGISTRY_TEST_TYPES=1");
    assert_eq!(
        (t["palette_group"].as_str(), t["execution_role"].as_str(), t["editor_visible"].as_bool()),
        (Some("Test probes"), Some("transform"), Some(true))
    );
    assert_eq!(t["inputs"], json!([{"name": "image", "kind": "image_png", "required": true, "many": false}]));
    assert_eq!(t["outputs"], json!([{"name": "image", "kind": "image_png", "required": false, "many": false}]));
    let props = &t["params_schema"]["properties"];
    assert_eq!(
        (props["strength"]["default"].as_i64(), props["mode"]["enum"].clone(), props["tint"]["properties"]["g"]["default"].as_f64()),
        (Some(3), json!(["soft", "hard"]), Some(0.5))
    );
    assert!(palette["by_family"]["order_line"].as_array().unwrap().contains(&json!("test.palette_probe")));
    assert!(!palette["by_family"]["cad_file"].as_array().unwrap().contains(&json!("test.palette_probe")));
    assert_eq!(palette["by_module"]["test.palette_probe"], json!(["test.palette_probe"]));

    // It is a node type like any other: validation fills its defaults, and a drag offers it.
    let (_, mut graph) = get(&w, format!("{}/v1/workflows/starters/order_line", probed.url)).await;
    graph["nodes"].as_array_mut().unwrap().push(json!({"id": "probe", "type": "test.palette_probe", "params": {"strength": 7}}));
    graph["edges"] = json!([{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "parts", "to": "assign"},
                            {"from": "export", "from_port": "glb", "to": "still"}, {"from": "assign", "to": "still", "to_port": "materials"},
                            {"from": "still", "to": "probe"}, {"from": "probe", "to": "publish"}]);
    let (_, v) = post(&w, format!("{}/v1/workflows/validate", probed.url), graph.clone()).await;
    assert_eq!(v["problems"], json!([]), "{v:#}");
    let params = &v["normalized"]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "probe").unwrap()["params"];
    assert_eq!(params, &json!({"strength": 7, "mode": "soft", "tint": {"r": 0.5, "g": 0.5, "b": 0.5}}));
    let (_, o) =
        post(&w, format!("{}/v1/workflows/connections", probed.url), json!({"graph": graph, "from": {"node": "still", "port": "image"}}))
            .await;
    assert!(o["node_types"].as_array().unwrap().contains(&json!({"type_key": "test.palette_probe", "port": "image"})), "{o:#}");
    let (_, v) = post(&w, format!("{}/v1/workflows/validate", plain.url), graph).await;
    assert!(codes(&v).contains(&"unknown_node_type".to_string()), "{v:#}");

    // The probed coordinator declared the probe's queue; this world's clean-up knows only
    // the modules of the test process's registry.
    let conn = w.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(w.topology.task_queue("test.palette_probe").as_str().into(), lapin::options::QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_newest_first_filtered_and_paged_by_cursor() {
    let mut w = World::new("runs_list").await;
    let c = w.start_coordinator("coordinator", &[]).await;
    w.start_worker("w1", &[]);
    let mut ids = Vec::new();
    for i in 0..7 {
        let graph = if i % 3 == 2 {
            json!({"nodes": [{"id": "boom", "type": "util.fail", "params": {"times": 9}, "max_attempts": 1}]})
        } else {
            json!({"nodes": [{"id": "a", "type": "util.noop"}]})
        };
        ids.push(w.submit(&c, graph).await);
    }
    for id in &ids {
        w.wait_run(&c, *id, Duration::from_secs(30)).await;
    }
    let (status, failed) = get(&w, format!("{}/v1/runs?status=failed", c.url)).await;
    assert_eq!(status, 200, "{failed:#}");
    let items = failed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{failed:#}");
    assert!(items.iter().all(|r| r["status"] == "failed" && r["failing_node"] == "boom"), "{failed:#}");
    assert_eq!(items[0]["id"], ids[5].to_string(), "newest first");
    // Pages of three: 3, 3, 1, and no cursor after the last.
    let mut seen = Vec::new();
    let mut after = String::new();
    for want in [3, 3, 1] {
        let (_, page) = get(&w, format!("{}/v1/runs?limit=3&after={}", c.url, urlencode(&after))).await;
        assert_eq!(page["items"].as_array().unwrap().len(), want, "{page:#}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
        after = page["next"].as_str().unwrap_or_default().to_string();
        assert_eq!(after.is_empty(), want == 1, "{page:#}");
    }
    let newest_first: Vec<String> = ids.iter().rev().map(|i| i.to_string()).collect();
    assert_eq!(seen, newest_first);
    let (status, e) = get(&w, format!("{}/v1/runs/{}", c.url, uuid::Uuid::nil())).await;
    assert!(status == 404 && e["message"].as_str().unwrap().contains("`renderctl runs list`"), "the hint leads somewhere: {e:#}");
    let (status, e) = get(&w, format!("{}/v1/runs?status=queued", c.url)).await;
    assert_eq!(status, 400, "{e:#}");
    let (status, e) = get(&w, format!("{}/v1/runs?after=yesterday", c.url)).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_query")), "{e:#}");
    let out = renderfleet_tests::renderctl(&["--coordinator", &c.url, "runs", "list", "--status", "failed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("RUN") && text.lines().filter(|l| l.contains(" failed ")).count() == 2, "{text}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
