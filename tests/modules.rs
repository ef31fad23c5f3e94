//! Golden cases for the real modules: the project's CAD fixtures through real OpenCASCADE
//! (cascadio), Blender and ffmpeg, in the graph pipeline and in the legacy pipeline, at
//! small sizes so the suite stays quick. Pixels are compared decoded, never as file bytes.

use renderfleet_tests::{node, World};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RENDER_MODULES: &str =
    "cad_resolve,glb_export,metadata,materials,blender_still,blender_turntable,blender_blend,video_encode,publish,legacy_render";
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The order-line starter with a small still.
fn still_graph(size: u32, samples: u32) -> Value {
    renderfleet_tests::graphs::still(size, samples)
}

/// The legacy pipeline as one node, as dispatch adds it for a legacy run.
fn legacy_graph(artifact_kind: &str, preset: Value) -> Value {
    json!({"nodes": [{"id": "legacy", "type": "legacy.render",
                      "params": {"output_type": "golden", "artifact_kind": artifact_kind, "preset": preset}}]})
}

/// STEP → GLB (+ parts) → published.
fn export_graph() -> Value {
    json!({
        "nodes": [
            {"id": "resolve", "type": "cad.resolve"},
            {"id": "export", "type": "cad.export_glb"},
            {"id": "publish", "type": "output.publish", "params": {"name": "glb"}}
        ],
        "edges": [{"from": "resolve", "to": "export"}, {"from": "export", "from_port": "glb", "to": "publish"}]
    })
}

struct Image {
    width: u32,
    height: u32,
    channels: usize,
    data: Vec<u8>,
}

impl Image {
    fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(x < self.width && y < self.height);
        let i = (y * self.width + x) as usize * self.channels;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

fn decode(path: &Path) -> Image {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("a PNG");
    let mut data = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut data).expect("PNG pixels");
    data.truncate(info.buffer_size());
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    Image { width: info.width, height: info.height, channels: info.color_type.samples(), data }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

/// The JSON chunk of a GLB file.
fn glb_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"glTF");
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[20..20 + len]).expect("GLB JSON chunk")
}

fn output<'a>(run: &'a Value, node_id: &str, port: &str) -> &'a Value {
    let n = node(run, node_id).unwrap_or_else(|| panic!("no node {node_id} in {run}"));
    &n["outputs"][port]
}

async fn expect_success(w: &World, coord: &renderfleet_tests::Coord, id: uuid::Uuid) -> Value {
    let run = w.wait_run(coord, id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "run {id}: {}", serde_json::to_string_pretty(&run).unwrap());
    run
}

