//! `compare` (`compare.artifacts`): a legacy (control) and a graph (candidate) artifact →
//! a verdict, the metrics behind it, a `comparison_report`, and for a mismatching image a
//! diff image. Images are compared decoded, pixel by pixel (`renderfleet_shared::imagediff`);
//! turntable frames and videos (decoded with ffmpeg) frame by frame; GLB files by hash, then
//! by their part structure; .blend files by hash, then by the object list Blender reads from
//! them; JSON artifacts path by path; anything else by hash.

use crate::geometry;
use crate::module::{fatal, input_ref, Env, Module, ModuleError, ModuleFuture};
use crate::tools::{self, Scratch};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::imagediff::{self, ImageMetrics, Rgba};
use renderfleet_shared::registry::module::COMPARE;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;

pub(super) struct Compare(pub(super) Arc<Env>);

/// The thresholds, from the node's params (the output type's gate config).
struct Thresholds {
    fail: f64,
    fail_percent: f64,
    hard_fail: f64,
    frame_sample: usize,
}

impl Module for Compare {
    fn key(&self) -> &'static str {
        COMPARE
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let env = &self.0;
            let (control, candidate) = (input_ref(task, "control")?, input_ref(task, "candidate")?);
            let p = &task.params;
            let t = Thresholds {
                fail: p["fail"].as_f64().unwrap_or(0.016),
                fail_percent: p["fail_percent"].as_f64().unwrap_or(1.0),
                hard_fail: p["hard_fail"].as_f64().unwrap_or(1.0),
                frame_sample: p["frame_sample"].as_u64().unwrap_or(0) as usize,
            };
            let (matched, metrics, diff) = if control.kind != candidate.kind {
                (false, json!({"reason": format!("kinds differ: control {} vs candidate {}", control.kind, candidate.kind)}), None)
            } else if control.sha256 == candidate.sha256 {
                (true, json!({"identical_bytes": true}), None)
            } else {
                match control.kind.as_str() {
                    "image_png" => images(env, &control, &candidate, &t).await?,
                    "frames" => frames(env, &control, &candidate, &t).await?,
                    "video_mp4" => videos(env, &control, &candidate, &t).await?,
                    "blend" => blends(env, &control, &candidate).await?,
                    "glb" => glb(env, &control, &candidate).await?,
                    "metadata_json" | "part_manifest" | "material_map" | "comparison_report" => {
                        json_files(env, &control, &candidate).await?
                    }
                    other => (false, json!({"reason": format!("the bytes differ and `{other}` has no structural comparison yet")}), None),
                }
            };
            let verdict = if matched { "match" } else { "mismatch" };
            let report = json!({"verdict": verdict, "kind": control.kind, "control": control, "candidate": candidate, "metrics": metrics, "diff": diff});
            let stored = env
                .store
                .put_bytes(
                    &serde_json::to_vec_pretty(&report).expect("JSON"),
                    "comparison_report",
                    "application/json",
                    json!({"verdict": verdict}),
                )
                .await?;
            Ok(json!({"report": stored, "verdict": verdict, "metrics": metrics, "diff": diff}))
        })
    }
}

/// A PNG decoded to RGBA8.
struct Decoded {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl Decoded {
    fn rgba(&self) -> Rgba<'_> {
        Rgba { width: self.width, height: self.height, data: &self.data }
    }
}

fn decode(bytes: &[u8]) -> Result<Decoded, ModuleError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| fatal(format!("not a readable PNG: {e}")))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| fatal(format!("not a readable PNG: {e}")))?;
    buf.truncate(info.buffer_size());
    let data = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => return Err(fatal("an indexed PNG was not expanded")),
    };
    Ok(Decoded { width: info.width, height: info.height, data })
}

fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, width, height);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        let mut w = e.write_header().expect("PNG header into memory");
        w.write_image_data(rgb).expect("PNG data into memory");
    }
    out
}

fn image_metrics(a: &Decoded, b: &Decoded, t: &Thresholds) -> Option<(bool, ImageMetrics)> {
    let m = imagediff::compare(a.rgba(), b.rgba(), t.fail)?;
    Some((imagediff::matches(&m, t.fail_percent, t.hard_fail), m))
}

