//! The render benchmark (`bench --render`): what Blender time costs and what the fleet saves
//! of it, on the CAD fixtures and the real binaries, side by side in one run. Node times are
//! the workers' own start and finish stamps in PostgreSQL; each figure is a median.
//!
//! - stills, small (128 px, 8 samples) and product (512 px, 32 samples): a fresh Blender per
//!   still (what Deadline and Flamenco do) against warm processes, one slot, one still at a time;
//! - the same order line requested twice: the second request's cacheable module runs and its
//!   time from submission to done;
//! - three legacy output types of one product, one after another: STEP exports performed;
//! - a 36-frame turntable in chunks of 6: one single-threaded worker against two.

use renderfleet_tests::{Coord, World};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

use crate::median;

const LONG: Duration = Duration::from_secs(1800);
const ALL: &str = "cad_resolve,glb_export,metadata,materials,blender_still,blender_turntable,video_encode,publish,legacy_render";
const FIXTURES: [&str; 4] = ["as1-oc-214.stp", "as1_pe_203.stp", "face_recognition_sample_part.stp", "splinecage.stp"];

/// How much of it to run.
#[derive(Clone, Copy)]
pub(crate) struct RenderSizes {
    pub(crate) fixtures: usize,
    /// Stills per fixture and mode.
    pub(crate) repeats: usize,
    pub(crate) product_px: u32,
    pub(crate) product_samples: u32,
    pub(crate) turntable_frames: u32,
    pub(crate) turntable_px: u32,
    pub(crate) turntable_samples: u32,
}

impl RenderSizes {
    pub(crate) fn of(quick: bool, repeats: usize) -> Self {
        if quick {
            RenderSizes {
                fixtures: 1,
                repeats: 1,
                product_px: 128,
                product_samples: 8,
                turntable_frames: 12,
                turntable_px: 32,
                turntable_samples: 2,
            }
        } else {
            RenderSizes {
                fixtures: 4,
                repeats: repeats.max(1),
                product_px: 512,
                product_samples: 32,
                turntable_frames: 36,
                turntable_px: 128,
                turntable_samples: 16,
            }
        }
    }
}

/// One line of the render table: a figure, and what it is compared with.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RenderRow {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    /// (what, value) of the other side.
    pub(crate) against: Option<(String, f64)>,
    /// against / value for times (> 1: this side is faster), or the row's own ratio.
    pub(crate) ratio: Option<f64>,
    pub(crate) goal: &'static str,
}

fn seconds(n: &Value, from: &str, to: &str) -> f64 {
    let t = |k: &str| chrono::DateTime::parse_from_rfc3339(n[k].as_str().unwrap_or_default()).ok();
    match (t(from), t(to)) {
        (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => f64::NAN,
    }
}

fn node<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["nodes"].as_array().and_then(|ns| ns.iter().find(|n| n["node_id"] == id)).unwrap_or(&Value::Null)
}

async fn succeeded(w: &World, c: &Coord, id: Uuid) -> anyhow::Result<Value> {
    let run = w.wait_run(c, id, LONG).await;
    anyhow::ensure!(run["status"] == "succeeded", "run {id} did not succeed: {}", run["error"]);
    Ok(run)
}

/// Median wall time of the still node with a fresh Blender per still and with warm
/// processes: (fresh, warm). Two worlds, each a coordinator and a one-slot worker, live side
/// by side; the stills alternate between them, one at a time, so both sides see the same
/// machine (a drift in its speed falls on both).
async fn stills(sizes: RenderSizes, px: u32, samples: u32) -> anyhow::Result<(f64, f64)> {
    let mut sides = Vec::new();
    for warm in [false, true] {
        let mut w = World::new(if warm { "bench_warm" } else { "bench_cold" }).await;
        let c = w.start_coordinator("c1", &[("RENDERFLEET_CACHE__ENABLED", "false")]).await;
        let mode = if warm { "true" } else { "false" };
        w.start_render_worker("w1", ALL, &[("RENDERFLEET_CONCURRENCY", "1"), ("RENDERFLEET_BLENDER__WARM", mode)]);
        sides.push((w, c, Vec::new()));
    }
    let graph = renderfleet_tests::graphs::still(px, samples);
    // One still each first, not counted: it starts the warm process and warms the file caches.
    for (w, c, _) in &sides {
        succeeded(w, c, w.submit_for(c, json!({"cad_file": FIXTURES[0], "product": "warm-up"}), graph.clone()).await).await?;
    }
    for f in FIXTURES.iter().take(sizes.fixtures) {
        for _ in 0..sizes.repeats {
            for (w, c, times) in sides.iter_mut() {
                let run = succeeded(w, c, w.submit_for(c, json!({"cad_file": f, "product": f}), graph.clone()).await).await?;
                times.push(seconds(node(&run, "still"), "started_at", "finished_at"));
            }
        }
    }
    let mut medians = sides.into_iter().map(|(_, _, times)| median(times));
    Ok((medians.next().unwrap_or(f64::NAN), medians.next().unwrap_or(f64::NAN)))
}

