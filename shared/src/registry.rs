//! The node registry (DESIGN §6): every node type a graph may use, with its families,
//! module, ports and params schema. The one source of truth that graph validation, the
//! dispatcher, the workers, `GET /v1/nodes` and an editor read.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path};
use std::sync::OnceLock;

/// What a graph is about (DESIGN §2). A graph has exactly one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Subject: one CAD file → GLB, metadata, thumbnails.
    CadFile,
    /// Subject: one order line → still, turntable, .blend.
    OrderLine,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::CadFile, Family::OrderLine];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::CadFile => "cad_file",
            Family::OrderLine => "order_line",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionRole {
    Source,
    Transform,
    Render,
    Export,
    Compare,
    Sink,
    /// Hidden `util.*` nodes for tests and benchmarks.
    Test,
}

/// Inputs a node gets from the run rather than from an edge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// The run's subject (the CAD file, or the order line and its product), as input `subject`.
    Subject,
    /// The subject product's material map and the material library, as input `product_materials`.
    ProductMaterials,
}

impl Context {
    /// The input name the context arrives under.
    pub fn port(self) -> &'static str {
        match self {
            Context::Subject => "subject",
            Context::ProductMaterials => "product_materials",
        }
    }
}

/// What travels along an edge (DESIGN §2 artifact kinds), plus `any` for test nodes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    CadStep,
    Glb,
    PartManifest,
    MaterialMap,
    ImagePng,
    Frames,
    VideoMp4,
    Blend,
    MetadataJson,
    ComparisonReport,
    /// Accepts or offers any kind (test nodes, publish, compare).
    Any,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::CadStep => "cad_step",
            ArtifactKind::Glb => "glb",
            ArtifactKind::PartManifest => "part_manifest",
            ArtifactKind::MaterialMap => "material_map",
            ArtifactKind::ImagePng => "image_png",
            ArtifactKind::Frames => "frames",
            ArtifactKind::VideoMp4 => "video_mp4",
            ArtifactKind::Blend => "blend",
            ArtifactKind::MetadataJson => "metadata_json",
            ArtifactKind::ComparisonReport => "comparison_report",
            ArtifactKind::Any => "any",
        }
    }

    /// Whether an output of kind `self` may feed an input of kind `input`.
    pub fn fits(self, input: ArtifactKind) -> bool {
        self == input || self == ArtifactKind::Any || input == ArtifactKind::Any
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Port {
    pub name: &'static str,
    pub kind: ArtifactKind,
    /// An input the node cannot run without.
    pub required: bool,
    /// An input that may be fed by several edges (only ordering inputs of test nodes).
    pub many: bool,
}

const fn input(name: &'static str, kind: ArtifactKind, required: bool) -> Port {
    Port { name, kind, required, many: false }
}

const fn output(name: &'static str, kind: ArtifactKind) -> Port {
    Port { name, kind, required: false, many: false }
}

/// One entry of the registry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeType {
    pub type_key: &'static str,
    pub families: &'static [Family],
    /// The worker module that runs it (also its queue's routing key).
    pub module_key: &'static str,
    pub execution_role: ExecutionRole,
    pub inputs: &'static [Port],
    pub outputs: &'static [Port],
    pub artifact_roles_in: &'static [&'static str],
    pub artifact_roles_out: &'static [&'static str],
    /// The legacy pipeline step it reproduces, if any.
    pub legacy_source: Option<&'static str>,
    pub editor_visible: bool,
    pub palette_group: &'static str,
    pub description: &'static str,
    /// Per-attempt time limit when the graph sets none (seconds); the fleet default otherwise.
    pub default_timeout_s: Option<u64>,
    /// Whether a result may be served from the node result cache: its output bytes follow
    /// from its params, its inputs' bytes and its module's build (`shared::cache`). Not for
    /// nodes that read the world (the subject's file), publish, compare, or exist to test.
    pub cacheable: bool,
    /// What the coordinator adds to the node's inputs when it builds the task, beside
    /// what edges feed it (workers have no database to look these up).
    pub context: &'static [Context],
    /// JSON Schema (draft 2020-12) of `params`, with defaults and bounds.
    #[schema(value_type = Object)]
    pub params_schema: Value,
}

