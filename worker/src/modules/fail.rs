//! `fail {times}`: fails its first `times` attempts with a retryable error, then succeeds.
//! Exercises retries, backoff and final failure.

use crate::module::{Module, ModuleError, ModuleFuture};
use renderfleet_shared::registry::module::FAIL;
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;

pub(super) struct Fail;

impl Module for Fail {
    fn key(&self) -> &'static str {
        FAIL
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        // Validated by the coordinator against the registry's schema (`times` is required).
        let times = task.params.get("times").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let attempt = task.attempt;
        Box::pin(async move {
            if u64::from(attempt) <= times {
                return Err(ModuleError::Retryable {
                    message: format!("fail module: attempt {attempt} fails on purpose (it fails the first {times})"),
                    log_tail: Some(format!("fail: attempt {attempt}/{times} -> error")),
                });
            }
            Ok(json!({ "succeeded_on_attempt": attempt }))
        })
    }
}
