//! The node result cache's key: a content address for "this node type, run by this build of
//! its module with these tools, on these params and these input bytes". Two tasks with the
//! same key produce the same output bytes, so the second can take the first's outputs
//! without a worker. The key holds everything that can change the bytes and nothing that
//! cannot: never a run id, a host name, a path or a time.
//!
//! | field | protects against |
//! | --- | --- |
//! | `v` ([`KEY_FORMAT`]) | a change to what the key covers: old entries stop matching |
//! | `type` | two node types on one module reading the same params differently |
//! | `fingerprint` | a new module version, a changed render script, another Blender, OpenCASCADE or ffmpeg (the worker reports it, see [`fingerprint`]) |
//! | `params` | any setting, after defaults, numbers in one spelling (35 = 35.0) |
//! | `inputs` | the input artifacts' bytes (their sha256), or a context value (the material map and library) as canonical JSON |

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Bumped whenever the key covers something new or spells something differently.
pub const KEY_FORMAT: u32 = 1;

/// The worker id of results the coordinator serves from the cache.
pub const WORKER: &str = "cache";

/// Whether a run may take results from the cache (`runs.cache_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Serve a node from the cache when its key has an entry whose artifacts still exist.
    #[default]
    Use,
    /// Run every node anew (a re-render on purpose); the new results replace the entries.
    Refresh,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Use => "use",
            CacheMode::Refresh => "refresh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "use" => Some(CacheMode::Use),
            "refresh" => Some(CacheMode::Refresh),
            _ => None,
        }
    }
}

/// What a worker's build of a module depends on, hashed: the module, the worker's version,
/// the hash of every script the module runs, and the versions of the tools it calls.
pub fn fingerprint(module: &str, worker_version: &str, scripts: &[(&str, &str)], tools: &BTreeMap<String, String>) -> String {
    let scripts: BTreeMap<&str, String> =
        scripts.iter().map(|(name, text)| (*name, hex::encode(Sha256::digest(text.as_bytes())))).collect();
    let doc = serde_json::json!({"module": module, "worker": worker_version, "scripts": scripts, "tools": tools});
    hex::encode(Sha256::digest(canonical(&doc).as_bytes()))
}

/// The cache key of a node task. `inputs` are the task's resolved inputs by port (artifact
/// references, lists of them, or context values).
pub fn key(type_key: &str, fingerprint: &str, params: &Value, inputs: &BTreeMap<String, Value>) -> String {
    let inputs: Map<String, Value> = inputs.iter().map(|(port, v)| (port.clone(), content(v))).collect();
    let doc = serde_json::json!({"v": KEY_FORMAT, "type": type_key, "fingerprint": fingerprint, "params": params, "inputs": inputs});
    hex::encode(Sha256::digest(canonical(&doc).as_bytes()))
}

/// An input as its content: an artifact reference is its kind and sha256 (its size, mime
/// and metadata follow from the bytes; where it was stored does not matter); a list of
/// them, each so; any other value as it is.
fn content(v: &Value) -> Value {
    match v {
        Value::Object(o) if o.get("sha256").is_some_and(Value::is_string) && o.contains_key("kind") => {
            serde_json::json!({"kind": o["kind"], "sha256": o["sha256"]})
        }
        Value::Array(a) => Value::Array(a.iter().map(content).collect()),
        v => v.clone(),
    }
}

/// JSON with object keys sorted and every number that is a whole value written as an
/// integer, so that equal documents hash equal.
pub fn canonical(v: &Value) -> String {
    fn normal(v: &Value) -> Value {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Number(Number::from(f as i64)),
                _ => Value::Number(n.clone()),
            },
            Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
            // serde_json's map is ordered by key (no `preserve_order`): sorted on output.
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), normal(v))).collect()),
            v => v.clone(),
        }
    }
    normal(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(sha: &str) -> BTreeMap<String, Value> {
        BTreeMap::from([
            (
                "glb".to_string(),
                json!({"sha256": sha, "kind": "glb", "bytes": 10, "mime": "model/gltf-binary", "meta": {"stored_at": "/a"}}),
            ),
            ("materials".to_string(), json!({"assignments": {"bolt": "steel"}, "library": {"steel": {"base_color": "#888888"}}})),
        ])
    }

    #[test]
    fn the_same_work_has_the_same_key_whatever_the_spelling() {
        let a = key("render.still", "f1", &json!({"width": 512, "camera": {"azimuth_deg": 35.0, "margin": 0.05}}), &inputs("ab"));
        let b = key("render.still", "f1", &json!({"camera": {"margin": 0.05, "azimuth_deg": 35}, "width": 512.0}), &inputs("ab"));
        assert_eq!(a, b, "key order and 35 vs 35.0 do not change the bytes");
        let mut other_meta = inputs("ab");
        other_meta.get_mut("glb").unwrap()["meta"] = json!({"stored_at": "/elsewhere"});
        other_meta.get_mut("glb").unwrap()["bytes"] = json!(11);
        assert_eq!(a, key("render.still", "f1", &json!({"width": 512, "camera": {"azimuth_deg": 35, "margin": 0.05}}), &other_meta));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn anything_that_changes_the_bytes_changes_the_key() {
        let params = json!({"width": 512});
        let base = key("render.still", "f1", &params, &inputs("ab"));
        assert_ne!(base, key("render.turntable", "f1", &params, &inputs("ab")), "node type");
        assert_ne!(base, key("render.still", "f2", &params, &inputs("ab")), "module build and tools");
        assert_ne!(base, key("render.still", "f1", &json!({"width": 513}), &inputs("ab")), "a param");
        assert_ne!(base, key("render.still", "f1", &json!({"width": 512.5}), &inputs("ab")), "a fractional param");
        assert_ne!(base, key("render.still", "f1", &params, &inputs("cd")), "an input's bytes");
        let mut map = inputs("ab");
        map.get_mut("materials").unwrap()["assignments"]["bolt"] = json!("gold");
        assert_ne!(base, key("render.still", "f1", &params, &map), "a context value");
    }

    #[test]
    fn a_fingerprint_covers_scripts_and_tool_versions() {
        let tools = BTreeMap::from([("blender".to_string(), "3.4.1".to_string())]);
        let f = fingerprint("blender_still", "0.1.0", &[("render.py", "print(1)")], &tools);
        assert_eq!(f, fingerprint("blender_still", "0.1.0", &[("render.py", "print(1)")], &tools));
        assert_ne!(f, fingerprint("blender_still", "0.1.0", &[("render.py", "print(2)")], &tools), "the script");
        let newer = BTreeMap::from([("blender".to_string(), "4.5.15".to_string())]);
        assert_ne!(f, fingerprint("blender_still", "0.1.0", &[("render.py", "print(1)")], &newer), "the Blender build");
        assert_ne!(f, fingerprint("blender_still", "0.2.0", &[("render.py", "print(1)")], &tools), "the worker");
        assert_ne!(f, fingerprint("blender_blend", "0.1.0", &[("render.py", "print(1)")], &tools), "the module");
    }
}