impl NodeType {
    pub fn input(&self, name: &str) -> Option<&Port> {
        self.inputs.iter().find(|p| p.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&Port> {
        self.outputs.iter().find(|p| p.name == name)
    }

    pub fn allows(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// Why a subject's `cad_file` cannot name a file inside a worker's `cad_dir`, if it cannot:
/// it must be a relative path of plain names (no root, `.` or `..`), without NUL. Pure
/// syntax, so the coordinator refuses at submission what `cad_resolve` would refuse on a
/// worker (which then also checks where symbolic links lead).
pub fn cad_file_problem(name: &str) -> Option<String> {
    let plain = !name.is_empty() && !name.contains('\0') && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)));
    (!plain).then(|| {
        format!("`cad_file` {name:?} must be a relative path inside cad_dir without `..`; ask for the file by its name in the CAD library")
    })
}

/// The largest `max_bytes` of `cad.resolve` (1 TiB): without a bound, a number past what a
/// worker reads as an integer (`1e30`) silently meant no limit at all.
const MAX_CAD_BYTES: u64 = 1 << 40;

/// Module keys: one queue each (DESIGN §4).
pub mod module {
    pub const CAD_RESOLVE: &str = "cad_resolve";
    pub const GLB_EXPORT: &str = "glb_export";
    pub const METADATA: &str = "metadata";
    pub const MATERIALS: &str = "materials";
    pub const BLENDER_STILL: &str = "blender_still";
    pub const BLENDER_TURNTABLE: &str = "blender_turntable";
    pub const BLENDER_BLEND: &str = "blender_blend";
    pub const VIDEO_ENCODE: &str = "video_encode";
    pub const PUBLISH: &str = "publish";
    pub const COMPARE: &str = "compare";
    /// The legacy pipeline: the same modules in a fixed order, in one task (DESIGN §7).
    pub const LEGACY_RENDER: &str = "legacy_render";
    pub const NOOP: &str = "noop";
    pub const SLEEP: &str = "sleep";
    pub const FAIL: &str = "fail";
}

/// Old type names → current ones. Graphs using an old name still validate (with a
/// `renamed_node_type` warning) and `repair` rewrites them.
pub const ALIASES: &[(&str, &str)] = &[
    ("noop", "util.noop"),
    ("sleep", "util.sleep"),
    ("fail", "util.fail"),
    ("cad.step_to_glb", "cad.export_glb"),
    ("render.image", "render.still"),
    ("material.apply", "material.assign"),
];

use ArtifactKind as K;
use ExecutionRole as R;
const BOTH: &[Family] = &[Family::CadFile, Family::OrderLine];
const CAD: &[Family] = &[Family::CadFile];
const ORDER: &[Family] = &[Family::OrderLine];
const UTIL_IN: &[Port] = &[Port { name: "after", kind: K::Any, required: false, many: true }];
const UTIL_OUT: &[Port] = &[output("done", K::Any)];

/// The registry: every node type, in palette order (debug builds' test types last, when
/// [`enable_test_types`] came first).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let types = node_types();
        #[cfg(debug_assertions)]
        let types = match TEST_TYPES.load(std::sync::atomic::Ordering::SeqCst) {
            true => types.into_iter().chain(test_types()).collect(),
            false => types,
        };
        Registry::build(types)
    })
}

/// Set by [`enable_test_types`]; read once, when the registry is built.
#[cfg(debug_assertions)]
static TEST_TYPES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Puts the node types that exist only in debug builds ([`PALETTE_PROBE`]) into the registry,
/// and builds it; returns whether they are in it (not when something used the registry
/// before this call: it is built once). The coordinator calls this first thing when
/// `RENDERFLEET_REGISTRY_TEST_TYPES=1`; this crate reads no environment itself.
#[cfg(debug_assertions)]
pub fn enable_test_types() -> bool {
    TEST_TYPES.store(true, std::sync::atomic::Ordering::SeqCst);
    registry().get(PALETTE_PROBE).is_some()
}

/// A node type of debug builds only, which no worker serves: the editor's test that the
/// palette, ports and params form come from the registry and nothing else.
#[cfg(debug_assertions)]
pub const PALETTE_PROBE: &str = "test.palette_probe";

pub struct Registry {
    types: Vec<NodeType>,
    by_key: HashMap<&'static str, usize>,
    validators: Vec<jsonschema::Validator>,
    /// Modules whose tasks carry inputs (an artifact port or a context).
    takes_inputs: HashSet<&'static str>,
    /// Modules whose node type is cacheable, with that type.
    cache_types: HashMap<&'static str, &'static str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("types", &self.types.len()).finish()
    }
}

/// A param problem: JSON pointer inside the node's params, and a message.
pub type ParamProblem = (String, String);

impl Registry {
    fn build(types: Vec<NodeType>) -> Registry {
        let by_key = types.iter().enumerate().map(|(i, t)| (t.type_key, i)).collect();
        let validators = types
            .iter()
            .map(|t| {
                jsonschema::draft202012::new(&t.params_schema)
                    .unwrap_or_else(|e| panic!("params schema of `{}` is not valid JSON Schema: {e}", t.type_key))
            })
            .collect();
        let takes_inputs =
            types.iter().filter(|t| !t.context.is_empty() || t.inputs.iter().any(|p| !p.many)).map(|t| t.module_key).collect();
        // A task names its module, not its node type: the cache key's `type` is only known
        // from the module when a cacheable type has its module to itself.
        let cache_types = types
            .iter()
            .filter(|t| t.cacheable)
            .inspect(|t| {
                let sharing = types.iter().filter(|o| o.module_key == t.module_key).count();
                assert_eq!(sharing, 1, "cacheable `{}` shares module `{}` with another node type", t.type_key, t.module_key);
            })
            .map(|t| (t.module_key, t.type_key))
            .collect();
        Registry { types, by_key, validators, takes_inputs, cache_types }
    }

