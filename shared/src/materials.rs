//! A product's material map resolved against its parts: what `material.assign` stores
//! and the renders apply, and what the console's 3D preview colours by. A map entry names a
//! part key (one occurrence) or a part (every instance of it); a key wins over its part. A
//! part with no material is never dropped silently: it is listed under `missing` and either
//! fails (`on_missing: fail`) or gets `default_material`. A target that matches no part is
//! listed under `unmatched_targets` and, with `on_unmatched: fail`, fails the node. Part
//! keys match exactly (they are made from the file, the same way every time); part names
//! match without regard to case when no name matches exactly, because exporters disagree on
//! case (an AP203 export names the part `BOLT` that AP214 calls `bolt`). Pure: the caller
//! reads the manifest, the map and the library.

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
    let on_unmatched = params.get("on_unmatched").and_then(Value::as_str).unwrap_or("ignore");
    // Part names without regard to case; of targets that differ only in case, the first in
    // order is taken (an exact match always wins before this is asked).
    let mut folded: BTreeMap<String, &str> = BTreeMap::new();
    for target in wanted.keys() {
        folded.entry(target.to_lowercase()).or_insert(target.as_str());
    }
    let mut matched: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let default = params.get("default_material").and_then(Value::as_str).unwrap_or("neutral_grey");
    let mut assignments = BTreeMap::new();
    let mut used = BTreeMap::new();
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for p in parts {
        let target = [p.key, p.part].into_iter().find(|t| wanted.contains_key(*t)).or_else(|| folded.get(&p.part.to_lowercase()).copied());
        // Every target naming this part counts as matched, whichever wins.
        matched.extend([p.key, p.part].into_iter().filter(|t| wanted.contains_key(*t)));
        matched.extend(folded.get(&p.part.to_lowercase()).copied());
        let chosen = target.and_then(|t| wanted.get(t)).and_then(Value::as_str);
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
    let unmatched: Vec<&String> = wanted.keys().filter(|t| !matched.contains(t.as_str())).collect();
    if !unmatched.is_empty() && on_unmatched == "fail" {
        return Err(format!(
            "{} target(s) of the product's material map match no part (first: `{}`); the parts are: {}; fix the map (`renderctl products map-set`) or set `on_unmatched: ignore`",
            unmatched.len(),
            unmatched[0],
            parts.iter().map(|p| p.part).collect::<std::collections::BTreeSet<_>>().into_iter().take(12).collect::<Vec<_>>().join(", ")
        ));
    }
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
    fn part_names_match_without_regard_to_case_and_unmatched_targets_can_fail() {
        // An AP203 export upper-cases its names; the map was written against AP214's.
        let upper: Vec<PartRef> = [("A/BOLT_1", "BOLT"), ("A/PLATE_1", "PLATE")].map(|(key, part)| PartRef { key, part }).to_vec();
        let ctx = json!({"assignments": {"bolt": "steel", "a/plate_1": "steel", "ghost": "steel"}, "library": {"steel": {}}});
        let m = resolve(&upper, &ctx, &json!({})).unwrap();
        assert_eq!(m["assignments"]["A/BOLT_1"], "steel", "a name matches without regard to case");
        assert_eq!(m["missing"], json!(["A/PLATE_1"]), "a key matches only exactly");
        assert_eq!(m["unmatched_targets"], json!(["a/plate_1", "ghost"]));
        let e = resolve(&upper, &ctx, &json!({"on_unmatched": "fail"})).unwrap_err();
        assert!(e.contains("2 target(s)") && e.contains("`a/plate_1`") && e.contains("BOLT, PLATE") && e.contains("on_unmatched"), "{e}");
        // An exact name wins over one that differs only in case.
        let ctx = json!({"assignments": {"bolt": "steel", "BOLT": "red"}, "library": {"steel": {}, "red": {}}});
        assert_eq!(resolve(&upper, &ctx, &json!({})).unwrap()["assignments"]["A/BOLT_1"], "red");
    }

    #[test]
    fn a_material_missing_from_the_library_fails() {
        let ctx = json!({"assignments": {"plate": "gold"}, "library": {}});
        let e = resolve(&parts(), &ctx, &json!({})).unwrap_err();
        assert!(e.contains("gold"), "{e}");
    }
}
