//! Shadow comparisons: the list (filtered by output type and verdict) and one comparison,
//! shown so that a person would rather look than read: the legacy and graph images at full
//! size under one zoom and pan, swipe, flip and a heat map of the difference (the `compare`
//! bundle from `coordinator/web`), a frame scrubber for turntables with every frame's
//! verdict, and the metrics as a table beside the output type's gate thresholds. Without
//! script the page still shows the stored images and the tables.

use super::html::{esc, status_badge};
use super::session::Viewer;
use super::{assets, db_err, oops, some, stored_json};
use crate::db::sql;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use renderfleet_shared::artifact::{is_sha256, ArtifactRef};
use renderfleet_shared::gate::GateConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write;
use uuid::Uuid;

#[derive(Deserialize, Default)]
pub(super) struct ComparisonFilter {
    output_type: Option<String>,
    verdict: Option<String>,
}

pub(super) async fn list(State(state): State<AppState>, Query(f): Query<ComparisonFilter>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let rows = match client.query(sql::COMPARISONS, &[&some(&f.output_type), &some(&f.verdict), &200i64]).await {
        Ok(r) => r,
        Err(e) => return db_err(e),
    };
    let mut body = format!(
        "<form method=\"get\" class=\"filters\"><input name=\"output_type\" placeholder=\"output type\" value=\"{}\"> <select name=\"verdict\"><option value=\"\">any verdict</option>{}</select> <button>Filter</button></form>",
        esc(some(&f.output_type).unwrap_or("")),
        ["match", "mismatch", "candidate_error", "control_error", "ignored"]
            .iter()
            .map(|v| format!("<option{}>{v}</option>", if some(&f.verdict) == Some(*v) { " selected" } else { "" }))
            .collect::<String>()
    );
    body += "<table id=\"comparisons\"><tr><th>comparison</th><th>output type</th><th>kind</th><th>verdict</th><th>failing pixels</th><th>PSNR</th><th>decided</th></tr>";
    for r in &rows {
        let id: Uuid = r.get(0);
        let m: Value = r.get(9);
        let m = if m["worst"].is_object() { m["worst"].clone() } else { m };
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/comparisons/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            &id.to_string()[..13],
            esc(r.get(2)),
            esc(r.get(3)),
            status_badge(r.get::<_, Option<&str>>(8).unwrap_or(r.get(7))),
            m["fail_share"].as_f64().map(|f| format!("{:.3}%", f * 100.0)).unwrap_or_default(),
            m["psnr_db"].as_f64().map(|p| format!("{p:.1} dB")).unwrap_or_default(),
            r.get::<_, Option<DateTime<Utc>>>(14).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
        );
    }
    body += "</table>";
    viewer.page("Comparisons", &body).into_response()
}

