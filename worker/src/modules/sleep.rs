//! `sleep {ms}`: waits, then succeeds. Stands in for a long render in tests (kill a worker
//! mid-task, drain on SIGTERM, time out).

use super::{Module, ModuleFuture};
use renderfleet_shared::modules::{sleep_ms, SLEEP};
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;
use std::time::Duration;

pub(super) struct Sleep;

impl Module for Sleep {
    fn key(&self) -> &'static str {
        SLEEP
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        let ms = sleep_ms(&task.params);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        })
    }
}
