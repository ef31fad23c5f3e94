//! `noop`: does nothing and succeeds. For tests and for measuring the fleet's own overhead.

use crate::module::{Module, ModuleFuture};
use renderfleet_shared::registry::module::NOOP;
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;

pub(super) struct Noop;

impl Module for Noop {
    fn key(&self) -> &'static str {
        NOOP
    }

    fn run<'a>(&'a self, _task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async { Ok(json!({})) })
    }
}