/// `/console/comparisons/{id}`.
pub(super) async fn page(State(state): State<AppState>, Path(id): Path<Uuid>, viewer: axum::Extension<Viewer>) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let k = match client.query_opt(sql::COMPARISON, &[&id]).await {
        Ok(Some(k)) => k,
        Ok(None) => return oops(StatusCode::NOT_FOUND, &format!("no comparison {id}")),
        Err(e) => return db_err(e),
    };
    let key: String = k.get("output_type_key");
    let (control_run, candidate_run): (Uuid, Uuid) = (k.get("control_run"), k.get("candidate_run"));
    let gate: GateConfig = match client.query_opt(sql::OUTPUT_TYPE, &[&key]).await {
        Ok(row) => row.and_then(|r| serde_json::from_value(r.get("gate_config")).ok()).unwrap_or_default(),
        Err(e) => return db_err(e),
    };
    let delivered = |run: Uuid| {
        let (client, key) = (&client, &key);
        async move {
            let row = client.query_opt(sql::DELIVERED, &[&run, key]).await.ok().flatten()?;
            serde_json::from_value::<ArtifactRef>(row.get::<_, Option<Value>>(0)?).ok().filter(|a| is_sha256(&a.sha256))
        }
    };
    let (control, candidate) = (delivered(control_run).await, delivered(candidate_run).await);
    // Hashes written by workers become URLs: only well-formed ones do.
    let diff: Option<String> = k.get::<_, Option<String>>("diff_sha256").filter(|s| is_sha256(s));
    let verdict: Option<String> = k.get("verdict");
    let metrics: Value = k.get::<_, Option<Value>>("metrics").unwrap_or(Value::Null);
    let mut body = format!(
        "<div class=\"card\"><p>comparison <code>{id}</code> of <b>{}</b> ({}) · verdict <span id=\"verdict\">{}</span>{}</p><p>legacy run <a href=\"/console/runs/{control_run}\">{}</a> · graph run <a href=\"/console/runs/{candidate_run}\">{}</a></p></div>",
        esc(&key),
        esc(k.get("kind")),
        status_badge(verdict.as_deref().unwrap_or(k.get("status"))),
        k.get::<_, Option<String>>("ignore_rule").map(|r| format!(" (ignore rule <b>{}</b>)", esc(&r))).unwrap_or_default(),
        &control_run.to_string()[..13],
        &candidate_run.to_string()[..13],
    );
    let frames = match (&control, &candidate) {
        (Some(a), Some(b)) => view_frames(&state, a, b, &metrics, verdict.as_deref()).await,
        _ => None,
    };
    if let (Some(frames), Some(a), Some(b)) = (&frames, &control, &candidate) {
        let video = a.kind == "video_mp4";
        let view = json!({
            "source": if video { "video" } else { "images" },
            "frames": frames,
            "control_video": video.then(|| format!("/console/artifacts/{}", a.sha256)),
            "candidate_video": video.then(|| format!("/console/artifacts/{}", b.sha256)),
            "fail": gate.fail,
        });
        let _ = write!(
            body,
            "<div id=\"compare-view\" data-view=\"{}\"><noscript>The synchronized view needs JavaScript; the stored images are below.</noscript></div>",
            esc(&view.to_string())
        );
    }
    body += &metrics_table(&metrics, &gate);
    if let Some(list) = metrics["frames"].as_array().filter(|l| !l.is_empty()) {
        body += "<h3>frames</h3><table id=\"frame-verdicts\"><tr><th>frame</th><th>verdict</th><th>failing pixels</th><th>RMSE</th></tr>";
        for f in list {
            let ok = f["match"].as_bool() == Some(true);
            let _ = write!(
                body,
                "<tr data-frame=\"{}\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f["frame"].to_string()),
                f["frame"].as_u64().map(|i| i + 1).unwrap_or_default(),
                if ok { "pass" } else { "fail" },
                if ok { "match" } else { "mismatch" },
                f["fail_share"].as_f64().map(|s| format!("{:.3} %", s * 100.0)).unwrap_or_default(),
                f["rmse"].as_f64().map(|r| format!("{r:.5}")).unwrap_or_default(),
            );
        }
        body += "</table>";
    }
    // The stored files themselves: the deliverables and the compare module's own diff.
    body += "<details class=\"files\" open><summary>the stored images</summary><div class=\"side\">";
    let still = control.as_ref().is_some_and(|a| a.kind == "image_png");
    let figure = |title: &str, id: &str, sha: Option<&str>, inline: bool| match sha {
        Some(s) if inline => {
            format!("<figure><img id=\"{id}\" src=\"/console/artifacts/{s}\" alt=\"{title}\"><figcaption>{title}</figcaption></figure>")
        }
        Some(s) => format!("<figure><a id=\"{id}\" href=\"/console/artifacts/{s}\">{title}: download</a></figure>"),
        None => format!("<figure><p class=\"muted\">{title}: none</p></figure>"),
    };
    body += &figure("legacy (control)", "control-image", control.as_ref().map(|a| a.sha256.as_str()), still);
    body += &figure("graph (candidate)", "candidate-image", candidate.as_ref().map(|a| a.sha256.as_str()), still);
    body += &figure("difference (the compare module's, worst frame)", "diff-image", diff.as_deref(), true);
    let _ = write!(
        body,
        "</div></details><details><summary>the metrics as stored</summary><pre id=\"metrics\">{}</pre></details>",
        esc(&serde_json::to_string_pretty(&metrics).unwrap_or_default())
    );
    if frames.is_some() {
        body += &assets::tags("compare");
    }
    assets::with_scripts(viewer.page("Comparison", &body).into_response())
}

