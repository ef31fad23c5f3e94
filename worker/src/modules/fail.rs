//! `fail {times}`: fails its first `times` attempts with a retryable error, then succeeds.
//! Exercises retries, backoff and final failure.

use super::{Module, ModuleError, ModuleFuture};
use renderfleet_shared::modules::{fail_times, FAIL};
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;

pub(super) struct Fail;

impl Module for Fail {
    fn key(&self) -> &'static str {
        FAIL
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        let times = fail_times(&task.params);
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