async fn images(
    env: &Env,
    control: &ArtifactRef,
    candidate: &ArtifactRef,
    t: &Thresholds,
) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    let (a, b) = (env.store.read(control).await?, env.store.read(candidate).await?);
    png_pair(env, &a, &b, t, json!([control.sha256, candidate.sha256])).await
}

/// Two PNG files' pixels; a mismatch stores its diff image.
async fn png_pair(
    env: &Env,
    a: &[u8],
    b: &[u8],
    t: &Thresholds,
    diff_of: Value,
) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    let (a, b) = (decode(a)?, decode(b)?);
    let Some((matched, m)) = image_metrics(&a, &b, t) else {
        let reason = format!("sizes differ: {}×{} vs {}×{}", a.width, a.height, b.width, b.height);
        return Ok((false, json!({"reason": reason}), None));
    };
    let diff = if matched {
        None
    } else {
        let png = encode_rgb(a.width, a.height, &imagediff::diff_image(a.rgba(), b.rgba(), t.fail));
        let meta = json!({"width": a.width, "height": a.height, "diff_of": diff_of});
        Some(env.store.put_bytes(&png, "image_png", "image/png", meta).await?)
    };
    Ok((matched, json!(m), diff))
}

/// Videos: decoded to frames with ffmpeg, then compared as a turntable's frames are.
async fn videos(
    env: &Env,
    control: &ArtifactRef,
    candidate: &ArtifactRef,
    t: &Thresholds,
) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    let scratch = Scratch::new(&env.scratch, "compare").await?;
    let mut decoded = Vec::new();
    for (side, r) in [("control", control), ("candidate", candidate)] {
        let dir = scratch.dir.join(side);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| fatal(format!("cannot create {}: {e}", dir.display())))?;
        let input = env.store.path(r).await?;
        let args: Vec<&OsStr> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-i"]
            .map(OsStr::new)
            .into_iter()
            .chain(std::iter::once(input.as_os_str()))
            .chain(["-fps_mode", "passthrough", "-pix_fmt", "rgba", "f%05d.png"].map(OsStr::new))
            .collect();
        tools::run(&env.tools.ffmpeg, &args, &dir, &format!("decoding the {side} video (ffmpeg)"), false).await?;
        let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| fatal(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        decoded.push(names);
    }
    let (fa, fb) = (&decoded[0], &decoded[1]);
    if fa.len() != fb.len() {
        return Ok((false, json!({"reason": format!("frame counts differ: {} vs {}", fa.len(), fb.len())}), None));
    }
    let mut tally = FrameTally::default();
    for (i, (x, y)) in fa.iter().zip(fb).enumerate().step_by(t.frame_sample.max(1)) {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| fatal(format!("{}: {e}", p.display())));
        tally.add(json!(i), png_pair(env, &read(x)?, &read(y)?, t, json!([control.sha256, candidate.sha256, i])).await?);
    }
    Ok(tally.finish())
}

/// Frame-by-frame results of a turntable or a video: every frame's verdict, and the worst
/// frame (most failing pixels), whose metrics and diff image speak for the whole.
struct FrameTally {
    frames: Vec<Value>,
    worst: Option<(f64, Value, Option<ArtifactRef>)>,
    all_match: bool,
}

impl Default for FrameTally {
    fn default() -> Self {
        FrameTally { frames: Vec::new(), worst: None, all_match: true }
    }
}

impl FrameTally {
    fn add(&mut self, frame: Value, (matched, m, diff): (bool, Value, Option<ArtifactRef>)) {
        self.all_match &= matched;
        let score = m["fail_share"].as_f64().unwrap_or(1.0);
        self.frames.push(json!({"frame": frame, "match": matched, "fail_share": m["fail_share"], "rmse": m["rmse"]}));
        if self.worst.as_ref().is_none_or(|(s, _, _)| score > *s) {
            self.worst = Some((score, m, diff));
        }
    }

    fn finish(self) -> (bool, Value, Option<ArtifactRef>) {
        let (_, worst, diff) = self.worst.unwrap_or((0.0, json!({}), None));
        (self.all_match, json!({"frames_compared": self.frames.len(), "worst": worst, "frames": self.frames}), diff)
    }
}

