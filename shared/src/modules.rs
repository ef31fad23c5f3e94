//! The modules this build knows and the parameter checks for the trivial ones.
//!
//! The node registry of the contract-layer issue replaces [`Builtins`] behind the same
//! [`NodeCatalog`] seam: graph validation only asks "which module runs this node type, and
//! are these params acceptable".

use serde_json::Value;

/// Module keys. One queue each (DESIGN §4).
pub const NOOP: &str = "noop";
pub const SLEEP: &str = "sleep";
pub const FAIL: &str = "fail";

/// What graph validation needs to know about node types.
pub trait NodeCatalog {
    /// The module that runs `node_type`, or `None` when the type is unknown.
    fn module_for(&self, node_type: &str) -> Option<&'static str>;
    /// Every known node type, for "did you mean" style errors.
    fn node_types(&self) -> Vec<&'static str>;
    /// Problems with `params` for a known node type: (JSON pointer inside params, message).
    fn check_params(&self, node_type: &str, params: &Value) -> Vec<(String, String)>;
}

/// The test and benchmark modules of the spine: `noop`, `sleep {ms}`, `fail {times}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Builtins;

/// Upper bound for `sleep.ms`: a test module has no business sleeping longer than an hour.
const MAX_SLEEP_MS: u64 = 3_600_000;

impl NodeCatalog for Builtins {
    fn module_for(&self, node_type: &str) -> Option<&'static str> {
        [NOOP, SLEEP, FAIL].into_iter().find(|m| *m == node_type)
    }

    fn node_types(&self) -> Vec<&'static str> {
        vec![NOOP, SLEEP, FAIL]
    }

    fn check_params(&self, node_type: &str, params: &Value) -> Vec<(String, String)> {
        let Some(obj) = params.as_object() else {
            return vec![(String::new(), "params must be a JSON object, e.g. {}".into())];
        };
        let allowed: &[&str] = match node_type {
            SLEEP => &["ms"],
            FAIL => &["times"],
            _ => &[],
        };
        let mut out: Vec<(String, String)> = obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                let hint = if allowed.is_empty() {
                    format!("`{node_type}` takes no params")
                } else {
                    format!("`{node_type}` takes: {}", allowed.join(", "))
                };
                (format!("/{k}"), format!("unknown param `{k}`; {hint}"))
            })
            .collect();
        let mut uint = |key: &str, required: bool, max: u64| match obj.get(key) {
            None if required => out.push((format!("/{key}"), format!("`{node_type}` needs `{key}` (an integer ≥ 0)"))),
            None => {}
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => {}
                _ => out.push((format!("/{key}"), format!("`{key}` must be an integer from 0 to {max}, got {v}"))),
            },
        };
        match node_type {
            SLEEP => uint("ms", true, MAX_SLEEP_MS),
            FAIL => uint("times", true, 1_000),
            _ => {}
        }
        out
    }
}

/// Reads `sleep`'s duration (params already validated).
pub fn sleep_ms(params: &Value) -> u64 {
    params.get("ms").and_then(Value::as_u64).unwrap_or(0)
}

/// Reads how many first attempts `fail` fails (params already validated).
pub fn fail_times(params: &Value) -> u64 {
    params.get("times").and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sleep_needs_ms_in_range() {
        assert!(Builtins.check_params(SLEEP, &json!({"ms": 5})).is_empty());
        assert_eq!(Builtins.check_params(SLEEP, &json!({})).len(), 1);
        let p = Builtins.check_params(SLEEP, &json!({"ms": -1, "x": 1}));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().any(|(path, _)| path == "/x"));
    }

    #[test]
    fn params_must_be_an_object() {
        assert_eq!(Builtins.check_params(NOOP, &json!([1])).len(), 1);
    }
}
