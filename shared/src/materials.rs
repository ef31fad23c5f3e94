//! A product's material map resolved against its parts: what `material.assign` stores
//! and the renders apply, and what the console's 3D preview colours by. A map entry names a
//! part key (one occurrence) or a part (every instance of it); a key wins over its part. A
//! part with no material is never dropped silently: it is listed under `missing` and either
//! fails (`on_missing: fail`) or gets `default_material`. Pure: the caller reads the
//! manifest, the map and the library.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Used when `default_material` is not in the library: a neutral grey.
pub const BUILT_IN_DEFAULT: &str = "#9A9A9A";

/// One occurrence of a part: its key and the part it is an instance of.
#[derive(Debug, Clone, Copy)]
pub struct PartRef<'a> {
    pub key: &'a str,
    pub part: &'a str,
}

/// The resolved map (`assignments` key → material, `materials` name → definition,
/// `missing`, `unmatched_targets`, `counts`), or why it cannot be built, with the fix.
/// `context` is `{product, assignments, library}` as the coordinator binds it.
pub fn resolve(parts: &[PartRef], context: &Value, params: &Value) -> Result<Value, String> {
    let empty = Map::new();
    let wanted = context.get("assignments").and_then(Value::as_object).unwrap_or(&empty);
    let library = context.get("library").and_then(Value::as_object).unwrap_or(&empty);
    let on_missing = params.get("on_missing").and_then(Value::as_str).unwrap_or("default");
    let default = params.get("default_material").and_then(Value::as_str).unwrap_or("neutral_grey");
    let mut assignments = BTreeMap::new();
    let mut used = BTreeMap::new();
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for p in parts {
        let chosen = wanted.get(p.key).or_else(|| wanted.get(p.part)).and_then(Value::as_str);
        match chosen {
            Some(m) if library.contains_key(m) => {
                assignments.insert(p.key.to_string(), m.to_string());
                used.insert(m.to_string(), library[m].clone());
            }
            Some(m) => unknown.push(json!({"key": p.key, "material": m})),
            None => missing.push(p.key.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "{} part(s) are mapped to materials the library does not have (first: {}); add them with `renderctl materials apply` or fix the product's map",
            unknown.len(),
            unknown[0]
        ));
    }
    if !missing.is_empty() && on_missing == "fail" {
        return Err(format!(
            "{} part(s) have no material (first: `{}`); map them with `renderctl products map-set`, or set `on_missing: default`",
            missing.len(),
            missing[0]
        ));
    }
    for key in &missing {
        assignments.insert(key.clone(), default.to_string());
    }
    if !missing.is_empty() {
        let props =
            library.get(default).cloned().unwrap_or_else(|| json!({"base_color": BUILT_IN_DEFAULT, "metallic": 0.0, "roughness": 0.5}));
        used.insert(default.to_string(), props);
    }
    let matched: std::collections::HashSet<&str> = parts.iter().flat_map(|p| [p.key, p.part]).collect();
    let unmatched: Vec<&String> = wanted.keys().filter(|t| !matched.contains(t.as_str())).collect();
    Ok(json!({
        "version": 1,
        "product": context.get("product"),
        "assignments": assignments,
        "materials": used,
        "missing": missing,
        "unmatched_targets": unmatched,
        "counts": {"parts": parts.len(), "assigned": parts.len() - missing.len(), "missing": missing.len(), "unmatched_targets": unmatched.len()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Vec<PartRef<'static>> {
        [("a/bolt_1", "bolt"), ("b/bolt_1", "bolt"), ("a/plate_1", "plate")].map(|(key, part)| PartRef { key, part }).to_vec()
    }

    fn context() -> Value {
        json!({"product": "p", "assignments": {"bolt": "steel", "b/bolt_1": "red", "ghost": "steel"},
               "library": {"steel": {"base_color": "#888888"}, "red": {"base_color": "#FF0000"}}})
    }

    #[test]
    fn keys_win_over_parts_and_missing_parts_are_listed() {
        let m = resolve(&parts(), &context(), &json!({"on_missing": "default", "default_material": "neutral_grey"})).unwrap();
        assert_eq!(m["assignments"]["a/bolt_1"], "steel");
        assert_eq!(m["assignments"]["b/bolt_1"], "red");
        assert_eq!(m["assignments"]["a/plate_1"], "neutral_grey");
        assert_eq!(m["missing"], json!(["a/plate_1"]));
        assert_eq!(m["counts"]["missing"], 1);
        assert_eq!(m["unmatched_targets"], json!(["ghost"]));
        assert_eq!(m["materials"]["neutral_grey"]["base_color"], BUILT_IN_DEFAULT);
    }

    #[test]
    fn on_missing_fail_names_the_part_and_the_fix() {
        let e = resolve(&parts(), &context(), &json!({"on_missing": "fail"})).unwrap_err();
        assert!(e.contains("a/plate_1") && e.contains("renderctl"), "{e}");
    }

    #[test]
    fn a_material_missing_from_the_library_fails() {
        let ctx = json!({"assignments": {"plate": "gold"}, "library": {}});
        let e = resolve(&parts(), &ctx, &json!({})).unwrap_err();
        assert!(e.contains("gold"), "{e}");
    }
}
