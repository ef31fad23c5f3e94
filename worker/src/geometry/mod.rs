//! Reading and annotating GLB files with the `gltf` crate: instance-aware part keys (the
//! rules live in `renderfleet_shared::parts`), the part manifest, and the metadata a
//! product page needs (bounding box, triangle, part and instance counts).
//!
//! The part key is written into each node's glTF `extras` (`part_key`, `part`), so it
//! travels with the GLB: Blender's importer turns extras into object properties, which is
//! how a material map keyed by part reaches the render.

use gltf::binary::Glb;
use renderfleet_shared::parts::{part_keys, PartOccurrence, TreeNode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// The `part_manifest` artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Every occurrence with geometry, in document order.
    pub parts: Vec<ManifestPart>,
    /// Distinct parts (what the occurrences are instances of).
    pub part_count: usize,
    pub instance_count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestPart {
    pub key: String,
    pub part: String,
    pub name: String,
    pub node: usize,
    pub triangles: u64,
}

/// Why a GLB could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the GLB is not valid glTF 2.0 ({0}); re-export it")]
pub struct BadGlb(String);

/// The extras key of the node [`annotate`] puts above the scene to turn CAD's Z-up into
/// glTF's Y-up; it is not part of the product, so part keys look through it.
const UP_AXIS_NODE: &str = "renderfleet_up_axis";

/// The scene's root nodes, looking through the up-axis node.
fn roots(doc: &gltf::Document) -> Vec<gltf::Node<'_>> {
    let scene = doc.default_scene().or_else(|| doc.scenes().next());
    let mut roots: Vec<gltf::Node> = scene.map(|s| s.nodes().collect()).unwrap_or_default();
    if let [only] = roots.as_slice() {
        if only.extras().as_ref().is_some_and(|e| e.get().contains(UP_AXIS_NODE)) {
            roots = only.children().collect();
        }
    }
    roots
}

fn scene_tree(doc: &gltf::Document) -> (Vec<TreeNode>, Vec<usize>) {
    let nodes = doc
        .nodes()
        .map(|n| TreeNode {
            name: n.name().map(String::from),
            mesh_name: n.mesh().and_then(|m| m.name().map(String::from)),
            has_mesh: n.mesh().is_some(),
            children: n.children().map(|c| c.index()).collect(),
        })
        .collect();
    (nodes, roots(doc).iter().map(|n| n.index()).collect())
}

fn triangles(node: &gltf::Node) -> u64 {
    node.mesh()
        .map(|m| {
            m.primitives()
                .filter(|p| p.mode() == gltf::mesh::Mode::Triangles)
                .map(|p| {
                    p.indices().map(|a| a.count()).or_else(|| p.get(&gltf::Semantic::Positions).map(|a| a.count())).unwrap_or(0) as u64 / 3
                })
                .sum()
        })
        .unwrap_or(0)
}

fn manifest(doc: &gltf::Document, occurrences: &[PartOccurrence]) -> Manifest {
    let nodes: Vec<gltf::Node> = doc.nodes().collect();
    let parts: Vec<ManifestPart> = occurrences
        .iter()
        .map(|o| ManifestPart {
            key: o.key.clone(),
            part: o.part.clone(),
            name: o.name.clone(),
            node: o.node,
            triangles: triangles(&nodes[o.node]),
        })
        .collect();
    let mut distinct: Vec<&str> = parts.iter().map(|p| p.part.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    Manifest { version: 1, part_count: distinct.len(), instance_count: parts.len(), parts }
}

/// Writes each part's key into its node's extras, stands the product up (STEP is Z-up, glTF
/// Y-up, and OpenCASCADE writes the coordinates unchanged: without this every product
/// renders lying on its back), and returns the new GLB and the manifest.
pub fn annotate(glb: &[u8]) -> Result<(Vec<u8>, Manifest), BadGlb> {
    let parsed = Glb::from_slice(glb).map_err(|e| BadGlb(e.to_string()))?;
    let doc = gltf::Gltf::from_slice(glb).map_err(|e| BadGlb(e.to_string()))?.document;
    let (tree, roots) = scene_tree(&doc);
    let occurrences = part_keys(&tree, &roots);
    let mut json: Value = serde_json::from_slice(&parsed.json).map_err(|e| BadGlb(e.to_string()))?;
    let nodes = json.get_mut("nodes").and_then(Value::as_array_mut).ok_or_else(|| BadGlb("no nodes".into()))?;
    for o in &occurrences {
        let node = nodes[o.node].as_object_mut().ok_or_else(|| BadGlb("a node is not an object".into()))?;
        let extras = node.entry("extras").or_insert_with(|| json!({}));
        if let Some(extras) = extras.as_object_mut() {
            extras.insert("part_key".into(), json!(o.key));
            extras.insert("part".into(), json!(o.part));
        }
    }
    let wrapper = nodes.len();
    let scene = json.get("scene").and_then(Value::as_u64).unwrap_or(0) as usize;
    // A GLB without scenes (or naming one it lacks) has nothing to stand up.
    let roots = json.get_mut("scenes").and_then(|s| s.get_mut(scene)).and_then(|s| s.get_mut("nodes")).map(Value::take);
    if let Some(roots) = roots.filter(|r| r.as_array().is_some_and(|r| !r.is_empty())) {
        // -90° about X: CAD's +Z becomes glTF's +Y.
        let half = std::f64::consts::FRAC_1_SQRT_2;
        let up = json!({"name": "z-up", "rotation": [-half, 0.0, 0.0, half], "children": roots, "extras": {UP_AXIS_NODE: "z"}});
        json["nodes"].as_array_mut().expect("checked above").push(up);
        json["scenes"][scene]["nodes"] = json!([wrapper]);
    }
    let mut text = serde_json::to_vec(&json).map_err(|e| BadGlb(e.to_string()))?;
    // GLB chunks are 4-byte aligned; JSON pads with spaces.
    while text.len() % 4 != 0 {
        text.push(b' ');
    }
    let bin: Option<Cow<[u8]>> = parsed.bin.map(|b| Cow::Owned(b.into_owned()));
    let length = 12 + 8 + text.len() + bin.as_ref().map(|b| 8 + b.len().div_ceil(4) * 4).unwrap_or(0);
    let out = Glb { header: gltf::binary::Header { magic: *b"glTF", version: 2, length: length as u32 }, json: Cow::Owned(text), bin };
    let bytes = out.to_vec().map_err(|e| BadGlb(e.to_string()))?;
    Ok((bytes, manifest(&doc, &occurrences)))
}

type Mat = [[f32; 4]; 4];

fn mul(a: &Mat, b: &Mat) -> Mat {
    let mut m = [[0.0; 4]; 4];
    for (c, col) in m.iter_mut().enumerate() {
        for (r, v) in col.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[k][r] * b[c][k]).sum();
        }
    }
    m
}

