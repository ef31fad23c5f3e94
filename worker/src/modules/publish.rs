//! `publish` (`output.publish`): delivers its input as a named result of the run. The
//! artifact is already in the store; publishing names it, so the request's answer can
//! point at it.

use crate::module::{input_ref, Module, ModuleFuture};
use renderfleet_shared::registry::module::PUBLISH;
use renderfleet_shared::wire::TaskMessage;
use serde_json::json;

pub(super) struct Publish;

impl Module for Publish {
    fn key(&self) -> &'static str {
        PUBLISH
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let artifact = input_ref(task, "artifact")?;
            let name = task.params.get("name").and_then(|n| n.as_str()).unwrap_or("primary");
            Ok(json!({ "artifact": artifact, "name": name }))
        })
    }
}