/// The second request of the same order line: (cacheable module runs, its nodes, seconds
/// from submission to done, the first request's seconds).
async fn repeat() -> anyhow::Result<(f64, usize, f64, f64)> {
    let mut w = World::new("bench_repeat").await;
    let store = w.artifacts_dir();
    std::fs::create_dir_all(&store)?;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &store.display().to_string())]).await;
    w.start_render_worker("w1", ALL, &[]);
    let subject = json!({"cad_file": FIXTURES[0], "product": "as1", "order_line": "ol-1"});
    let first = succeeded(&w, &c, w.submit_for(&c, subject.clone(), renderfleet_tests::graphs::still(128, 8)).await).await?;
    let second = succeeded(&w, &c, w.submit_for(&c, subject, renderfleet_tests::graphs::still(128, 8)).await).await?;
    let nodes = second["nodes"].as_array().cloned().unwrap_or_default();
    let cacheable = ["glb_export", "materials", "blender_still"];
    let ran = nodes.iter().filter(|n| cacheable.contains(&n["module"].as_str().unwrap_or("")) && n["worker_id"] != "cache").count();
    Ok((ran as f64, nodes.len(), seconds(&second, "created_at", "finished_at"), seconds(&first, "created_at", "finished_at")))
}

/// Three legacy output types of one product, requested one after another: STEP exports
/// performed (export nodes a worker ran, and exports inside legacy tasks).
async fn legacy_exports() -> anyhow::Result<f64> {
    let mut w = World::new("bench_legacy").await;
    let store = w.artifacts_dir();
    std::fs::create_dir_all(&store)?;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &store.display().to_string())]).await;
    w.start_render_worker("w1", ALL, &[]);
    let kinds = [("glb", json!({})), ("metadata_json", json!({})), ("image_png", json!({"resolution": 128, "samples": 8}))];
    for (kind, preset) in &kinds {
        let body = json!({"key": format!("legacy-{kind}"), "family": "order_line", "artifact_kind": kind, "legacy_preset": preset});
        let r = w.http.post(format!("{}/v1/output-types", c.url)).json(&body).send().await?;
        anyhow::ensure!(r.status().is_success(), "output type {kind}: {}", r.text().await?);
    }
    let mut runs = Vec::new();
    for (kind, _) in &kinds {
        let body = json!({"order_line_id": "ol-7", "subject": {"cad_file": FIXTURES[0], "product": "as1"}, "output_type": format!("legacy-{kind}")});
        let r = w
            .http
            .post(format!("{}/v1/render-requests", c.url))
            .header("Idempotency-Key", format!("ol-7/{kind}"))
            .json(&body)
            .send()
            .await?;
        let v: Value = r.json().await?;
        let run: Uuid = v["run"]["run_id"].as_str().unwrap_or_default().parse()?;
        runs.push(succeeded(&w, &c, run).await?);
    }
    let mut exports = 0;
    for run in &runs {
        for n in run["nodes"].as_array().into_iter().flatten() {
            let exported_here = n["module"] == "glb_export" && n["worker_id"] != "cache";
            let inside_legacy = n["module"] == "legacy_render" && n["outputs"]["step_seconds"].get("export").is_some();
            exports += usize::from(exported_here) + usize::from(inside_legacy);
        }
    }
    Ok(exports as f64)
}