    /// The node type of `module_key` if its results may come from the node result cache.
    pub fn cache_type(&self, module_key: &str) -> Option<&'static str> {
        self.cache_types.get(module_key).copied()
    }

    /// Whether tasks of `module_key` need their inputs resolved before they are sent. Test
    /// modules do not, which keeps their hops (the benchmark's) free of that lookup.
    pub fn takes_inputs(&self, module_key: &str) -> bool {
        self.takes_inputs.contains(module_key)
    }

    pub fn all(&self) -> &[NodeType] {
        &self.types
    }

    pub fn get(&self, type_key: &str) -> Option<&NodeType> {
        self.by_key.get(type_key).map(|&i| &self.types[i])
    }

    /// The current name of `type_key` if it is an old one.
    pub fn alias(&self, type_key: &str) -> Option<&'static str> {
        ALIASES.iter().find(|(old, _)| *old == type_key).map(|(_, new)| *new)
    }

    /// Every module key, once each (the queues a fleet declares).
    pub fn module_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = Vec::new();
        for t in &self.types {
            if !keys.contains(&t.module_key) {
                keys.push(t.module_key);
            }
        }
        keys
    }

    /// The known type closest to a misspelt one, for "did you mean".
    pub fn closest(&self, type_key: &str) -> Option<&'static str> {
        closest(type_key, self.types.iter().map(|t| t.type_key))
    }

    /// Checks `params` against the type's schema; every problem, each with its JSON pointer.
    pub fn check_params(&self, type_key: &str, params: &Value) -> Vec<ParamProblem> {
        let Some(&i) = self.by_key.get(type_key) else { return Vec::new() };
        let schema = &self.types[i].params_schema;
        let mut out: Vec<ParamProblem> = Vec::new();
        for e in self.validators[i].iter_errors(params) {
            let at = e.instance_path().to_string();
            let message = match e.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        let known = known_params(schema, &at);
                        let hint = match closest(name, known.iter().copied()) {
                            Some(c) => format!("did you mean `{c}`?"),
                            None if known.is_empty() => "this object takes no params".to_string(),
                            None => format!("known: {}", known.join(", ")),
                        };
                        out.push((format!("{at}/{name}"), format!("unknown param `{name}`; {hint}")));
                    }
                    continue;
                }
                _ => e.to_string(),
            };
            out.push((at, message));
        }
        if out.is_empty() {
            out = self.cross_checks(type_key, params);
        }
        out
    }

    /// What a schema cannot say: bounds between params, checked once each param fits its own.
    fn cross_checks(&self, type_key: &str, params: &Value) -> Vec<ParamProblem> {
        if type_key != "render.turntable" {
            return Vec::new();
        }
        let p = self.with_defaults(type_key, params);
        let Some(range) = p.get("frame_range") else { return Vec::new() };
        let num = |v: &Value| v.as_f64().unwrap_or(0.0);
        let (start, end, count) = (num(&range["start"]), num(&range["end"]), num(&p["frame_count"]));
        if start > end {
            return vec![(
                "/frame_range".into(),
                format!("`start` {start} is after `end` {end}; the range renders frames start..=end: swap them"),
            )];
        }
        if end >= count {
            return vec![(
                "/frame_range/end".into(),
                format!("frame {end} is past the last frame of a {count}-frame turntable; `end` is at most {}", count - 1.0),
            )];
        }
        Vec::new()
    }

    /// `params` with the schema's defaults filled in (recursively into objects), and
    /// integers written as floats stored as integers.
    pub fn with_defaults(&self, type_key: &str, params: &Value) -> Value {
        let mut v = params.clone();
        if let Some(t) = self.get(type_key) {
            fill_defaults(&t.params_schema, &mut v);
            whole_numbers(&t.params_schema, &mut v);
        }
        v
    }
}

/// Property names of the object schema at JSON pointer `at` (of the instance).
fn known_params<'a>(schema: &'a Value, at: &str) -> Vec<&'a str> {
    let mut s = schema;
    for seg in at.split('/').filter(|s| !s.is_empty()) {
        match s.get("properties").and_then(|p| p.get(seg)) {
            Some(next) => s = next,
            None => return Vec::new(),
        }
    }
    s.get("properties").and_then(Value::as_object).map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default()
}

fn fill_defaults(schema: &Value, v: &mut Value) {
    let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), v.as_object_mut()) else { return };
    for (name, prop) in props {
        if !obj.contains_key(name) {
            if let Some(d) = prop.get("default") {
                obj.insert(name.clone(), d.clone());
            } else if prop.get("type") == Some(&json!("object")) && prop.get("properties").is_some() && prop.get("required").is_none() {
                // A settings group (`camera`) is filled in; an optional object with required
                // members (`frame_range`) stays absent.
                obj.insert(name.clone(), json!({}));
            } else {
                continue;
            }
        }
        if let Some(child) = obj.get_mut(name) {
            fill_defaults(prop, child);
        }
    }
}

