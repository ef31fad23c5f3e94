//! `sleep {ms}`: waits, then succeeds. Stands in for a long render in tests (kill a worker
//! mid-task, drain on SIGTERM, time out).

use crate::module::{Module, ModuleFuture};
use renderfleet_shared::registry::module::SLEEP;
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;
use std::time::Duration;

pub(super) struct Sleep;

impl Module for Sleep {
    fn key(&self) -> &'static str {
        SLEEP
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        // Validated by the coordinator against the registry's schema (`ms` is required).
        let ms = task.params.get("ms").and_then(serde_json::Value::as_u64).unwrap_or(0);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        })
    }
}