fn blender() -> String {
    std::env::var("RENDERFLEET_TOOLS__BLENDER").unwrap_or_else(|_| "blender".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_and_legacy_pipelines_render_the_same_pixels_for_every_fixture() {
    let mut w = World::new("golden_pixels").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "2")]);
    let fixtures = ["as1-oc-214.stp", "as1_pe_203.stp", "face_recognition_sample_part.stp", "splinecage.stp"];
    let mut pairs = Vec::new();
    for f in fixtures {
        let subject = json!({"cad_file": f, "product": f});
        let graph = w.submit_for(&coord, subject.clone(), still_graph(128, 8)).await;
        let legacy = w.submit_for(&coord, subject, legacy_graph("image_png", json!({"resolution": 128, "samples": 8}))).await;
        pairs.push((f, graph, legacy));
    }
    for (f, graph, legacy) in pairs {
        let g = expect_success(&w, &coord, graph).await;
        let l = expect_success(&w, &coord, legacy).await;
        let (gi, li) = (output(&g, "publish", "artifact"), output(&l, "legacy", "artifact"));
        assert_eq!(gi["kind"], "image_png", "{f}");
        assert_eq!(li["kind"], "image_png", "{f}");
        let (a, b) = (decode(&w.artifact_path(gi)), decode(&w.artifact_path(li)));
        assert_eq!((a.width, a.height), (128, 128), "{f}");
        assert_eq!((a.width, a.height, a.channels), (b.width, b.height, b.channels), "{f}");
        let differing = a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
        assert_eq!(differing, 0, "{f}: graph and legacy stills differ in {differing} channel values");
        // The product is in the picture: not every pixel is background white.
        assert!(a.data.chunks(a.channels).any(|p| p[..3] != [255, 255, 255]), "{f}: the still is blank");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as1_part_keys_are_per_occurrence_stable_and_drive_the_materials_of_the_render() {
    let mut w = World::new("golden_keys").await;
    let artifacts = w.artifacts_dir().display().to_string();
    let coord = w.start_coordinator("c1", &[("RENDERFLEET_ARTIFACTS_DIR", &artifacts)]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "2")]);
    // Colours the file's own palette (red, orange, blue, greens) does not have.
    for (name, color) in [("magenta", "#FF00FF"), ("cyan", "#00FFFF"), ("steel", "#B0B4B8")] {
        let r = w
            .http
            .put(format!("{}/v1/materials/{name}", coord.url))
            .json(&json!({"base_color": color, "roughness": 0.6}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // Every bolt by its part name, the plate by its key.
    let map = json!({"assignments": {"bolt": "magenta", "as1/plate_1": "cyan", "as1/no-such-part_1": "steel"}});
    let r = w.http.put(format!("{}/v1/products/as1/material-map", coord.url)).json(&map).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let subject = json!({"cad_file": "as1-oc-214.stp", "product": "as1"});
    let render = w.submit_for(&coord, subject.clone(), still_graph(128, 8)).await;
    let export = w.submit_for(&coord, subject, export_graph()).await;
    let render = expect_success(&w, &coord, render).await;
    let export = expect_success(&w, &coord, export).await;

    // One key per occurrence, counted against the GLB, identical across two exports.
    let first = read_json(&w.artifact_path(output(&render, "export", "parts")));
    let second = read_json(&w.artifact_path(output(&export, "export", "parts")));
    let keys: Vec<&str> = first["parts"].as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    let again: Vec<&str> = second["parts"].as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(keys, again, "part keys differ between two exports of the same file");
    let glb = glb_json(&w.artifact_path(output(&render, "export", "glb")));
    let mesh_nodes: Vec<&Value> = glb["nodes"].as_array().unwrap().iter().filter(|n| n.get("mesh").is_some()).collect();
    assert_eq!(keys.len(), mesh_nodes.len(), "one key per occurrence with geometry");
    assert_eq!(keys.len(), 18);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len(), "keys are unique: {keys:?}");
    assert!(keys.iter().all(|k| !k.contains("=>[")), "{keys:?}");
    let in_glb: HashSet<&str> =
        mesh_nodes.iter().map(|n| n["extras"]["part_key"].as_str().expect("part_key in the GLB's extras")).collect();
    assert_eq!(in_glb, keys.iter().copied().collect::<HashSet<_>>(), "the GLB carries the manifest's keys");
    let bolts: Vec<&Value> =
        first["parts"].as_array().unwrap().iter().filter(|p| p["key"].as_str().unwrap().ends_with("/bolt_1")).collect();
    assert_eq!(bolts.len(), 6, "six bolt_1 occurrences under different parents");
    assert!(bolts.iter().all(|b| b["part"] == "bolt"), "every bolt_1 is an instance of the same part: {bolts:?}");
    assert!(keys.contains(&"as1/l-bracket-assembly_2/nut-bolt-assembly_3/bolt_1"), "{keys:?}");

    // The map reached the render: 6 bolts + the plate assigned, the other 11 parts listed as
    // missing (and given the default material), never dropped.
    let assign = node(&render, "assign").unwrap();
    assert_eq!(assign["outputs"]["missing"].as_array().unwrap().len(), 11, "{assign}");
    assert_eq!(assign["outputs"]["materials"]["meta"]["assigned"], 7);
    // A target that matches nothing is shown on the run, not swallowed.
    assert_eq!(assign["outputs"]["unmatched_targets"], json!(["as1/no-such-part_1"]), "{assign}");
    let shown = renderfleet_tests::renderctl(&["--coordinator", &coord.url, "runs", "show", render["id"].as_str().unwrap()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("map targets that match no part: as1/no-such-part_1") && text.contains("11 part(s) on the default material"),
        "{text}"
    );
    let img = decode(&w.artifact_path(output(&render, "publish", "artifact")));
    let count = |f: &dyn Fn([u8; 3]) -> bool| {
        (0..img.height).flat_map(|y| (0..img.width).map(move |x| (x, y))).filter(|&(x, y)| f(img.rgb(x, y))).count()
    };
    let magenta = count(&|[r, g, b]| r > 150 && b > 150 && g < 100);
    let cyan = count(&|[r, g, b]| g > 150 && b > 150 && r < 100);
    let grey = count(&|[r, g, b]| r.abs_diff(g) < 20 && g.abs_diff(b) < 20 && (50..230).contains(&r));
    // The six bolts are a few pixels each at 128 px; the plate and the grey brackets are large.
    assert!(magenta >= 12, "the bolts (mapped by part name) should show magenta: {magenta} pixels");
    assert!(cyan >= 300, "the plate (mapped by key) should show cyan: {cyan} pixels");
    assert!(grey >= 200, "unmapped parts should get the default grey: {grey} pixels");
    // The still's bolts, as a hue: what the console's 3D preview must agree with.
    let magenta_pixels: Vec<[u8; 3]> = (0..img.height)
        .flat_map(|y| (0..img.width).map(move |x| (x, y)))
        .map(|(x, y)| img.rgb(x, y))
        .filter(|&[r, g, b]| r > 150 && b > 150 && g < 100)
        .collect();
    let still_hue = magenta_pixels.iter().map(|&p| hue(p)).sum::<f64>() / magenta_pixels.len() as f64;
    preview_in_the_console(&w, &coord, render["id"].as_str().unwrap(), still_hue).await;

    // Repair gives the listed parts a material, without hand-editing the database.
    let url = format!("{}/v1/products/as1/material-map/repair", coord.url);
    let dry: Value =
        w.http.post(format!("{url}?dry_run=true")).json(&json!({"material": "steel"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(dry["added"].as_array().unwrap().len(), 11, "{dry}");
    let map: Value = w.http.get(format!("{}/v1/products/as1/material-map", coord.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(map["assignments"].as_object().unwrap().len(), 3, "a dry run writes nothing");
    // A dry run makes the real call's checks: a material the library does not have is refused.
    let r = w.http.post(format!("{url}?dry_run=true")).json(&json!({"material": "unobtainium"})).send().await.unwrap();
    assert_eq!(r.status(), 422, "{}", r.text().await.unwrap());
    let done: Value = w.http.post(&url).json(&json!({"material": "steel"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(done["added"].as_array().unwrap().len(), 11, "{done}");
    let again: Value =
        w.http.post(format!("{url}?dry_run=true")).json(&json!({"material": "steel"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["added"], json!([]), "repaired parts are not added again: {again}");
    let map: Value = w.http.get(format!("{}/v1/products/as1/material-map", coord.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(map["assignments"].as_object().unwrap().len(), 14);
    let refused = w
        .http
        .put(format!("{}/v1/products/as1/material-map", coord.url))
        .json(&json!({"assignments": {"bolt": "gold"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("gold"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as1_pe_203_labels_resolve_to_unique_readable_keys() {
    let mut w = World::new("golden_pe203").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", "cad_resolve,glb_export,publish", &[]);
    let id = w.submit_for(&coord, json!({"cad_file": "as1_pe_203.stp"}), export_graph()).await;
    let run = expect_success(&w, &coord, id).await;
    let manifest = read_json(&w.artifact_path(output(&run, "export", "parts")));
    let keys: Vec<&str> = manifest["parts"].as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    let glb = glb_json(&w.artifact_path(output(&run, "export", "glb")));
    let meshes = glb["nodes"].as_array().unwrap().iter().filter(|n| n.get("mesh").is_some()).count();
    assert_eq!(keys.len(), meshes);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len(), "keys are unique: {keys:?}");
    for k in &keys {
        assert!(!k.contains("=>[") && !k.contains("//") && k.split('/').all(|s| !s.is_empty()), "unreadable key {k}");
    }
    assert!(keys.iter().any(|k| k.contains("NUT_BOLT_ASSEMBLY[2]")), "repeated assemblies get instance indexes: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_frame_turntable_encodes_and_the_blend_reopens() {
    let mut w = World::new("golden_turntable").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "2")]);
    let graph = json!({
        "nodes": [
            {"id": "resolve", "type": "cad.resolve"},
            {"id": "export", "type": "cad.export_glb"},
            {"id": "assign", "type": "material.assign"},
            {"id": "turntable", "type": "render.turntable", "params": {"width": 128, "height": 128, "samples": 4, "frame_count": 6}},
            {"id": "encode", "type": "video.encode", "params": {"fps": 12}},
            {"id": "publish", "type": "output.publish", "params": {"name": "video"}},
            {"id": "blend", "type": "export.blend"},
            {"id": "publish_blend", "type": "output.publish", "params": {"name": "blend"}}
        ],
        "edges": [
            {"from": "resolve", "to": "export"},
            {"from": "export", "from_port": "parts", "to": "assign"},
            {"from": "export", "from_port": "glb", "to": "turntable", "to_port": "glb"},
            {"from": "assign", "to": "turntable", "to_port": "materials"},
            {"from": "turntable", "to": "encode"},
            {"from": "encode", "to": "publish"},
            {"from": "export", "from_port": "glb", "to": "blend", "to_port": "glb"},
            {"from": "assign", "to": "blend", "to_port": "materials"},
            {"from": "blend", "to": "publish_blend"}
        ]
    });
    let id = w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), graph).await;
    let run = expect_success(&w, &coord, id).await;
    let frames = read_json(&w.artifact_path(output(&run, "turntable", "frames")));
    assert_eq!(frames["frames"].as_array().unwrap().len(), 6);
    let video = w.artifact_path(output(&run, "publish", "artifact"));
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "json",
        ])
        .arg(&video)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    let probed: Value = serde_json::from_slice(&probe.stdout).expect("ffprobe JSON");
    let stream = &probed["streams"][0];
    assert_eq!(stream["nb_read_frames"], "6", "{probed}");
    assert_eq!((stream["width"].as_u64(), stream["height"].as_u64()), (Some(128), Some(128)), "{probed}");

    // The .blend opens in Blender and holds the product's 18 mesh objects.
    let blend = w.data_dir.join("reopen.blend");
    std::fs::copy(w.artifact_path(output(&run, "publish_blend", "artifact")), &blend).unwrap();
    let count = "import bpy; print('MESH_OBJECTS', len([o for o in bpy.data.objects if o.type == 'MESH']))";
    let blender = blender();
    let out = if blender.rsplit('/').next().is_some_and(|n| n.starts_with("python")) {
        // Blender as a Python module: open the file, then count.
        let script = format!("import bpy; bpy.ops.wm.open_mainfile(filepath={:?}); {count}", blend.display().to_string());
        Command::new(&blender).args(["-c", &script]).output()
    } else {
        Command::new(&blender).arg("-b").arg(&blend).args(["--python-expr", count]).output()
    }
    .expect("blender");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MESH_OBJECTS 18"), "blender said: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_step_file_fails_its_node_with_the_converters_message_and_the_worker_goes_on() {
    let mut w = World::new("golden_broken").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", "cad_resolve,glb_export,publish", &[]);
    let id = w.submit_for(&coord, json!({"cad_file": "truncated.stp"}), export_graph()).await;
    let run = w.wait_run(&coord, id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "failed", "{run}");
    let export = node(&run, "export").unwrap();
    assert_eq!(export["status"], "failed");
    assert_eq!(export["attempt"], 1, "a broken file is not retried: {export}");
    let message = export["error"]["message"].as_str().unwrap();
    assert!(message.contains("STEP → GLB") && message.contains("converter:") && message.contains("STEP"), "{message}");
    assert!(export["log_tail"].as_str().unwrap_or("").contains("StepFile"), "the converter's output is kept: {export}");
    assert_eq!(node(&run, "publish").unwrap()["status"], "skipped");
    // A path that leaves the CAD directory is refused at submission (the worker makes the same check).
    let body = json!({"subject": {"cad_file": "../fixtures/cad/as1-oc-214.stp"}, "graph": export_graph()});
    let resp = w.http.post(format!("{}/v1/runs", coord.url)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let refused: Value = resp.json().await.unwrap();
    assert!(refused["message"].as_str().unwrap().contains("without `..`"), "{refused}");
    // The same worker serves the next task.
    let id = w.submit_for(&coord, json!({"cad_file": "face_recognition_sample_part.stp"}), export_graph()).await;
    expect_success(&w, &coord, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_step_file_is_refused_as_empty() {
    let mut w = World::new("golden_empty").await;
    let coord = w.start_coordinator("c1", &[]).await;
    let cad = w.data_dir.join("cad");
    std::fs::create_dir_all(&cad).unwrap();
    std::fs::write(cad.join("empty.stp"), b"").unwrap();
    w.start_render_worker("w1", "cad_resolve,glb_export,publish", &[("RENDERFLEET_CAD_DIR", cad.to_str().unwrap())]);
    let id = w.submit_for(&coord, json!({"cad_file": "empty.stp"}), export_graph()).await;
    let run = w.wait_run(&coord, id, RUN_TIMEOUT).await;
    let resolve = node(&run, "resolve").unwrap();
    assert_eq!((run["status"].as_str(), resolve["attempt"].as_i64()), (Some("failed"), Some(1)), "{run:#}");
    let message = resolve["error"]["message"].as_str().unwrap();
    assert!(message.contains("is empty (0 bytes)") && message.contains("export the STEP file again"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_past_its_timeout_is_killed_and_leaves_no_blender_behind() {
    let mut w = World::new("golden_timeout").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[]);
    let mut graph = still_graph(1024, 4096);
    graph["nodes"][3]["timeout"] = json!("3s");
    graph["nodes"][3]["max_attempts"] = json!(1);
    let id = w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), graph).await;
    let run = w.wait_run(&coord, id, RUN_TIMEOUT).await;
    let still = node(&run, "still").unwrap();
    assert_eq!(still["status"], "failed", "{still}");
    assert_eq!(still["error"]["kind"], "timeout", "{still}");
    let scratch = w.data_dir.join("scratch").display().to_string();
    renderfleet_tests::wait_until("no Blender left running", Duration::from_secs(10), || {
        let scratch = scratch.clone();
        async move {
            let out = Command::new("pgrep").args(["-f", &scratch]).output().unwrap();
            out.stdout.is_empty().then_some(())
        }
    })
    .await;
    // The attempt's scratch directory went with it.
    let left = std::fs::read_dir(&scratch)
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rf-still")).count())
        .unwrap_or(0);
    assert_eq!(left, 0, "scratch directories left in {scratch}");
}

/// A `cad_file` that would block on open (a FIFO) is refused before it is opened, and the
/// worker still stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cad_file_that_is_not_a_regular_file_is_refused_and_the_worker_still_stops() {
    let mut w = World::new("golden_fifo").await;
    let coord = w.start_coordinator("c1", &[]).await;
    let cad = w.data_dir.join("cad");
    std::fs::create_dir_all(&cad).unwrap();
    assert!(Command::new("mkfifo").arg(cad.join("hung.stp")).status().unwrap().success());
    let cad_dir = cad.display().to_string();
    w.start_render_worker("w1", "cad_resolve,glb_export,publish", &[("RENDERFLEET_CAD_DIR", cad_dir.as_str())]);
    let mut graph = export_graph();
    graph["nodes"][0]["timeout"] = json!("10s");
    graph["nodes"][0]["max_attempts"] = json!(1);
    let id = w.submit_for(&coord, json!({"cad_file": "hung.stp"}), graph).await;
    let run = w.wait_run(&coord, id, Duration::from_secs(30)).await;
    let resolve = node(&run, "resolve").unwrap();
    assert_eq!(resolve["status"], "failed", "{resolve}");
    let message = resolve["error"]["message"].as_str().unwrap();
    assert!(message.contains("not a regular file"), "{message}");
    w.signal("w1", nix::sys::signal::Signal::SIGTERM);
    assert!(w.wait_exit("w1", Duration::from_secs(15)).await.success());
}

/// Blender processes started from `scratch` (their command lines name the job there).
fn blenders_in(scratch: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-a", "-f", scratch]).output().unwrap();
    // Blender running the render script, as a module (`python …/render-<hash>.py`) or not.
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("renderfleet-scripts/render-")).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_takes_its_blender_with_it() {
    let mut w = World::new("golden_sigkill").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[]);
    let id = w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), still_graph(1024, 4096)).await;
    w.wait_node(&coord, id, "still", "running", RUN_TIMEOUT).await;
    let scratch = w.data_dir.join("scratch").display().to_string();
    renderfleet_tests::wait_until("Blender rendering", RUN_TIMEOUT, || {
        let found = blenders_in(&scratch);
        async move { (!found.is_empty()).then_some(()) }
    })
    .await;
    w.kill("w1");
    let gone = tokio::time::timeout(Duration::from_secs(2), async {
        while !blenders_in(&scratch).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let left = blenders_in(&scratch);
    if gone.is_err() {
        let _ = Command::new("pkill").args(["-KILL", "-f", &scratch]).status(); // not left burning the CPU
    }
    assert!(gone.is_ok(), "Blender outlived its SIGKILLed worker by 2 s: {left:?}");
    let _ = coord;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_binds_only_the_modules_its_host_can_run() {
    let mut w = World::new("capabilities").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("no-blender", "auto", &[("RENDERFLEET_TOOLS__BLENDER", "/nonexistent/blender")]);
    let modules: Vec<String> = renderfleet_tests::wait_until("the worker's heartbeat", Duration::from_secs(60), || async {
        let db = w.db().await;
        db.query_opt("SELECT modules FROM workers WHERE id = 'no-blender'", &[]).await.ok().flatten().map(|r| r.get(0))
    })
    .await;
    assert!(modules.iter().any(|m| m == "glb_export"), "{modules:?}");
    assert!(modules.iter().any(|m| m == "video_encode"), "{modules:?}");
    for m in ["blender_still", "blender_turntable", "blender_blend", "legacy_render"] {
        assert!(!modules.iter().any(|x| x == m), "{m} bound without Blender: {modules:?}");
    }
    // Without cascadio (resp. ffmpeg) only the modules that need it are left out, and the
    // log says how to install it.
    w.start_render_worker("no-cascadio", "auto", &[("RENDERFLEET_TOOLS__PYTHON", "/nonexistent/python")]);
    w.start_render_worker("no-ffmpeg", "auto", &[("RENDERFLEET_TOOLS__FFMPEG", "/nonexistent/ffmpeg")]);
    let everywhere = ["cad_resolve", "metadata", "materials", "publish", "compare", "noop", "sleep", "fail"];
    for (worker, needs_it, fix) in [
        ("no-cascadio", ["glb_export", "legacy_render"], "pip install cascadio"),
        ("no-ffmpeg", ["video_encode", "legacy_render"], "apt-get install ffmpeg"),
    ] {
        let modules: Vec<String> = renderfleet_tests::wait_until(&format!("{worker}'s heartbeat"), Duration::from_secs(60), || async {
            let db = w.db().await;
            db.query_opt("SELECT modules FROM workers WHERE id = $1", &[&worker]).await.ok().flatten().map(|r| r.get(0))
        })
        .await;
        for m in needs_it {
            assert!(!modules.iter().any(|x| x == m), "{worker} bound {m}: {modules:?}");
        }
        let others = ["blender_still", "blender_turntable", "blender_blend", "glb_export", "video_encode"];
        for m in everywhere.iter().chain(&others).filter(|m| !needs_it.contains(m)) {
            assert!(modules.iter().any(|x| x == m), "{worker} left out {m}, which does not need the missing tool: {modules:?}");
        }
        let log = w.log(worker);
        assert!(log.contains("module left out") && log.contains(fix), "{worker}'s log does not say how to install the tool: {log}");
    }
    // What the cache will key on: each worker reports its tools' versions and a fingerprint
    // per module; two hosts with the same build agree, a module's differs from another's.
    let db = w.db().await;
    let report = |id: &'static str| {
        let db = &db;
        async move {
            let r = db.query_one("SELECT tools, fingerprints FROM workers WHERE id = $1", &[&id]).await.unwrap();
            (r.get::<_, Value>(0), r.get::<_, Value>(1))
        }
    };
    let (tools, prints) = report("no-cascadio").await;
    assert!(tools["blender"].as_str().is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())), "{tools}");
    assert!(tools["ffmpeg"].as_str().is_some_and(|v| !v.is_empty()), "{tools}");
    assert!(tools.get("cascadio").is_none(), "a tool the host lacks has no version: {tools}");
    let still = prints["blender_still"].as_str().unwrap();
    assert_eq!(still.len(), 64, "{prints}");
    assert_ne!(prints["blender_still"], prints["blender_blend"], "{prints}");
    let (tools, other) = report("no-ffmpeg").await;
    assert!(tools["cascadio"].as_str().is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())), "{tools}");
    assert_eq!(other["blender_still"], prints["blender_still"], "the same build on two hosts has the same fingerprint");
    assert_eq!(other["materials"], prints["materials"]);
    // Asked for explicitly, a module the host cannot run stops start-up with the fix.
    w.start_render_worker("insists", "blender_still", &[("RENDERFLEET_TOOLS__BLENDER", "/nonexistent/blender")]);
    let status = w.wait_exit("insists", Duration::from_secs(60)).await;
    assert!(!status.success());
    let log = w.log("insists");
    assert!(log.contains("blender_still") && log.contains("pip install bpy"), "{log}");
    let _ = coord;
}

/// The hue of an sRGB colour in degrees (0 for greys).
fn hue([r, g, b]: [u8; 3]) -> f64 {
    let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return 0.0;
    }
    let h = if max == r {
        (g - b) / (max - min)
    } else if max == g {
        2.0 + (b - r) / (max - min)
    } else {
        4.0 + (r - g) / (max - min)
    };
    (h * 60.0).rem_euclid(360.0)
}

/// The console's 3D preview of as1 from the run that rendered the still: a bolt's mesh has
/// the colour of its material in the map (magenta, by part name), which is the hue the
/// Blender still gave the bolts; clicking it in the viewer finds its row, clicking a row
/// picks the part; parts without a material are highlighted; the map is edited from there.
async fn preview_in_the_console(w: &World, coord: &renderfleet_tests::Coord, run: &str, still_hue: f64) {
    use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
    use fantoccini::Locator;
    const BOLT: &str = "as1/l-bracket-assembly_2/nut-bolt-assembly_3/bolt_1";
    let browser = renderfleet_tests::browser::Browser::start(&w.data_dir.join("chromium"), "console").await;
    browser.sign_in(&coord.url, renderfleet_tests::token("admin")).await;
    let b = browser.client.clone();
    let url = format!("{}/console/products/as1?run={run}", coord.url);
    b.goto(&url).await.unwrap();
    let ready = || async {
        renderfleet_tests::wait_until("the 3D preview", Duration::from_secs(30), || async {
            let state = b.execute("return document.getElementById('preview')?.dataset.state", vec![]).await.unwrap();
            assert_ne!(state, "error", "{}", b.execute("return document.body.innerText", vec![]).await.unwrap());
            (state == "ready").then_some(())
        })
        .await
    };
    ready().await;
    let js = |script: String| {
        let b = b.clone();
        async move { b.execute(&script, vec![]).await.unwrap() }
    };
    assert_eq!(js("return Number(document.getElementById('preview').dataset.meshes)".into()).await, 18, "one mesh per occurrence");
    let row = |key: &str, attr: &str| js(format!("return document.querySelector(`#parts tr[data-key='{key}']`).dataset.{attr}"));
    assert_eq!(row(BOLT, "colour").await, "#FF00FF", "the map gives every bolt magenta (by part name)");
    assert_eq!(row(BOLT, "viewerColour").await, "#ff00ff", "the viewer's mesh has that colour");
    assert_eq!(js(format!("return renderfleetPreview.colourOf('{BOLT}')")).await, "#ff00ff");
    let viewer_hue = hue([255, 0, 255]);
    assert!((still_hue - viewer_hue).abs() < 15.0, "the still's bolts have hue {still_hue:.1}°, the viewer's {viewer_hue:.1}°");
    assert_eq!(
        js("return document.querySelectorAll('#parts tr.missing').length".into()).await,
        11,
        "the 11 unmapped parts are highlighted"
    );
    browser.shot("product-preview.png").await;

    // The bolt as drawn: its pixel in the canvas has the map's hue; a click there finds its row.
    let at = js(format!("return renderfleetPreview.visiblePoint('{BOLT}')")).await;
    let (x, y) = (at[0].as_f64().expect("the bolt can be seen from the default camera"), at[1].as_f64().unwrap());
    let drawn = js(format!(
        "const c = document.getElementById('preview-canvas'), o = document.createElement('canvas'); o.width = c.width; o.height = c.height;
         const g = o.getContext('2d'); g.drawImage(c, 0, 0); return [...g.getImageData(Math.round({x}), Math.round({y}), 1, 1).data.slice(0, 3)];"
    ))
    .await;
    let drawn: Vec<u8> = drawn.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    let drawn_hue = hue([drawn[0], drawn[1], drawn[2]]);
    assert!((drawn_hue - still_hue).abs() < 20.0, "the viewer draws the bolt {drawn:?} (hue {drawn_hue:.1}°), the still {still_hue:.1}°");
    let canvas = b.find(Locator::Id("preview-canvas")).await.unwrap();
    let (w_css, h_css) = {
        let r = js("const r = document.getElementById('preview-canvas').getBoundingClientRect(); return [r.width, r.height]".into()).await;
        (r[0].as_f64().unwrap(), r[1].as_f64().unwrap())
    };
    let click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement { element: canvas, duration: None, x: x - w_css / 2.0, y: y - h_css / 2.0 })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    b.perform_actions(click).await.unwrap();
    assert_eq!(js("return document.getElementById('preview').dataset.picked".into()).await, BOLT, "the click picked the bolt");
    assert_eq!(js(format!("return document.querySelector(`#parts tr[data-key='{BOLT}']`).classList.contains('picked')")).await, true);
    browser.shot("product-preview-picked.png").await;
    // A row picks its part in the viewer.
    b.find(Locator::Css("#parts tr[data-key='as1/plate_1']")).await.unwrap().click().await.unwrap();
    assert_eq!(js("return document.getElementById('preview').dataset.picked".into()).await, "as1/plate_1");

    // Editing the map from here: every bolt steel.
    b.find(Locator::Css("#map-target option[value='part:bolt']")).await.unwrap().click().await.unwrap();
    b.find(Locator::Css("#map-material option[value='steel']")).await.unwrap().click().await.unwrap();
    b.find(Locator::Id("map-assign")).await.unwrap().click().await.unwrap();
    renderfleet_tests::wait_until("the map saved and the page reloaded", Duration::from_secs(20), || async {
        let c = b.execute(&format!("return document.querySelector(`#parts tr[data-key='{BOLT}']`)?.dataset.colour"), vec![]).await.ok()?;
        (c == "#B0B4B8").then_some(())
    })
    .await;
    ready().await;
    assert_eq!(js(format!("return renderfleetPreview.colourOf('{BOLT}')")).await, "#b0b4b8");
    let map: Value = w.http.get(format!("{}/v1/products/as1/material-map", coord.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(map["assignments"], json!({"bolt": "steel", "as1/plate_1": "cyan", "as1/no-such-part_1": "steel"}));
    browser.close().await;
}

/// A still and a 4-frame turntable of one product, each published.
fn still_and_turntable_graph() -> Value {
    json!({
        "nodes": [
            {"id": "resolve", "type": "cad.resolve"},
            {"id": "export", "type": "cad.export_glb"},
            {"id": "assign", "type": "material.assign"},
            {"id": "still", "type": "render.still", "params": {"width": 96, "height": 96, "samples": 8}},
            {"id": "turntable", "type": "render.turntable", "params": {"width": 64, "height": 64, "samples": 4, "frame_count": 4}},
            {"id": "publish", "type": "output.publish", "params": {"name": "still"}},
            {"id": "publish_frames", "type": "output.publish", "params": {"name": "frames"}}
        ],
        "edges": [
            {"from": "resolve", "to": "export"},
            {"from": "export", "from_port": "parts", "to": "assign"},
            {"from": "export", "from_port": "glb", "to": "still", "to_port": "glb"},
            {"from": "assign", "to": "still", "to_port": "materials"},
            {"from": "export", "from_port": "glb", "to": "turntable", "to_port": "glb"},
            {"from": "assign", "to": "turntable", "to_port": "materials"},
            {"from": "still", "to": "publish"},
            {"from": "turntable", "to": "publish_frames"}
        ]
    })
}

/// Renders every fixture's still and turntable; per fixture the still's sha256 and each
/// frame's, and whether Blender ran warm.
async fn render_every_fixture(w: &World, coord: &renderfleet_tests::Coord) -> Vec<(String, Vec<String>, bool)> {
    let fixtures = ["as1-oc-214.stp", "as1_pe_203.stp", "face_recognition_sample_part.stp", "splinecage.stp"];
    let mut ids = Vec::new();
    for f in fixtures {
        ids.push(w.submit_for(coord, json!({"cad_file": f, "product": f}), still_and_turntable_graph()).await);
    }
    let mut out = Vec::new();
    for id in ids {
        let run = expect_success(w, coord, id).await;
        let still = output(&run, "still", "image");
        let frames = read_json(&w.artifact_path(output(&run, "turntable", "frames")));
        let shas: Vec<String> = frames["frames"].as_array().unwrap().iter().map(|f| f["sha256"].as_str().unwrap().to_string()).collect();
        assert_eq!(shas.len(), 4);
        out.push((still["sha256"].as_str().unwrap().to_string(), shas, still["meta"]["timings"]["warm"] == true));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_blender_renders_byte_for_byte_what_a_fresh_process_renders() {
    let mut w = World::new("golden_warm").await;
    // Every render must run: nothing may come from the node result cache.
    let coord = w.start_coordinator("c1", &[("RENDERFLEET_CACHE__ENABLED", "false")]).await;
    w.start_render_worker("cold", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "2"), ("RENDERFLEET_BLENDER__WARM", "false")]);
    let cold = render_every_fixture(&w, &coord).await;
    assert!(cold.iter().all(|(_, _, warm)| !warm), "the first pass ran a fresh Blender per render");
    w.signal("cold", nix::sys::signal::Signal::SIGTERM);
    w.wait_exit("cold", Duration::from_secs(30)).await;

    // One slot, so one process serves every job in turn: each product after the first is
    // rendered by a process that has just rendered another one (and a still after frames).
    w.start_render_worker("warm", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "1")]);
    let warm = render_every_fixture(&w, &coord).await;
    assert!(warm.iter().all(|(_, _, warm)| *warm), "the second pass ran warm");
    assert_eq!(w.log("warm").matches("warm Blender process started").count(), 1, "one process served all 8 jobs");
    for ((f, c), wm) in ["as1-oc-214", "as1_pe_203", "face_recognition_sample_part", "splinecage"].iter().zip(&cold).zip(&warm) {
        assert_eq!(c.0, wm.0, "{f}: the warm still differs from the fresh process's");
        assert_eq!(c.1, wm.1, "{f}: warm turntable frames differ from the fresh process's");
    }
}

/// The warm Blender processes of this world's workers (their script is in its scratch).
fn warm_blenders(w: &World) -> Vec<u32> {
    let pattern = format!("{}.*--serve", w.data_dir.join("scratch").display());
    let out = Command::new("pgrep").args(["-f", &pattern]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_blender_that_dies_mid_render_fails_its_attempt_and_the_next_job_gets_a_fresh_one() {
    let mut w = World::new("golden_warm_crash").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "1")]);
    let mut long = still_graph(1024, 4096);
    long["nodes"][3]["max_attempts"] = json!(2);
    let id = w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), long).await;
    w.wait_node(&coord, id, "still", "running", RUN_TIMEOUT).await;
    let pid = renderfleet_tests::wait_until("the warm Blender to start", Duration::from_secs(60), || async {
        let pids = warm_blenders(&w);
        (pids.len() == 1).then(|| pids[0])
    })
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The attempt fails as retryable (a crash is not about the input) and runs again.
    let run = renderfleet_tests::wait_until("the second attempt", Duration::from_secs(60), || async {
        let run = w.get_run(&coord, id).await;
        (node(&run, "still").unwrap()["attempt"] == 2).then_some(run)
    })
    .await;
    let first = &node(&run, "still").unwrap()["attempts"][0];
    assert!(first["error"]["message"].as_str().unwrap().contains("killed by SIGKILL"), "{first}");
    assert_eq!(first["error"]["retryable"], true, "{first}");
    let r = w.http.post(format!("{}/v1/runs/{id}/cancel", coord.url)).json(&json!({"reason": "test"})).send().await.unwrap();
    assert!(r.status().is_success());
    renderfleet_tests::wait_until("the cancelled render's Blender to be killed", Duration::from_secs(20), || async {
        warm_blenders(&w).iter().all(|p| *p != pid).then_some(())
    })
    .await;
    // The next render gets a working process and the pixels of any other.
    let small = w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), still_graph(64, 4)).await;
    let run = expect_success(&w, &coord, small).await;
    assert_eq!(output(&run, "still", "image")["meta"]["timings"]["warm"], true);
    assert!(w.log("w1").matches("warm Blender process started").count() >= 2);
    // An idle process that dies is not handed the next job: that job's first attempt succeeds.
    let idle = warm_blenders(&w);
    assert_eq!(idle.len(), 1, "{idle:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(idle[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    renderfleet_tests::wait_until("the idle Blender to be gone", Duration::from_secs(10), || async {
        warm_blenders(&w).is_empty().then_some(())
    })
    .await;
    let next = w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), still_graph(64, 4)).await;
    let run = expect_success(&w, &coord, next).await;
    assert_eq!(node(&run, "still").unwrap()["attempt"], 1, "{run}");
    assert!(w.log("w1").contains("an idle warm Blender process had exited"));
}

/// A turntable (encoded and published) of as1, split into tasks of `chunk` frames or not.
fn turntable_graph(chunk: Option<u32>) -> Value {
    let mut turntable = json!({"width": 64, "height": 64, "samples": 4, "frame_count": 6});
    if let Some(n) = chunk {
        turntable["chunking"] = json!({"frames_per_chunk": n});
    }
    renderfleet_tests::graphs::turntable(turntable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turntable_split_across_workers_gives_the_frames_and_video_of_one_task() {
    let mut w = World::new("golden_chunks").await;
    let coord = w.start_coordinator("c1", &[("RENDERFLEET_CACHE__ENABLED", "false")]).await;
    let subject = json!({"cad_file": "as1-oc-214.stp", "product": "as1"});
    // The reference: one task, Cycles on every core.
    w.start_render_worker("whole", RENDER_MODULES, &[]);
    let id = w.submit_for(&coord, subject.clone(), turntable_graph(None)).await;
    let whole = expect_success(&w, &coord, id).await;
    w.signal("whole", nix::sys::signal::Signal::SIGTERM);
    w.wait_exit("whole", Duration::from_secs(30)).await;

    // Two single-threaded workers share three chunks of two frames.
    for name in ["a", "b"] {
        w.start_render_worker(name, RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "1"), ("RENDERFLEET_BLENDER__THREADS", "1")]);
    }
    let db = w.db().await;
    renderfleet_tests::wait_until("both workers", Duration::from_secs(60), || async {
        let n: i64 = db.query_one("SELECT count(*) FROM workers WHERE id IN ('a', 'b') AND status <> 'stopped'", &[]).await.ok()?.get(0);
        (n == 2).then_some(())
    })
    .await;
    let id = w.submit_for(&coord, subject, turntable_graph(Some(2))).await;
    let split = expect_success(&w, &coord, id).await;
    let chunks: Vec<&Value> =
        split["nodes"].as_array().unwrap().iter().filter(|n| n["node_id"].as_str().unwrap().starts_with("turntable.frames-")).collect();
    let ids: Vec<&str> = chunks.iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["turntable.frames-000-001", "turntable.frames-002-003", "turntable.frames-004-005"], "the run shows its chunks");
    assert_eq!(split["nodes_total"], 9, "six nodes and three chunks");
    let workers: HashSet<&str> = chunks.iter().map(|n| n["worker_id"].as_str().unwrap()).collect();
    assert_eq!(workers.len(), 2, "both workers rendered chunks: {workers:?}");
    for c in &chunks {
        assert_eq!(c["outputs"]["frames"]["meta"]["frames"], 2, "{c}");
        assert_eq!(c["params"].get("chunking"), None);
    }
    // The joined manifest is the very artifact one task wrote, so the video is too.
    assert_eq!(output(&split, "turntable", "frames")["sha256"], output(&whole, "turntable", "frames")["sha256"]);
    assert_eq!(output(&split, "turntable", "frames")["meta"]["chunks"], 3);
    assert_eq!(output(&split, "publish", "artifact")["sha256"], output(&whole, "publish", "artifact")["sha256"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_blender_is_replaced_after_max_jobs() {
    let mut w = World::new("golden_warm_recycle").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("w1", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "1"), ("RENDERFLEET_BLENDER__MAX_JOBS", "2")]);
    let mut images = Vec::new();
    for _ in 0..3 {
        let id = w.submit_for(&coord, json!({"cad_file": "splinecage.stp", "product": "splinecage"}), still_graph(48, 2)).await;
        images.push(output(&expect_success(&w, &coord, id).await, "still", "image")["sha256"].clone());
    }
    let log = w.log("w1");
    assert_eq!(log.matches("warm Blender process replaced").count(), 1, "after its second job");
    assert_eq!(log.matches("warm Blender process started").count(), 2, "the third job had a fresh one");
    assert!(images.windows(2).all(|p| p[0] == p[1]), "the same still from either process: {images:?}");
}

/// A black-hole host: a worker whose Blender is gone (its path removed after start-up, as a
/// botched upgrade leaves it) fails renders at once, so it would take every next task and
/// every retry. Its retries go to the healthy worker, and after three failures in a row it
/// quarantines the render module (heartbeat, API) while the healthy one finishes every run;
/// an operator's release brings the module back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_blender_is_gone_quarantines_itself_while_a_healthy_one_renders_every_run() {
    let mut w = World::new("golden_black_hole").await;
    let coord = w.start_coordinator("c1", &[]).await;
    w.start_render_worker("good", RENDER_MODULES, &[("RENDERFLEET_CONCURRENCY", "1")]);
    // The broken worker's Blender: a wrapper named like the bpy venv's Python, so the worker
    // probes it as the healthy one does, removed once the worker runs.
    let dir = w.data_dir.join("broken-tools");
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("python3");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{}' \"$@\"\n", blender())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hole_metrics = w.start_render_worker(
        "hole",
        "blender_still",
        &[
            ("RENDERFLEET_TOOLS__BLENDER", wrapper.to_str().unwrap()),
            ("RENDERFLEET_BLENDER__WARM", "false"),
            ("RENDERFLEET_CONCURRENCY", "2"),
            ("RENDERFLEET_QUARANTINE__AFTER", "3"),
            ("RENDERFLEET_QUARANTINE__COOL_DOWN", "1h"),
        ],
    );
    let live = "SELECT count(*) FROM workers WHERE status = 'running' AND 'blender_still' = ANY(modules)";
    renderfleet_tests::wait_until("both workers take renders", Duration::from_secs(120), || async {
        (w.count(live).await == 2).then_some(())
    })
    .await;
    std::fs::remove_file(&wrapper).unwrap();

    // Each run renders anew (a size of its own), so no still comes from the node result cache.
    let mut runs = Vec::new();
    for i in 0..6 {
        runs.push(w.submit_for(&coord, json!({"cad_file": "as1-oc-214.stp", "product": "as1"}), still_graph(48 + 8 * i, 4)).await);
    }
    for id in &runs {
        expect_success(&w, &coord, *id).await;
    }

    let db = w.db().await;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let failed_here = count("SELECT count(*) FROM node_attempts WHERE worker_id = 'hole' AND status = 'failed'").await;
    assert!(failed_here >= 3, "the broken worker failed {failed_here} renders; it should have taken some");
    assert_eq!(count("SELECT count(*) FROM node_attempts WHERE worker_id = 'hole' AND status = 'succeeded'").await, 0);
    // A retry never went back to the worker that failed the attempt before it.
    let again = count(
        "SELECT count(*) FROM node_attempts a JOIN node_attempts b ON b.node_run_id = a.node_run_id AND b.attempt = a.attempt + 1
         WHERE a.worker_id = 'hole' AND a.status = 'failed' AND b.worker_id = 'hole'",
    )
    .await;
    assert_eq!(again, 0, "a retried attempt landed on the worker that had just failed it");
    let message: String = db
        .query_one("SELECT error->>'message' FROM node_attempts WHERE worker_id = 'hole' AND status = 'failed' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(message.contains("cannot start") && message.contains("[tools]"), "{message}");

    // Quarantined, and saying so: the API's worker list and the worker's own metrics.
    let (workers, hole) = loop {
        let workers: Value = w.http.get(format!("{}/v1/workers", coord.url)).send().await.unwrap().json().await.unwrap();
        let hole = workers.as_array().unwrap().iter().find(|x| x["id"] == "hole").cloned().expect("hole listed");
        if !hole["quarantined"].as_array().unwrap().is_empty() {
            break (workers, hole);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let q = &hole["quarantined"][0];
    assert_eq!((q["module"].as_str(), q["failures"].as_u64()), (Some("blender_still"), Some(3)), "{workers:#}");
    assert!(q["last_error"].as_str().unwrap().contains("cannot start"), "{q:#}");
    assert!(!hole["modules"].as_array().unwrap().contains(&json!("blender_still")), "a quarantined module is not offered: {hole:#}");
    let quarantines =
        renderfleet_tests::metric(&w.http, &hole_metrics, "renderfleet_worker_quarantines_total", &[("module", "blender_still")]).await;
    assert_eq!(quarantines, 1.0);
    let out = renderfleet_tests::renderctl(&["--coordinator", &coord.url, "workers", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("quarantined blender_still after 3 failures in a row"), "{text}");

    // And in the console's workers page, with its Release button.
    let console = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = console
        .post(format!("{}/console/login", coord.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &coord.url)
        .header("sec-fetch-site", "same-origin")
        .body(format!("token={}", renderfleet_tests::token("admin")))
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = console.get(format!("{}/console/workers", coord.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("after 3 failures in a row") && page.contains("id=\"release-hole-blender_still\""), "{page}");

    // An operator's word brings it back before the cool-down ends.
    let out = renderfleet_tests::renderctl(&["--coordinator", &coord.url, "workers", "release", "hole"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("takes blender_still again"), "{out:?}");
    renderfleet_tests::wait_until("the module back on the broken worker", Duration::from_secs(30), || async {
        let n = w.count("SELECT count(*) FROM workers WHERE id = 'hole' AND quarantined = '[]' AND 'blender_still' = ANY(modules)").await;
        (n == 1).then_some(())
    })
    .await;
    let resp = w.http.post(format!("{}/v1/workers/hole/release", coord.url)).send().await.unwrap();
    assert_eq!(resp.status(), 409, "nothing left to release");
}