/// Integers written as floats (`1e9`, `36.0`) pass an `integer` schema, but a worker reading
/// them with `as_u64` finds no number at all: they are stored as integers.
fn whole_numbers(schema: &Value, v: &mut Value) {
    if schema.get("type") == Some(&json!("integer")) {
        // Below 2^53 a float holds the integer exactly; every integer param's maximum is far below.
        if let Some(f) = v.as_f64().filter(|f| v.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0) {
            *v = json!(f as i64);
        }
        return;
    }
    if let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), v.as_object_mut()) {
        for (name, child) in obj.iter_mut() {
            if let Some(prop) = props.get(name) {
                whole_numbers(prop, child);
            }
        }
    }
}

/// The candidate within edit distance 2 of `word` (or a third of its length), if any.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates.map(|c| (strsim::levenshtein(word, c), c)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

/// Object schema with closed properties (a typo is an error, not a silently ignored key).
fn object(properties: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": properties})
}

fn background() -> Value {
    json!({
        "type": "string", "default": "white", "pattern": "^(white|transparent|#[0-9a-fA-F]{6})$",
        "description": "`white`, `transparent` (PNG alpha) or a colour `#RRGGBB`"
    })
}

fn camera(azimuth: f64, elevation: f64) -> Value {
    object(json!({
        "azimuth_deg": {"type": "number", "default": azimuth, "minimum": -360, "maximum": 360,
                        "description": "rotation around the vertical axis, counter-clockwise from the front"},
        "elevation_deg": {"type": "number", "default": elevation, "minimum": -89, "maximum": 89},
        "auto_frame": {"type": "boolean", "default": true, "description": "fit the product's bounding box in view"},
        "margin": {"type": "number", "default": 0.05, "minimum": 0, "maximum": 0.5, "description": "share of the frame left around the product"},
        "focal_length_mm": {"type": "number", "default": 50, "minimum": 10, "maximum": 300}
    }))
}

fn render_common(size: u64, samples: u64) -> serde_json::Map<String, Value> {
    let v = json!({
        "width": {"type": "integer", "default": size, "minimum": 16, "maximum": 8192},
        "height": {"type": "integer", "default": size, "minimum": 16, "maximum": 8192},
        "samples": {"type": "integer", "default": samples, "minimum": 1, "maximum": 4096, "description": "Cycles samples per pixel"},
        "seed": {"type": "integer", "default": 0, "minimum": 0, "maximum": 2147483647, "description": "Cycles seed: fixed, so output is reproducible"},
        "background": background(),
        "view_transform": {"type": "string", "enum": ["Standard", "Filmic"], "default": "Standard"},
        "exposure": {"type": "number", "default": 0, "minimum": -10, "maximum": 10},
        "color_depth": {"type": "integer", "enum": [8, 16], "default": 8, "description": "bits per PNG channel"},
    });
    v.as_object().cloned().unwrap_or_default()
}