fn apply(m: &Mat, p: [f32; 3]) -> [f32; 3] {
    let mut out = [0.0; 3];
    for (r, o) in out.iter_mut().enumerate() {
        *o = m[0][r] * p[0] + m[1][r] * p[1] + m[2][r] * p[2] + m[3][r];
    }
    out
}

/// The product's metadata: what `cad.extract_metadata` delivers.
pub fn metadata(glb: &[u8], units: &str) -> Result<(Value, Manifest), BadGlb> {
    let doc = gltf::Gltf::from_slice(glb).map_err(|e| BadGlb(e.to_string()))?.document;
    let (tree, roots) = scene_tree(&doc);
    let occurrences = part_keys(&tree, &roots);
    let manifest = manifest(&doc, &occurrences);
    let (mut lo, mut hi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
    let identity: Mat = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    let mut stack: Vec<(gltf::Node, Mat, usize)> =
        doc.default_scene().or_else(|| doc.scenes().next()).map(|s| s.nodes().map(|n| (n, identity, 0)).collect()).unwrap_or_default();
    // The bounding box is in the GLB's frame (Y-up); only the part keys look through the
    // up-axis node.
    while let Some((node, parent, depth)) = stack.pop() {
        if depth > 256 {
            continue;
        }
        let world = mul(&parent, &node.transform().matrix());
        if let Some(mesh) = node.mesh() {
            for p in mesh.primitives() {
                let b = p.bounding_box();
                for corner in 0..8 {
                    let c = [
                        if corner & 1 == 0 { b.min[0] } else { b.max[0] },
                        if corner & 2 == 0 { b.min[1] } else { b.max[1] },
                        if corner & 4 == 0 { b.min[2] } else { b.max[2] },
                    ];
                    let w = apply(&world, c);
                    for i in 0..3 {
                        lo[i] = lo[i].min(w[i]);
                        hi[i] = hi[i].max(w[i]);
                    }
                }
            }
        }
        stack.extend(node.children().map(|c| (c, world, depth + 1)));
    }
    // glTF is in metres.
    let scale = if units == "mm" { 1000.0 } else { 1.0 };
    let bbox = if lo[0].is_finite() {
        let r = |v: f32| ((v as f64) * scale * 1e6).round() / 1e6;
        json!({"min": lo.map(r), "max": hi.map(r), "size": [r(hi[0] - lo[0]), r(hi[1] - lo[1]), r(hi[2] - lo[2])], "units": units})
    } else {
        Value::Null
    };
    let meta = json!({
        "bounding_box": bbox,
        "triangle_count": manifest.parts.iter().map(|p| p.triangles).sum::<u64>(),
        "part_count": manifest.part_count,
        "instance_count": manifest.instance_count,
        "mesh_count": doc.meshes().count(),
        "node_count": doc.nodes().count(),
        "generator": doc.as_json().asset.generator.clone(),
    });
    Ok((meta, manifest))
}