/// Seconds from the first chunk's start to the join's end, with `workers` single-threaded
/// workers of one slot each (the median of `repeats` turntables, one after another).
async fn turntable(sizes: RenderSizes, workers: usize) -> anyhow::Result<f64> {
    let mut w = World::new(&format!("bench_turntable_{workers}")).await;
    let c = w.start_coordinator("c1", &[("RENDERFLEET_CACHE__ENABLED", "false")]).await;
    for i in 0..workers {
        w.start_render_worker(&format!("w{i}"), ALL, &[("RENDERFLEET_CONCURRENCY", "1"), ("RENDERFLEET_BLENDER__THREADS", "1")]);
    }
    let db = w.db().await;
    renderfleet_tests::wait_until("the workers", Duration::from_secs(120), || async {
        let n: i64 = db.query_one("SELECT count(*) FROM workers WHERE status <> 'stopped'", &[]).await.ok()?.get(0);
        (n as usize == workers).then_some(())
    })
    .await;
    // A still first on every worker, so each has its warm process before the clock starts.
    for _ in 0..workers {
        let id = w.submit_for(&c, json!({"cad_file": FIXTURES[0], "product": "warm-up"}), renderfleet_tests::graphs::still(32, 1)).await;
        succeeded(&w, &c, id).await?;
    }
    let graph = renderfleet_tests::graphs::turntable(json!({
        "width": sizes.turntable_px, "height": sizes.turntable_px, "samples": sizes.turntable_samples,
        "frame_count": sizes.turntable_frames, "chunking": {"frames_per_chunk": 6}
    }));
    let mut times = Vec::new();
    for _ in 0..sizes.repeats {
        let run = succeeded(&w, &c, w.submit_for(&c, json!({"cad_file": FIXTURES[0], "product": "as1"}), graph.clone()).await).await?;
        let chunks: Vec<&Value> = run["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["node_id"].as_str().unwrap_or("").starts_with("turntable.frames-"))
            .collect();
        let first = chunks.iter().filter_map(|n| n["started_at"].as_str()).min().unwrap_or_default().to_string();
        times.push(seconds(&json!({"from": first, "to": node(&run, "turntable")["finished_at"]}), "from", "to"));
    }
    Ok(median(times))
}

pub(crate) async fn measure(sizes: RenderSizes) -> anyhow::Result<Vec<RenderRow>> {
    let mut rows = Vec::new();
    for (label, px, samples, goal) in
        [("small still", 128, 8, "≥ 5×"), ("product still", sizes.product_px, sizes.product_samples, "≥ 1.3×")]
    {
        eprintln!("bench: render: {label}, a fresh Blender per still and warm processes, in turn");
        let (cold, warm) = stills(sizes, px, samples).await?;
        rows.push(RenderRow {
            name: format!("{label} ({px} px, {samples} samples): wall per still, warm processes"),
            value: warm,
            unit: "s",
            against: Some(("a fresh Blender per still".into(), cold)),
            ratio: Some(cold / warm),
            goal,
        });
    }
    eprintln!("bench: render: the same order line twice");
    let (ran, nodes, second, first) = repeat().await?;
    rows.push(RenderRow {
        name: format!("the same order line requested again: cacheable module runs (of {nodes} nodes)"),
        value: ran,
        unit: "runs",
        against: None,
        ratio: None,
        goal: "0",
    });
    rows.push(RenderRow {
        name: "the same order line requested again: submission to done (cad.resolve and publish still run)".into(),
        value: second * 1000.0,
        unit: "ms",
        against: Some(("the first request".into(), first * 1000.0)),
        ratio: Some(first / second),
        goal: "≤ 50 ms added",
    });
    eprintln!("bench: render: three legacy output types");
    rows.push(RenderRow {
        name: "three legacy output types of one product, one after another: STEP exports performed".into(),
        value: legacy_exports().await?,
        unit: "exports",
        against: Some(("before this issue (one per legacy task)".into(), 3.0)),
        ratio: None,
        goal: "1",
    });
    eprintln!("bench: render: turntable on 1 and 2 single-threaded workers");
    let one = turntable(sizes, 1).await?;
    let two = turntable(sizes, 2).await?;
    rows.push(RenderRow {
        name: format!(
            "{}-frame turntable ({} px, {} samples) in chunks of 6: 2 single-threaded workers (perfect: 2.00×)",
            sizes.turntable_frames, sizes.turntable_px, sizes.turntable_samples
        ),
        value: two,
        unit: "s",
        against: Some(("1 single-threaded worker".into(), one)),
        ratio: Some(one / two),
        goal: "≥ 1.8×",
    });
    Ok(rows)
}

pub(crate) fn print(rows: &[RenderRow]) {
    let fmt = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    println!("| workload | value | unit | compared with | ratio | goal |");
    println!("| --- | ---: | --- | --- | ---: | --- |");
    for r in rows {
        let against = r.against.as_ref().map(|(what, v)| format!("{what}: {}", fmt(*v))).unwrap_or_default();
        let ratio = r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default();
        println!("| {} | {} | {} | {} | {} | {} |", r.name, fmt(r.value), r.unit, against, ratio, r.goal);
    }
}

/// Rows whose figure is not a number, or a time that is not positive.
pub(crate) fn bad(rows: &[RenderRow]) -> Vec<String> {
    rows.iter()
        .filter(|r| {
            !r.value.is_finite()
                || r.value < 0.0
                || (r.unit == "s" || r.unit == "ms") && r.value <= 0.0
                || r.ratio.is_some_and(|x| !x.is_finite())
        })
        .map(|r| format!("{}: {} {}", r.name, r.value, r.unit))
        .collect()
}
