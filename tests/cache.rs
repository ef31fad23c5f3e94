//! The node result cache (issue 13) against real workers, CAD files and the artifact store:
//! a repeat is served without a worker, and everything that changes the bytes (a param, a
//! tool's version, an input) or makes an entry useless (its artifact deleted) is a miss; a
//! refresh re-runs on purpose; failures are never stored; a fleet whose workers disagree on
//! their build serves nothing.

use fantoccini::Locator;
use renderfleet_tests::browser::Browser;
use renderfleet_tests::{metric, node, wait_until, Coord, World};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);
const MODULES: &str = "cad_resolve,glb_export,metadata,publish";

/// STEP → GLB → metadata → published: two cacheable nodes behind one that reads the file by
/// name, and one that publishes (never cached).
fn graph(tol_linear: f64) -> Value {
    json!({
        "nodes": [
            {"id": "resolve", "type": "cad.resolve"},
            {"id": "export", "type": "cad.export_glb", "params": {"tol_linear": tol_linear}},
            {"id": "meta", "type": "cad.extract_metadata"},
            {"id": "publish", "type": "output.publish", "params": {"name": "metadata"}}
        ],
        "edges": [
            {"from": "resolve", "to": "export"},
            {"from": "export", "from_port": "glb", "to": "meta", "to_port": "glb"},
            {"from": "meta", "from_port": "metadata", "to": "publish"}
        ]
    })
}

fn subject(order_line: u32) -> Value {
    json!({"cad_file": "splinecage.stp", "product": "splinecage", "order_line": order_line})
}

async fn submit(w: &World, c: &Coord, subject: Value, graph: Value, cache: &str) -> Uuid {
    let body = json!({"subject": subject, "graph": graph, "cache": cache});
    let resp = w.http.post(format!("{}/v1/runs", c.url)).json(&body).send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["run_id"].as_str().unwrap().parse().unwrap()
}

