//! Order-line graphs the render tests and the render benchmark submit.

use serde_json::{json, Value};

/// resolve → export → assign → still (`px` square, `samples`) → publish.
pub fn still(px: u32, samples: u32) -> Value {
    json!({
        "nodes": [
            {"id": "resolve", "type": "cad.resolve"},
            {"id": "export", "type": "cad.export_glb"},
            {"id": "assign", "type": "material.assign"},
            {"id": "still", "type": "render.still", "params": {"width": px, "height": px, "samples": samples}},
            {"id": "publish", "type": "output.publish", "params": {"name": "still"}}
        ],
        "edges": [
            {"from": "resolve", "to": "export"},
            {"from": "export", "from_port": "parts", "to": "assign"},
            {"from": "export", "from_port": "glb", "to": "still", "to_port": "glb"},
            {"from": "assign", "to": "still", "to_port": "materials"},
            {"from": "still", "to": "publish"}
        ]
    })
}

/// resolve → export → assign → turntable (`params`) → encode (12 fps) → publish.
pub fn turntable(params: Value) -> Value {
    json!({
        "nodes": [
            {"id": "resolve", "type": "cad.resolve"},
            {"id": "export", "type": "cad.export_glb"},
            {"id": "assign", "type": "material.assign"},
            {"id": "turntable", "type": "render.turntable", "params": params},
            {"id": "encode", "type": "video.encode", "params": {"fps": 12}},
            {"id": "publish", "type": "output.publish", "params": {"name": "video"}}
        ],
        "edges": [
            {"from": "resolve", "to": "export"},
            {"from": "export", "from_port": "parts", "to": "assign"},
            {"from": "export", "from_port": "glb", "to": "turntable", "to_port": "glb"},
            {"from": "assign", "to": "turntable", "to_port": "materials"},
            {"from": "turntable", "to": "encode"},
            {"from": "encode", "to": "publish"}
        ]
    })
}