/// .blend files: the scene's objects (name, type, materials, vertex count, part key), read
/// by Blender itself; the same objects make a match.
async fn blends(env: &Env, control: &ArtifactRef, candidate: &ArtifactRef) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    const LIST: &str = "import bpy, json; print('RF_OBJECTS ' + json.dumps(sorted([[o.name, o.type, [s.material.name if s.material else '' for s in o.material_slots], len(o.data.vertices) if o.type == 'MESH' else 0, str(o.get('part_key', ''))] for o in bpy.data.objects])))";
    let scratch = Scratch::new(&env.scratch, "compare").await?;
    let mut lists = Vec::new();
    for (side, r) in [("control", control), ("candidate", candidate)] {
        // Blender wants the extension; the store names files by hash only.
        let file = scratch.dir.join(format!("{side}.blend"));
        tokio::fs::symlink(env.store.path(r).await?, &file).await.map_err(|e| fatal(format!("cannot link {}: {e}", file.display())))?;
        let owned = crate::blender::expr_args(&env.tools.blender, Some(&file), LIST);
        let args: Vec<&OsStr> = owned.iter().map(|a| a.as_os_str()).collect();
        let ran = tools::run(&env.tools.blender, &args, &scratch.dir, &format!("listing the {side} .blend (Blender)"), false).await?;
        let line = ran
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("RF_OBJECTS "))
            .ok_or_else(|| fatal(format!("Blender listed no objects of the {side} .blend")))?;
        lists.push(serde_json::from_str::<Value>(line).map_err(|e| fatal(format!("unreadable object list: {e}")))?);
    }
    let mut diffs = Vec::new();
    json_diff("", &lists[0], &lists[1], &mut diffs);
    Ok((diffs.is_empty(), json!({"identical_bytes": false, "objects": lists[0].as_array().map(Vec::len), "differing": diffs}), None))
}

/// Frame by frame (every `frame_sample`-th); the worst frame speaks for the turntable.
async fn frames(
    env: &Env,
    control: &ArtifactRef,
    candidate: &ArtifactRef,
    t: &Thresholds,
) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    let read = |r: &ArtifactRef| {
        let r = r.clone();
        async move { serde_json::from_slice::<Value>(&env.store.read(&r).await?).map_err(|e| fatal(format!("unreadable frames manifest: {e}"))) }
    };
    let (a, b) = (read(control).await?, read(candidate).await?);
    let (fa, fb) = (a["frames"].as_array().cloned().unwrap_or_default(), b["frames"].as_array().cloned().unwrap_or_default());
    if fa.len() != fb.len() {
        return Ok((false, json!({"reason": format!("frame counts differ: {} vs {}", fa.len(), fb.len())}), None));
    }
    let frame_ref = |f: &Value| ArtifactRef {
        sha256: f["sha256"].as_str().unwrap_or_default().into(),
        kind: "image_png".into(),
        bytes: f["bytes"].as_u64().unwrap_or(0),
        mime: "image/png".into(),
        meta: Value::Null,
    };
    let step = t.frame_sample.max(1);
    let mut tally = FrameTally::default();
    for (x, y) in fa.iter().zip(&fb).step_by(step) {
        tally.add(x["index"].clone(), images(env, &frame_ref(x), &frame_ref(y), t).await?);
    }
    Ok(tally.finish())
}

/// Bytes differ: the same parts, keys and triangle counts make a match.
async fn glb(env: &Env, control: &ArtifactRef, candidate: &ArtifactRef) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    let parts = |bytes: Vec<u8>| -> Result<BTreeMap<String, (String, u64)>, ModuleError> {
        let (_, manifest) = geometry::metadata(&bytes, "m").map_err(|e| fatal(e.to_string()))?;
        Ok(manifest.parts.into_iter().map(|p| (p.key, (p.part, p.triangles))).collect())
    };
    let (a, b) = (parts(env.store.read(control).await?)?, parts(env.store.read(candidate).await?)?);
    let differing: Vec<&String> =
        a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    Ok((
        differing.is_empty(),
        json!({"identical_bytes": false, "parts_compared": a.len().max(b.len()), "differing_parts": differing}),
        None,
    ))
}

/// JSON artifacts: every path whose value differs.
async fn json_files(env: &Env, control: &ArtifactRef, candidate: &ArtifactRef) -> Result<(bool, Value, Option<ArtifactRef>), ModuleError> {
    let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).map_err(|e| fatal(format!("unreadable JSON artifact: {e}")));
    let (a, b) = (parse(env.store.read(control).await?)?, parse(env.store.read(candidate).await?)?);
    let mut diffs = Vec::new();
    json_diff("", &a, &b, &mut diffs);
    Ok((diffs.is_empty(), json!({"differing_paths": diffs.len(), "paths": diffs.iter().take(100).collect::<Vec<_>>()}), None))
}

fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<Value>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                json_diff(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}/{i}"), u, v, out);
            }
        }
        _ if a != b => out.push(json!({"path": path, "control": a, "candidate": b})),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_diff_lists_each_differing_path() {
        let mut out = Vec::new();
        json_diff("", &json!({"a": 1, "b": {"c": [1, 2]}, "d/e": true}), &json!({"a": 1, "b": {"c": [1, 3]}, "x": null}), &mut out);
        let paths: Vec<&str> = out.iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/b/c/1", "/d~1e"]);
    }

    #[test]
    fn png_round_trip_and_metrics() {
        // A 16×16 gradient, and the same image with one pixel's red channel raised by 40.
        let rgb: Vec<u8> = (0..16 * 16).flat_map(|i| [i as u8, 0, 255 - i as u8]).collect();
        let changed = 5 * 16 + 3; // pixel (3, 5), red 83 → 123
        let mut other = rgb.clone();
        other[changed * 3] += 40;
        let (a, b) = (decode(&encode_rgb(16, 16, &rgb)).unwrap(), decode(&encode_rgb(16, 16, &other)).unwrap());
        assert_eq!((a.width, a.height, a.data.len()), (16, 16, 16 * 16 * 4));
        let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        assert_eq!(a.data, rgba, "the PNG round trip keeps every pixel, opaque");
        assert_eq!(b.data[changed * 4], 123);

        let t = Thresholds { fail: 0.016, fail_percent: 1.0, hard_fail: 1.0, frame_sample: 0 };
        let (matched, m) = image_metrics(&a, &b, &t).unwrap();
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        // One channel of 16·16·4 = 1024 differs, by 40 of 255.
        assert!(!m.identical);
        assert!(close(m.max_abs, 40.0 / 255.0), "max_abs {}", m.max_abs);
        assert!(close(m.mean_abs, 40.0 / 1024.0 / 255.0), "mean_abs {}", m.mean_abs);
        // A pixel fails when a channel differs by more than round(0.016·255) = 4: one of 256.
        assert!(close(m.fail_share, 1.0 / 256.0), "fail_share {}", m.fail_share);
        assert!(close(m.fail_share * 100.0, 0.390_625), "fail percent {}", m.fail_share * 100.0);
        // RMSE = √(40²/1024) = 1.25 of 255; PSNR = 20·log10(255/1.25) = 20·log10(204) dB.
        assert!(close(m.rmse, 1.25 / 255.0), "rmse {}", m.rmse);
        let psnr = m.psnr_db.expect("a finite PSNR for different images");
        assert!((psnr - 46.192_603_348_517_98).abs() < 1e-9, "psnr {psnr}");
        assert!(m.ssim < 1.0 && m.ssim > 0.9, "ssim {}", m.ssim);
        assert!(matched, "0.39% failing pixels is within fail_percent 1%");
        let strict = Thresholds { fail_percent: 0.3, ..t };
        assert!(!image_metrics(&a, &b, &strict).unwrap().0, "but not within 0.3%");
        let hard = Thresholds { fail_percent: 1.0, hard_fail: 0.15, ..strict };
        assert!(!image_metrics(&a, &b, &hard).unwrap().0, "and a difference of 0.157 breaks a hard_fail of 0.15");
        // The diff image marks the failing pixel red, and only it.
        let diff = imagediff::diff_image(a.rgba(), b.rgba(), t.fail);
        for (i, px) in diff.chunks_exact(3).enumerate() {
            assert_eq!(px, if i == changed { [255, 0, 0] } else { [0, 0, 0] }, "diff pixel {i}");
        }

        // Identical images: no difference at all, and no PSNR (it is infinite; `None`).
        let (matched, m) = image_metrics(&a, &a, &t).unwrap();
        assert!(matched && m.identical);
        assert_eq!((m.max_abs, m.mean_abs, m.rmse, m.fail_share, m.psnr_db), (0.0, 0.0, 0.0, 0.0, None));
        assert!(close(m.ssim, 1.0), "ssim {}", m.ssim);
    }
}
