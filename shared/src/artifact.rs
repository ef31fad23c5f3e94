//! Artifact references: what messages and node outputs carry instead of data (DESIGN §4).
//! An artifact is a content-addressed file (sha256) with a kind and metadata; the bytes
//! live in the artifact store, never in a message.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stored file, by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactRef {
    /// Lower-case hex SHA-256 of the bytes: the file's address in the store.
    pub sha256: String,
    /// A DESIGN §2 artifact kind (`glb`, `image_png`, ...).
    pub kind: String,
    pub bytes: u64,
    pub mime: String,
    /// Width, height, frames, part count... whatever the kind has.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub meta: Value,
}

impl ArtifactRef {
    /// Reads a reference out of a node output value, if it is one.
    pub fn from_value(v: &Value) -> Option<ArtifactRef> {
        let r: ArtifactRef = serde_json::from_value(v.clone()).ok()?;
        is_sha256(&r.sha256).then_some(r)
    }
}

/// Whether `s` is a SHA-256 in the store's spelling: exactly 64 lower-case hex digits. The
/// store builds file paths from it, so nothing else may pass (no `/`, no `..`).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where an artifact lives inside a store's root, `sha256/<first two digits>/<sha256>`; `None`
/// for anything that is not a well-formed hash (see [`is_sha256`]).
pub fn store_path(sha256: &str) -> Option<std::path::PathBuf> {
    is_sha256(sha256).then(|| std::path::Path::new("sha256").join(&sha256[..2]).join(sha256))
}

/// Every artifact a node's outputs name: each top-level output that is a reference
/// (outputs are keyed by port).
pub fn refs_in(outputs: &Value) -> Vec<ArtifactRef> {
    outputs.as_object().map(|o| o.values().filter_map(ArtifactRef::from_value).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_well_formed_hashes_are_references() {
        let good = "a".repeat(64);
        assert!(is_sha256(&good));
        assert!(!is_sha256(&"A".repeat(64)));
        assert!(!is_sha256(&format!("../{}", "a".repeat(61))));
        assert!(!is_sha256("abc"));
        let outputs = json!({
            "glb": {"sha256": good, "kind": "glb", "bytes": 10, "mime": "model/gltf-binary"},
            "bad": {"sha256": "../../etc/passwd", "kind": "glb", "bytes": 1, "mime": "x"},
            "summary": {"parts": 3}
        });
        let refs = refs_in(&outputs);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "glb");
        assert_eq!(refs[0].meta, Value::Null);
    }
}