async fn succeeded(w: &World, c: &Coord, id: Uuid) -> Value {
    let run = w.wait_run(c, id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{}", serde_json::to_string_pretty(&run).unwrap());
    run
}

/// Who produced the node's outputs: `Ok(run)` the run it was cached from, `Err(worker)` a worker.
fn source(run: &Value, id: &str) -> Result<String, String> {
    let n = node(run, id).unwrap();
    match n.get("cached") {
        Some(c) => {
            assert_eq!(n["worker_id"], "cache", "{n}");
            Ok(c["from_run"].as_str().unwrap().to_string())
        }
        None => Err(n["worker_id"].as_str().unwrap().to_string()),
    }
}

async fn misses(w: &World, c: &Coord, reason: &str) -> f64 {
    metric(&w.http, &format!("{}/metrics", c.url), "renderfleet_cache_misses_total", &[("module", "glb_export"), ("reason", reason)]).await
}

/// A Python that is the real one except that it reports cascadio `version`: what a worker
/// sees after an upgrade of its CAD kernel.
fn python_reporting(w: &World, version: &str) -> String {
    let dir = w.artifacts_dir().parent().unwrap().join(format!("python-{version}"));
    let dist = dir.join(format!("cascadio-{version}.dist-info"));
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("METADATA"), format!("Metadata-Version: 2.1\nName: cascadio\nVersion: {version}\n")).unwrap();
    let real = std::env::var("RENDERFLEET_TOOLS__PYTHON").unwrap_or_else(|_| "python3".into());
    let wrapper = dir.join("python");
    let script = format!("#!/bin/sh\nPYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} exec {real} \"$@\"\n", dir.display());
    std::fs::write(&wrapper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

async fn stop(w: &mut World, name: &str) {
    w.signal(name, nix::sys::signal::Signal::SIGTERM);
    w.wait_exit(name, Duration::from_secs(30)).await;
    let db = w.db().await;
    wait_until(&format!("{name} to report stopped"), Duration::from_secs(10), || {
        let db = &db;
        async move {
            let r = db.query_one("SELECT status FROM workers WHERE id = $1", &[&name]).await.ok()?;
            (r.get::<_, String>(0) == "stopped").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_comes_from_the_cache_until_something_that_changes_the_bytes_changes() {
    let mut w = World::new("cache_hits").await;
    let store = w.artifacts_dir().display().to_string();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &store)]).await;
    w.start_render_worker("w1", MODULES, &[]);
    let db = w.db().await;

    // First order line: everything runs.
    let first = submit(&w, &c, subject(1), graph(0.1), "use").await;
    let a = succeeded(&w, &c, first).await;
    for id in ["resolve", "export", "meta"] {
        assert_eq!(source(&a, id), Err("w1".into()), "{id}");
    }
    assert_eq!(w.count(&format!("SELECT count(*) FROM node_cache WHERE run_id = '{first}'")).await, 2, "export and meta are stored");

    // A second order line for the same product: the file is read again (it could have
    // changed), its bytes are the same, so export and metadata come from the first run.
    let second = submit(&w, &c, subject(2), graph(0.1), "use").await;
    let b = succeeded(&w, &c, second).await;
    assert_eq!(source(&b, "resolve"), Err("w1".into()));
    assert_eq!(source(&b, "export"), Ok(first.to_string()));
    assert_eq!(source(&b, "meta"), Ok(first.to_string()));
    assert_eq!(node(&b, "export").unwrap()["outputs"], node(&a, "export").unwrap()["outputs"]);
    assert_eq!(node(&b, "meta").unwrap()["outputs"], node(&a, "meta").unwrap()["outputs"]);
    let hits = metric(&w.http, &format!("{}/metrics", c.url), "renderfleet_cache_hits_total", &[("module", "glb_export")]).await;
    assert_eq!(hits, 1.0);
    let text =
        String::from_utf8(renderfleet_tests::renderctl(&["--coordinator", &c.url, "runs", "show", &second.to_string()]).stdout).unwrap();
    assert!(text.contains(&format!("cached: outputs from run {first}")), "renderctl shows the source: {text}");
    // The console's run page marks the cached nodes and links the run they came from.
    let browser = Browser::start(&w.data_dir.join("chromium-profile"), "cache").await;
    browser.sign_in(&c.url, renderfleet_tests::token("read")).await;
    browser.client.goto(&format!("{}/console/runs/{second}", c.url)).await.unwrap();
    let export = browser.client.find(Locator::Id("node-export")).await.unwrap();
    let summary = export.find(Locator::Css("summary")).await.unwrap();
    assert!(summary.text().await.unwrap().contains("cached"));
    summary.click().await.unwrap();
    let resolve = browser.client.find(Locator::Css("#node-resolve summary")).await.unwrap().text().await.unwrap();
    assert!(!resolve.contains("cached"), "{resolve}");
    let link = export.find(Locator::Css("p.cached a")).await.unwrap();
    assert_eq!(link.attr("href").await.unwrap(), Some(format!("/console/runs/{first}#node-export")));
    browser.shot("run-with-cached-nodes.png").await;
    browser.close().await;

    // A param that changes the bytes: a miss, and a new entry.
    let finer = submit(&w, &c, subject(3), graph(0.05), "use").await;
    let f = succeeded(&w, &c, finer).await;
    assert_eq!(source(&f, "export"), Err("w1".into()), "another tolerance is other work");
    assert_ne!(node(&f, "export").unwrap()["outputs"]["glb"]["sha256"], node(&a, "export").unwrap()["outputs"]["glb"]["sha256"]);

    // A refresh runs everything on purpose and replaces the entries.
    let again = submit(&w, &c, subject(4), graph(0.1), "refresh").await;
    let r = succeeded(&w, &c, again).await;
    assert_eq!((source(&r, "export"), source(&r, "meta")), (Err("w1".into()), Err("w1".into())));
    assert_eq!(r["cache"], "refresh");
    assert_eq!(misses(&w, &c, "refresh").await, 1.0);
    let holder: Uuid = db
        .query_one("SELECT run_id FROM node_cache WHERE module_key = 'glb_export' ORDER BY created_at DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holder, again, "the refreshed result is the entry now");

    // The entry's GLB pruned from the store: not a hit; the export runs and is stored again.
    let glb = node(&r, "export").unwrap()["outputs"]["glb"].clone();
    std::fs::remove_file(w.artifact_path(&glb)).unwrap();
    let pruned = submit(&w, &c, subject(5), graph(0.1), "use").await;
    let p = succeeded(&w, &c, pruned).await;
    assert_eq!(source(&p, "export"), Err("w1".into()), "an entry whose bytes are gone answers nothing");
    assert!(w.artifact_path(&glb).exists(), "the export wrote the GLB again");
    assert_eq!(misses(&w, &c, "artifact_missing").await, 1.0);
    // Its metadata input has the same bytes as before: that node still hits.
    assert_eq!(source(&p, "meta"), Ok(again.to_string()));

    // A CAD kernel upgrade rolling through the fleet: while the two builds are live side by
    // side, nothing is served or stored; once only the new one is, its results are its own.
    let newer = python_reporting(&w, "9.9.9");
    w.start_render_worker("w2", MODULES, &[("RENDERFLEET_TOOLS__PYTHON", &newer)]);
    wait_until("w2 to heartbeat", Duration::from_secs(30), || async {
        w.count("SELECT count(*) FROM workers WHERE id = 'w2'").await.eq(&1).then_some(())
    })
    .await;
    let tools: Value = db.query_one("SELECT tools FROM workers WHERE id = 'w2'", &[]).await.unwrap().get(0);
    assert_eq!(tools["cascadio"], "9.9.9", "the wrapper is what the worker reports: {tools}");
    let entries = w.count("SELECT count(*) FROM node_cache").await;
    let mixed = submit(&w, &c, subject(6), graph(0.1), "use").await;
    let m = succeeded(&w, &c, mixed).await;
    assert!(source(&m, "export").is_err(), "two builds live: no hit");
    assert_eq!(misses(&w, &c, "fleet_mixed").await, 1.0);
    assert_eq!(w.count("SELECT count(*) FROM node_cache").await, entries, "and nothing stored under either build");

    stop(&mut w, "w1").await;
    let upgraded = submit(&w, &c, subject(7), graph(0.1), "use").await;
    let u = succeeded(&w, &c, upgraded).await;
    assert_eq!(source(&u, "export"), Err("w2".into()), "the old build's GLB is never served for the new build's key");
    let later = submit(&w, &c, subject(8), graph(0.1), "use").await;
    let l = succeeded(&w, &c, later).await;
    assert_eq!(source(&l, "export"), Ok(upgraded.to_string()), "the new build's own result is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_never_cached() {
    let mut w = World::new("cache_failures").await;
    let store = w.artifacts_dir().display().to_string();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &store)]).await;
    w.start_render_worker("w1", MODULES, &[]);
    let broken = |line: u32| json!({"cad_file": "truncated.stp", "product": "truncated", "order_line": line});
    let mut errors = Vec::new();
    for line in [1, 2] {
        let id = submit(&w, &c, broken(line), graph(0.1), "use").await;
        let run = w.wait_run(&c, id, RUN_TIMEOUT).await;
        assert_eq!(run["status"], "failed", "{run}");
        let export = node(&run, "export").unwrap();
        assert_eq!(export["status"], "failed");
        assert_eq!(source(&run, "export"), Err("w1".into()), "each failure is a worker's own attempt");
        errors.push(export["error"]["message"].as_str().unwrap().to_string());
    }
    assert_eq!(w.count("SELECT count(*) FROM node_cache").await, 0);
    assert!(errors.iter().all(|e| !e.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frames_entry_missing_one_frame_is_not_a_hit() {
    let mut w = World::new("cache_frames").await;
    let store = w.artifacts_dir().display().to_string();
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &store)]).await;
    w.start_render_worker("w1", "cad_resolve,glb_export,materials,blender_turntable,video_encode,publish", &[]);
    let graph = renderfleet_tests::graphs::turntable(json!({"width": 32, "height": 32, "samples": 2, "frame_count": 3}));
    let first = submit(&w, &c, subject(1), graph.clone(), "use").await;
    let a = succeeded(&w, &c, first).await;
    assert_eq!(source(&a, "turntable"), Err("w1".into()));
    // The manifest stays; one frame it names is pruned. The encode after a hit would fail.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(w.artifact_path(&node(&a, "turntable").unwrap()["outputs"]["frames"])).unwrap()).unwrap();
    std::fs::remove_file(w.artifact_path(&manifest["frames"][1])).unwrap();
    let second = submit(&w, &c, subject(2), graph, "use").await;
    let b = succeeded(&w, &c, second).await;
    assert_eq!(source(&b, "export"), Ok(first.to_string()), "the export's artifacts are all there");
    assert_eq!(source(&b, "turntable"), Err("w1".into()), "frames are rendered again");
    assert_eq!(
        node(&b, "turntable").unwrap()["outputs"]["frames"]["sha256"],
        node(&a, "turntable").unwrap()["outputs"]["frames"]["sha256"]
    );
    assert!(w.artifact_path(&manifest["frames"][1]).exists(), "the frame is back");
}
