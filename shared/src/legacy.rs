//! The legacy pipeline's presets, mapped onto the graph's node params (DESIGN §7).
//!
//! The legacy render of an order line is one task that runs the same modules as the graph
//! in a fixed order: resolve the CAD file, export the GLB, assign materials, then render a
//! still, a turntable (and encode it) or a .blend. An output type keeps the legacy system's
//! own preset (`legacy_preset`); this module turns it into each step's params, filled with
//! the registry's defaults exactly as a graph node's are, so the same settings give the
//! same params, and so the same pixels, through either pipeline.

use crate::registry::registry;
use serde_json::{json, Map, Value};

/// What the legacy pipeline renders, from the output type's artifact kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliverable {
    Glb,
    PartManifest,
    Metadata,
    Still,
    Turntable,
    Blend,
}

/// Each step's params, in the graph's terms (node type → params with defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    pub deliverable: Deliverable,
    pub resolve: Value,
    pub export: Value,
    pub materials: Value,
    pub metadata: Value,
    pub still: Value,
    pub turntable: Value,
    pub encode: Value,
    pub blend: Value,
}

/// Keys a legacy preset may have, and what each means.
pub const PRESET_KEYS: &[(&str, &str)] = &[
    ("preset", "the legacy preset's name (informational)"),
    ("resolution", "square size in pixels, or [width, height]"),
    ("samples", "Cycles samples"),
    ("seed", "Cycles seed"),
    ("background", "white, transparent or #RRGGBB"),
    ("camera", "{azimuth, elevation} in degrees"),
    ("frames", "turntable frame count"),
    ("fps", "video frames per second"),
    ("crf", "video quality"),
    ("tessellation", "{linear, angular} deflection"),
    ("missing_materials", "default or fail"),
    ("default_material", "material for unmapped parts"),
];

fn deliverable(artifact_kind: &str) -> Result<Deliverable, String> {
    Ok(match artifact_kind {
        "glb" => Deliverable::Glb,
        "part_manifest" => Deliverable::PartManifest,
        "metadata_json" => Deliverable::Metadata,
        "image_png" => Deliverable::Still,
        "video_mp4" | "frames" => Deliverable::Turntable,
        "blend" => Deliverable::Blend,
        other => {
            return Err(format!(
                "the legacy pipeline cannot produce `{other}`; it makes glb, part_manifest, metadata_json, image_png, video_mp4 and blend"
            ))
        }
    })
}

/// Maps `preset` for an output type that delivers `artifact_kind`. Unknown keys are refused
/// (a typo must not silently render with a default).
pub fn steps(artifact_kind: &str, preset: &Value) -> Result<Steps, String> {
    let empty = Map::new();
    let p = match preset {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => return Err("the legacy preset must be a JSON object".into()),
    };
    if let Some(k) = p.keys().find(|k| !PRESET_KEYS.iter().any(|(known, _)| known == k)) {
        let known: Vec<&str> = PRESET_KEYS.iter().map(|(k, _)| *k).collect();
        return Err(format!("legacy preset key `{k}` is not known; known keys: {}", known.join(", ")));
    }
    let mut render = Map::new();
    match p.get("resolution") {
        Some(Value::Array(wh)) if wh.len() == 2 => {
            render.insert("width".into(), wh[0].clone());
            render.insert("height".into(), wh[1].clone());
        }
        Some(v @ Value::Number(_)) => {
            render.insert("width".into(), v.clone());
            render.insert("height".into(), v.clone());
        }
        Some(other) => return Err(format!("legacy preset `resolution` must be a size or [width, height], not {other}")),
        None => {}
    }
    for key in ["samples", "seed", "background"] {
        if let Some(v) = p.get(key) {
            render.insert(key.into(), v.clone());
        }
    }
    if let Some(c) = p.get("camera") {
        let mut cam = Map::new();
        if let Some(a) = c.get("azimuth") {
            cam.insert("azimuth_deg".into(), a.clone());
        }
        if let Some(e) = c.get("elevation") {
            cam.insert("elevation_deg".into(), e.clone());
        }
        render.insert("camera".into(), Value::Object(cam));
    }
    let mut turntable = render.clone();
    if let Some(f) = p.get("frames") {
        turntable.insert("frame_count".into(), f.clone());
    }
    let mut export = Map::new();
    if let Some(t) = p.get("tessellation") {
        if let Some(l) = t.get("linear") {
            export.insert("tol_linear".into(), l.clone());
        }
        if let Some(a) = t.get("angular") {
            export.insert("tol_angular".into(), a.clone());
        }
    }
    let mut materials = Map::new();
    if let Some(m) = p.get("missing_materials") {
        materials.insert("on_missing".into(), m.clone());
    }
    if let Some(m) = p.get("default_material") {
        materials.insert("default_material".into(), m.clone());
    }
    let mut encode = Map::new();
    for (from, to) in [("fps", "fps"), ("crf", "crf")] {
        if let Some(v) = p.get(from) {
            encode.insert(to.into(), v.clone());
        }
    }
    let filled = |type_key: &str, params: Map<String, Value>| -> Result<Value, String> {
        let params = Value::Object(params);
        let problems = registry().check_params(type_key, &params);
        if let Some((path, message)) = problems.first() {
            return Err(format!("legacy preset does not fit `{type_key}` at `{path}`: {message}"));
        }
        Ok(registry().with_defaults(type_key, &params))
    };
    Ok(Steps {
        deliverable: deliverable(artifact_kind)?,
        resolve: filled("cad.resolve", Map::new())?,
        export: filled("cad.export_glb", export)?,
        materials: filled("material.assign", materials)?,
        metadata: filled("cad.extract_metadata", Map::new())?,
        still: filled("render.still", render.clone())?,
        turntable: filled("render.turntable", turntable)?,
        encode: filled("video.encode", encode)?,
        blend: filled("export.blend", Map::new())?,
    })
}

/// The params a graph node gets for the same settings (tests compare the two pipelines).
pub fn graph_params(type_key: &str, params: Value) -> Value {
    registry().with_defaults(type_key, &json!(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_preset_gives_the_graph_nodes_params() {
        let s =
            steps("image_png", &json!({"resolution": 128, "samples": 8, "background": "white", "tessellation": {"linear": 0.2}})).unwrap();
        assert_eq!(s.deliverable, Deliverable::Still);
        assert_eq!(s.still, graph_params("render.still", json!({"width": 128, "height": 128, "samples": 8, "background": "white"})));
        assert_eq!(s.export, graph_params("cad.export_glb", json!({"tol_linear": 0.2})));
    }

    #[test]
    fn turntables_take_frames_and_video_settings() {
        let s = steps("video_mp4", &json!({"resolution": [160, 120], "frames": 6, "fps": 12})).unwrap();
        assert_eq!(s.deliverable, Deliverable::Turntable);
        assert_eq!(s.turntable["frame_count"], 6);
        assert_eq!(s.turntable["width"], 160);
        assert_eq!(s.encode["fps"], 12);
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_fix() {
        let e = steps("image_png", &json!({"sampels": 8})).unwrap_err();
        assert!(e.contains("sampels") && e.contains("samples"), "{e}");
        let e = steps("image_png", &json!({"resolution": 99999})).unwrap_err();
        assert!(e.contains("render.still") && e.contains("8192"), "{e}");
        assert!(steps("comparison_report", &json!({})).unwrap_err().contains("cannot produce"));
    }
}