fn node_types() -> Vec<NodeType> {
    let still = {
        let mut p = render_common(2000, 64);
        p.insert("camera".into(), camera(35.0, 25.0));
        object(Value::Object(p))
    };
    let turntable = {
        let mut p = render_common(1080, 32);
        p.insert("camera".into(), camera(0.0, 20.0));
        p.insert(
            "frame_count".into(),
            json!({"type": "integer", "default": 36, "minimum": 1, "maximum": 720, "description": "frames in one full turn"}),
        );
        p.insert(
            "frame_range".into(),
            json!({"type": "object", "additionalProperties": false, "required": ["start", "end"],
                   "description": "render only frames start..=end (0-based), to split a turntable across workers",
                   "properties": {"start": {"type": "integer", "minimum": 0, "maximum": 719}, "end": {"type": "integer", "minimum": 0, "maximum": 719}}}),
        );
        p.insert("degrees".into(), json!({"type": "number", "default": 360, "exclusiveMinimum": 0, "maximum": 360}));
        p.insert(
            "chunking".into(),
            json!({"type": "object", "additionalProperties": false, "required": ["frames_per_chunk"],
                   "description": "split the frames into tasks of this many frames that any worker can render (and retry) on its own; the frames are joined in order",
                   "properties": {"frames_per_chunk": {"type": "integer", "minimum": 1, "maximum": 720, "description": "frames per task"}}}),
        );
        object(Value::Object(p))
    };
    vec![
        NodeType {
            type_key: "cad.resolve",
            families: BOTH,
            module_key: module::CAD_RESOLVE,
            execution_role: R::Source,
            inputs: &[],
            outputs: const { &[output("step", K::CadStep)] },
            artifact_roles_in: &[],
            artifact_roles_out: &["source_cad"],
            legacy_source: Some("legacy.fetch_cad"),
            editor_visible: true,
            palette_group: "CAD",
            description: "The subject's STEP file from the artifact store (the CAD file itself, or the order line's product).",
            default_timeout_s: Some(300),
            cacheable: false,
            context: &[Context::Subject],
            params_schema: object(json!({
                "max_bytes": {"type": "integer", "default": 1073741824u64, "minimum": 1, "maximum": MAX_CAD_BYTES, "description": "refuse larger files"}
            })),
        },
        NodeType {
            type_key: "cad.export_glb",
            families: BOTH,
            module_key: module::GLB_EXPORT,
            execution_role: R::Transform,
            inputs: const { &[input("step", K::CadStep, true)] },
            outputs: const { &[output("glb", K::Glb), output("parts", K::PartManifest)] },
            artifact_roles_in: &["source_cad"],
            artifact_roles_out: &["product_geometry", "part_identity"],
            legacy_source: Some("legacy.step_to_glb"),
            editor_visible: true,
            palette_group: "CAD",
            description: "STEP → GLB with OpenCASCADE (cascadio), plus a manifest of instance-aware part keys.",
            default_timeout_s: Some(1800),
            cacheable: true,
            context: &[],
            params_schema: object(json!({
                "tol_linear": {"type": "number", "default": 0.1, "exclusiveMinimum": 0, "maximum": 100,
                               "description": "linear deflection of the tessellation (model units; relative share if tol_relative)"},
                "tol_angular": {"type": "number", "default": 0.5, "minimum": 0.01, "maximum": 1.5, "description": "angular deflection (radians)"},
                "tol_relative": {"type": "boolean", "default": false, "description": "tol_linear relative to each edge's size"},
                "merge_primitives": {"type": "boolean", "default": true},
                "use_parallel": {"type": "boolean", "default": true}
            })),
        },
        NodeType {
            type_key: "cad.extract_metadata",
            families: CAD,
            module_key: module::METADATA,
            execution_role: R::Transform,
            inputs: const { &[input("glb", K::Glb, true)] },
            outputs: const { &[output("parts", K::PartManifest), output("metadata", K::MetadataJson)] },
            artifact_roles_in: &["product_geometry"],
            artifact_roles_out: &["part_identity", "product_metadata"],
            legacy_source: Some("legacy.metadata"),
            editor_visible: true,
            palette_group: "CAD",
            description: "GLB → part manifest and metadata: bounding box, triangle, part and instance counts.",
            default_timeout_s: Some(300),
            cacheable: true,
            context: &[],
            params_schema: object(json!({
                "units": {"type": "string", "enum": ["mm", "m"], "default": "mm", "description": "units of the reported bounding box"},
                "include_instances": {"type": "boolean", "default": true, "description": "list every instance, not only distinct parts"}
            })),
        },
        NodeType {
            type_key: "material.assign",
            families: ORDER,
            module_key: module::MATERIALS,
            execution_role: R::Transform,
            inputs: const { &[input("parts", K::PartManifest, true)] },
            outputs: const { &[output("materials", K::MaterialMap)] },
            artifact_roles_in: &["part_identity"],
            artifact_roles_out: &["material_assignment"],
            legacy_source: Some("legacy.materials"),
            editor_visible: true,
            palette_group: "Materials",
            description: "Part keys + the product's material map + the library → material map; unassigned parts are listed and counted.",
            default_timeout_s: Some(120),
            cacheable: true,
            context: &[Context::ProductMaterials],
            params_schema: object(json!({
                "on_missing": {"type": "string", "enum": ["fail", "default"], "default": "default",
                               "description": "a part with no material: fail the node, or use `default_material` (listed in the output either way)"},
                "on_unmatched": {"type": "string", "enum": ["fail", "ignore"], "default": "ignore",
                                 "description": "a map target that matches no part: fail the node, or go on (listed in the output either way); part names match without regard to case"},
                "default_material": {"type": "string", "default": "neutral_grey", "minLength": 1}
            })),
        },
        NodeType {
            type_key: "render.still",
            families: BOTH,
            module_key: module::BLENDER_STILL,
            execution_role: R::Render,
            inputs: const { &[input("glb", K::Glb, true), input("materials", K::MaterialMap, false)] },
            outputs: const { &[output("image", K::ImagePng)] },
            artifact_roles_in: &["product_geometry", "material_assignment"],
            artifact_roles_out: &["beauty_still"],
            legacy_source: Some("legacy.render_still"),
            editor_visible: true,
            palette_group: "Render",
            description: "A still with Blender Cycles on CPU (a product shot, or a CAD file's thumbnail): resolution, samples, background, camera, seed.",
            default_timeout_s: Some(3600),
            cacheable: true,
            context: &[],
            params_schema: still,
        },
        NodeType {
            type_key: "render.turntable",
            families: ORDER,
            module_key: module::BLENDER_TURNTABLE,
            execution_role: R::Render,
            inputs: const { &[input("glb", K::Glb, true), input("materials", K::MaterialMap, false)] },
            outputs: const { &[output("frames", K::Frames)] },
            artifact_roles_in: &["product_geometry", "material_assignment"],
            artifact_roles_out: &["turntable_frames"],
            legacy_source: Some("legacy.render_turntable"),
            editor_visible: true,
            palette_group: "Render",
            description: "Turntable frames with Blender Cycles; a frame range lets a turntable be split into chunks.",
            default_timeout_s: Some(7200),
            cacheable: true,
            context: &[],
            params_schema: turntable,
        },
        NodeType {
            type_key: "video.encode",
            families: ORDER,
            module_key: module::VIDEO_ENCODE,
            execution_role: R::Export,
            inputs: const { &[input("frames", K::Frames, true)] },
            outputs: const { &[output("video", K::VideoMp4)] },
            artifact_roles_in: &["turntable_frames"],
            artifact_roles_out: &["turntable_video"],
            legacy_source: Some("legacy.encode_mp4"),
            editor_visible: true,
            palette_group: "Export",
            description: "Frames → MP4 (H.264) with ffmpeg.",
            default_timeout_s: Some(900),
            cacheable: true,
            context: &[],
            params_schema: object(json!({
                "fps": {"type": "integer", "default": 24, "minimum": 1, "maximum": 120},
                "codec": {"type": "string", "enum": ["h264"], "default": "h264"},
                "crf": {"type": "integer", "default": 18, "minimum": 0, "maximum": 51, "description": "quality: lower is better and larger"},
                "pixel_format": {"type": "string", "enum": ["yuv420p", "yuv444p"], "default": "yuv420p"}
            })),
        },
        NodeType {
            type_key: "export.blend",
            families: ORDER,
            module_key: module::BLENDER_BLEND,
            execution_role: R::Export,
            inputs: const { &[input("glb", K::Glb, true), input("materials", K::MaterialMap, false)] },
            outputs: const { &[output("blend", K::Blend)] },
            artifact_roles_in: &["product_geometry", "material_assignment"],
            artifact_roles_out: &["scene_file"],
            legacy_source: Some("legacy.export_blend"),
            editor_visible: true,
            palette_group: "Export",
            description: "The prepared Blender scene (materials, camera, lights) as a .blend file.",
            default_timeout_s: Some(1800),
            cacheable: true,
            context: &[],
            params_schema: object(json!({
                "compress": {"type": "boolean", "default": true},
                "pack_resources": {"type": "boolean", "default": true, "description": "embed textures in the file"},
                "camera": camera(35.0, 25.0)
            })),
        },
        NodeType {
            type_key: "output.publish",
            families: BOTH,
            module_key: module::PUBLISH,
            execution_role: R::Sink,
            inputs: const { &[input("artifact", K::Any, true)] },
            outputs: &[],
            artifact_roles_in: &["deliverable"],
            artifact_roles_out: &[],
            legacy_source: Some("legacy.publish"),
            editor_visible: true,
            palette_group: "Output",
            description: "Delivers its input as the request's result (the artifact kind an output type promises).",
            default_timeout_s: Some(120),
            cacheable: false,
            context: &[],
            params_schema: object(json!({
                "name": {"type": "string", "default": "primary", "pattern": "^[a-z0-9_]{1,40}$",
                         "description": "the result's name within the request"}
            })),
        },
        NodeType {
            type_key: "compare.artifacts",
            families: BOTH,
            module_key: module::COMPARE,
            execution_role: R::Compare,
            inputs: const { &[input("control", K::Any, true), input("candidate", K::Any, true)] },
            outputs: const { &[output("report", K::ComparisonReport)] },
            artifact_roles_in: &["control", "candidate"],
            artifact_roles_out: &["comparison"],
            legacy_source: None,
            editor_visible: false,
            palette_group: "Rollout",
            description: "Compares a legacy (control) and a graph (candidate) artifact; added by shadow mode.",
            default_timeout_s: Some(600),
            cacheable: false,
            context: &[],
            params_schema: object(json!({
                "fail": {"type": "number", "default": 0.016, "minimum": 0, "maximum": 1, "description": "per-pixel difference that counts as failing"},
                "fail_percent": {"type": "number", "default": 1.0, "minimum": 0, "maximum": 100, "description": "share of failing pixels allowed"},
                "hard_fail": {"type": "number", "default": 1.0, "minimum": 0, "maximum": 1, "description": "any pixel differing more than this is a mismatch"},
                "frame_sample": {"type": "integer", "default": 0, "minimum": 0, "maximum": 720, "description": "compare every n-th turntable frame (0: all)"}
            })),
        },
        NodeType {
            type_key: "legacy.render",
            families: BOTH,
            module_key: module::LEGACY_RENDER,
            execution_role: R::Sink,
            // Fed by the run's own export node (dispatch's legacy graph); without them the
            // module resolves and exports the CAD file itself.
            inputs: const { &[input("glb", K::Glb, false), input("parts", K::PartManifest, false)] },
            outputs: &[],
            artifact_roles_in: &[],
            artifact_roles_out: &["deliverable"],
            legacy_source: Some("legacy.pipeline"),
            editor_visible: false,
            palette_group: "Legacy",
            description: "The whole legacy pipeline in one task, driven by the output type's legacy preset. Dispatch adds it; editors do not.",
            default_timeout_s: Some(7200),
            cacheable: false,
            context: &[Context::Subject, Context::ProductMaterials],
            params_schema: json!({"type": "object", "additionalProperties": false, "required": ["output_type", "artifact_kind", "preset"],
                                  "properties": {"output_type": {"type": "string", "minLength": 1},
                                                 "artifact_kind": {"type": "string", "minLength": 1},
                                                 "preset": {"type": "object"}}}),
        },
        NodeType {
            type_key: "util.noop",
            families: BOTH,
            module_key: module::NOOP,
            execution_role: R::Test,
            inputs: UTIL_IN,
            outputs: UTIL_OUT,
            artifact_roles_in: &[],
            artifact_roles_out: &[],
            legacy_source: None,
            editor_visible: false,
            palette_group: "Testing",
            description: "Does nothing (tests and benchmarks).",
            default_timeout_s: None,
            cacheable: false,
            context: &[],
            params_schema: object(json!({})),
        },
        NodeType {
            type_key: "util.sleep",
            families: BOTH,
            module_key: module::SLEEP,
            execution_role: R::Test,
            inputs: UTIL_IN,
            outputs: UTIL_OUT,
            artifact_roles_in: &[],
            artifact_roles_out: &[],
            legacy_source: None,
            editor_visible: false,
            palette_group: "Testing",
            description: "Sleeps `ms` milliseconds (tests).",
            default_timeout_s: None,
            cacheable: false,
            context: &[],
            params_schema: json!({"type": "object", "additionalProperties": false, "required": ["ms"],
                                  "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 3_600_000}}}),
        },
        NodeType {
            type_key: "util.fail",
            families: BOTH,
            module_key: module::FAIL,
            execution_role: R::Test,
            inputs: UTIL_IN,
            outputs: UTIL_OUT,
            artifact_roles_in: &[],
            artifact_roles_out: &[],
            legacy_source: None,
            editor_visible: false,
            palette_group: "Testing",
            description: "Fails its first `times` attempts with a retryable error, then succeeds (tests).",
            default_timeout_s: None,
            cacheable: false,
            context: &[],
            params_schema: json!({"type": "object", "additionalProperties": false, "required": ["times"],
                                  "properties": {"times": {"type": "integer", "minimum": 0, "maximum": 1000}}}),
        },
    ]
}

/// The node types [`enable_test_types`] adds.
#[cfg(debug_assertions)]
fn test_types() -> Vec<NodeType> {
    let channel = json!({"type": "number", "minimum": 0, "maximum": 1, "default": 0.5});
    vec![NodeType {
        type_key: PALETTE_PROBE,
        families: ORDER,
        module_key: PALETTE_PROBE,
        execution_role: R::Transform,
        inputs: const { &[input("image", K::ImagePng, true)] },
        outputs: const { &[output("image", K::ImagePng)] },
        artifact_roles_in: &[],
        artifact_roles_out: &[],
        legacy_source: None,
        editor_visible: true,
        palette_group: "Test probes",
        description: "Exists only in debug builds with RENDERFLEET_REGISTRY_TEST_TYPES=1: proves the editor is driven by the registry.",
        default_timeout_s: None,
        cacheable: false,
        context: &[],
        params_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "additionalProperties": false,
            "properties": {
                "strength": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3,
                             "description": "how hard the probe would work on the image (it does nothing)"},
                "mode": {"type": "string", "enum": ["soft", "hard"], "default": "soft"},
                "tint": {"type": "object", "additionalProperties": false,
                         "properties": {"r": channel, "g": channel, "b": channel}}
            }
        }),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node type, debug builds' test types too.
    fn everything() -> Registry {
        let types = node_types();
        #[cfg(debug_assertions)]
        let types = types.into_iter().chain(test_types()).collect();
        Registry::build(types)
    }

    #[cfg(debug_assertions)]
    #[test]
    fn the_palette_probe_is_a_complete_type_only_when_enabled() {
        assert!(registry().get(PALETTE_PROBE).is_none(), "not in a registry nobody enabled it for");
        let r = Registry::build(node_types().into_iter().chain(test_types()).collect());
        let t = r.get(PALETTE_PROBE).expect("in the registry built with test types");
        assert_eq!((t.families, t.execution_role, t.palette_group), (ORDER, R::Transform, "Test probes"));
        assert!(r.module_keys().contains(&PALETTE_PROBE));
        let filled = r.with_defaults(PALETTE_PROBE, &json!({}));
        assert_eq!(filled, json!({"strength": 3, "mode": "soft", "tint": {"r": 0.5, "g": 0.5, "b": 0.5}}));
        assert!(r.check_params(PALETTE_PROBE, &filled).is_empty());
        let p = r.check_params(PALETTE_PROBE, &json!({"strength": 11, "mode": "medium", "tint": {"r": 2, "a": 1}}));
        let mut at: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        at.sort();
        assert_eq!(at, ["/mode", "/strength", "/tint/a", "/tint/r"], "{p:?}");
    }

    #[test]
    fn every_schema_compiles_and_its_defaults_validate() {
        let r = &everything();
        for t in r.all() {
            if ["util.sleep", "util.fail", "legacy.render"].contains(&t.type_key) {
                continue; // required params: no default on purpose
            }
            let filled = r.with_defaults(t.type_key, &json!({}));
            assert!(r.check_params(t.type_key, &filled).is_empty(), "{}: {:?}", t.type_key, r.check_params(t.type_key, &filled));
        }
    }

    #[test]
    fn aliases_point_at_registered_types() {
        for (old, new) in ALIASES {
            assert!(registry().get(old).is_none(), "{old} is both an alias and a type");
            assert!(registry().get(new).is_some(), "{old} → {new}: no such type");
        }
    }

    #[test]
    fn a_typo_names_the_param_and_the_fix() {
        let p = registry().check_params("render.still", &json!({"sampels": 10, "camera": {"elevation": 3}}));
        assert!(p.contains(&("/sampels".into(), "unknown param `sampels`; did you mean `samples`?".into())), "{p:?}");
        assert!(p.iter().any(|(at, m)| at == "/camera/elevation" && m.contains("elevation_deg")), "{p:?}");
    }

    #[test]
    fn bounds_are_enforced_with_a_pointer() {
        let p = registry().check_params("render.still", &json!({"width": 9000, "background": "blue"}));
        let mut at: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        at.sort();
        assert_eq!(at, ["/background", "/width"], "{p:?}");
    }

    #[test]
    fn every_number_has_a_maximum() {
        fn walk(type_key: &str, at: &str, schema: &Value) {
            let numeric = matches!(schema.get("type").and_then(Value::as_str), Some("integer" | "number"));
            let bounded = ["maximum", "exclusiveMaximum", "enum"].iter().any(|k| schema.get(k).is_some());
            assert!(!numeric || bounded, "{type_key} param {at} has no maximum");
            for (name, prop) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
                walk(type_key, &format!("{at}/{name}"), prop);
            }
        }
        for t in everything().all() {
            walk(t.type_key, "", &t.params_schema);
        }
    }

    #[test]
    fn max_bytes_past_any_file_is_refused_not_unlimited() {
        let p = registry().check_params("cad.resolve", &json!({"max_bytes": 1e30}));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "/max_bytes");
        assert!(registry().check_params("cad.resolve", &json!({"max_bytes": 1u64 << 40})).is_empty());
    }

    #[test]
    fn integers_written_as_floats_are_stored_as_integers() {
        let v = registry().with_defaults("cad.resolve", &json!({"max_bytes": 1e9}));
        assert_eq!(v["max_bytes"].as_u64(), Some(1_000_000_000), "{v}");
        let v = registry()
            .with_defaults("render.turntable", &json!({"frame_count": 12.0, "frame_range": {"start": 0.0, "end": 3}, "exposure": 1.0}));
        assert_eq!((v["frame_count"].as_u64(), v["frame_range"]["start"].as_u64()), (Some(12), Some(0)), "{v}");
        assert!(v["exposure"].is_f64(), "a `number` param stays as given: {v}");
    }

    #[test]
    fn a_frame_range_runs_forwards_inside_the_turntable() {
        let check = |p: Value| registry().check_params("render.turntable", &p);
        let p = check(json!({"frame_range": {"start": 5, "end": 2}}));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].0 == "/frame_range" && p[0].1.contains("swap"), "{p:?}");
        let p = check(json!({"frame_count": 10, "frame_range": {"start": 0, "end": 10}}));
        assert!(p.len() == 1 && p[0].0 == "/frame_range/end" && p[0].1.contains("at most 9"), "{p:?}");
        let p = check(json!({"frame_range": {"start": 0, "end": 36}}));
        assert!(p.len() == 1 && p[0].1.contains("36-frame"), "the default frame count applies: {p:?}");
        assert!(check(json!({"frame_count": 10, "frame_range": {"start": 3, "end": 9}})).is_empty());
        assert!(check(json!({"frame_range": {"start": 4, "end": 4}})).is_empty());
    }

    #[test]
    fn cad_file_must_be_a_plain_relative_path() {
        for bad in ["", "/etc/passwd", "../secret.stp", "parts/../../x.stp", "./x.stp", "a\0.stp"] {
            assert!(cad_file_problem(bad).is_some_and(|m| m.contains("relative path")), "{bad:?} was accepted");
        }
        for good in ["bracket.stp", "as1/as1-oc-214.stp", "a b/c..d.stp"] {
            assert_eq!(cad_file_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn defaults_fill_nested_objects_and_keep_given_values() {
        let v = registry().with_defaults("render.still", &json!({"samples": 8, "camera": {"azimuth_deg": 90}}));
        assert_eq!(v["samples"], 8);
        assert_eq!(v["width"], 2000);
        assert_eq!(v["camera"]["azimuth_deg"], 90);
        assert_eq!(v["camera"]["auto_frame"], true);
    }
}