/// The frames the view shows: a still's one image pair, a turntable's frames (PNGs from the
/// two manifests, or frame numbers of two videos), each with the verdict the compare module
/// gave it. `None` when there is nothing to look at (a .blend, a GLB).
async fn view_frames(state: &AppState, a: &ArtifactRef, b: &ArtifactRef, metrics: &Value, verdict: Option<&str>) -> Option<Vec<Value>> {
    let verdict_of_still = verdict.map(|v| v == "match");
    let url = |sha: &str| format!("/console/artifacts/{sha}");
    let verdict = |i: u64| metrics["frames"].as_array().and_then(|l| l.iter().find(|f| f["frame"].as_u64() == Some(i))).cloned();
    let frame = |i: u64, control: Option<String>, candidate: Option<String>| {
        let v = verdict(i);
        json!({"index": i, "control": control, "candidate": candidate,
               "match": v.as_ref().map(|v| v["match"].clone()), "fail_share": v.as_ref().map(|v| v["fail_share"].clone())})
    };
    match a.kind.as_str() {
        "image_png" => Some(vec![json!({"index": 0, "control": url(&a.sha256), "candidate": url(&b.sha256),
                                        "match": verdict_of_still, "fail_share": metrics["fail_share"]})]),
        "frames" => {
            let (ma, mb): (Value, Value) = (stored_json(state, &a.sha256).await?, stored_json(state, &b.sha256).await?);
            let (fa, fb) = (ma["frames"].as_array()?, mb["frames"].as_array()?);
            let sha = |f: &Value| f["sha256"].as_str().filter(|s| is_sha256(s)).map(url);
            Some(fa.iter().zip(fb).map(|(x, y)| frame(x["index"].as_u64().unwrap_or(0), sha(x), sha(y))).collect())
        }
        "video_mp4" => {
            let sampled = metrics["frames"].as_array().and_then(|l| l.iter().filter_map(|f| f["frame"].as_u64()).max()).map(|m| m + 1);
            let n = a.meta["frames"].as_u64().or(sampled)?.min(10_000);
            Some((0..n).map(|i| frame(i, None, None)).collect())
        }
        _ => None,
    }
}

/// The metrics beside the gate's thresholds: the two the verdict rests on (failing pixels,
/// largest difference) pass or fail; the rest are reported. A turntable's are its worst
/// frame's; a .blend's are its object lists.
fn metrics_table(metrics: &Value, gate: &GateConfig) -> String {
    let mut out = String::from("<h3>metrics</h3>");
    if let Some(reason) = metrics["reason"].as_str() {
        let _ = write!(out, "<p class=\"error\" id=\"metrics-reason\">{}</p>", esc(reason));
    }
    let (m, whose) = match metrics.get("worst") {
        Some(w) if w.is_object() => (w, format!(" (the worst of {} frames compared)", metrics["frames_compared"])),
        _ => (metrics, String::new()),
    };
    out += &format!(
        "<table id=\"gate-metrics\" class=\"gate-metrics\"><tr><th>metric{}</th><th>value</th><th>the output type's gate</th><th></th></tr>",
        esc(&whose)
    );
    let mut row = |id: &str, name: &str, value: String, bound: String, pass: Option<bool>| {
        let (class, word) = match pass {
            Some(true) => ("pass", "pass"),
            Some(false) => ("fail", "fail"),
            None => ("", "reported"),
        };
        let _ = write!(out, "<tr id=\"metric-{id}\"><td>{name}</td><td>{value}</td><td>{bound}</td><td class=\"{class}\">{word}</td></tr>");
    };
    if let Some(share) = m["fail_share"].as_f64() {
        row(
            "fail-share",
            "failing pixels",
            format!("{:.3} %", share * 100.0),
            format!("≤ {} % (a pixel fails above {}/255 in a channel)", gate.fail_percent, (gate.fail * 255.0).round()),
            Some(share * 100.0 <= gate.fail_percent),
        );
    }
    if let Some(max) = m["max_abs"].as_f64() {
        row(
            "max-abs",
            "largest difference",
            format!("{:.0}/255", max * 255.0),
            format!("≤ {:.0}/255", gate.hard_fail * 255.0),
            Some(max <= gate.hard_fail),
        );
    }
    let reported = [("rmse", "RMSE", 5), ("mean_abs", "mean difference", 5), ("ssim", "SSIM", 4)];
    for (key, name, digits) in reported {
        if let Some(v) = m[key].as_f64() {
            row(&key.replace('_', "-"), name, format!("{v:.digits$}"), "—".into(), None);
        }
    }
    if m.get("psnr_db").is_some() {
        row(
            "psnr",
            "PSNR",
            m["psnr_db"].as_f64().map(|p| format!("{p:.2} dB")).unwrap_or_else(|| "∞ (identical)".into()),
            "—".into(),
            None,
        );
    }
    if let Some(objects) = metrics["objects"].as_u64() {
        let differing = metrics["differing"].as_array().map(Vec::len).unwrap_or(0);
        row("objects", "objects (.blend)", format!("{objects}, {differing} differing"), "the same objects".into(), Some(differing == 0));
    }
    out + "</table>"
}
