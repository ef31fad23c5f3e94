//! `cad_resolve` (`cad.resolve`): the subject's STEP file into the artifact store. The
//! subject names the file as `cad_file`, a path inside the worker's `cad_dir`; the path is
//! checked before it touches the filesystem (relative, no `..`, and still inside `cad_dir`
//! once symbolic links are followed).

use crate::module::{fatal, Env, Module, ModuleError, ModuleFuture};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::cad_file_problem;
use renderfleet_shared::registry::module::CAD_RESOLVE;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

pub(super) struct CadResolve(pub(super) Arc<Env>);

impl Module for CadResolve {
    fn key(&self) -> &'static str {
        CAD_RESOLVE
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let step = resolve(&self.0, task.inputs.get("subject").unwrap_or(&Value::Null), &task.params).await?;
            Ok(json!({ "step": step }))
        })
    }
}

/// The STEP file a subject names, stored as a `cad_step` artifact.
pub(crate) async fn resolve(env: &Env, subject: &Value, params: &Value) -> Result<ArtifactRef, ModuleError> {
    let Some(name) = subject.get("cad_file").and_then(Value::as_str) else {
        return Err(fatal(format!(
            "the subject has no `cad_file`; give the STEP file's path inside the workers' cad_dir, e.g. {{\"cad_file\": \"bracket.stp\"}} (subject: {subject})"
        )));
    };
    // The same syntax check the coordinator makes at submission (a run stored before it had one may still get here).
    if let Some(why) = cad_file_problem(name) {
        return Err(fatal(why));
    }
    let relative = Path::new(name);
    let root = tokio::fs::canonicalize(&env.cad_dir).await.map_err(|e| ModuleError::Host {
        message: format!(
            "the CAD directory {} is not readable ({e}); check the worker's `cad_dir` (RENDERFLEET_CAD_DIR)",
            env.cad_dir.display()
        ),
        log_tail: None,
    })?;
    let path = match tokio::fs::canonicalize(root.join(relative)).await {
        Ok(p) => p,
        Err(e) => return Err(fatal(format!("CAD file {name:?} not found in {} ({e}); check the order line's product", root.display()))),
    };
    if !path.starts_with(&root) {
        return Err(fatal(format!("`cad_file` {name:?} leads outside cad_dir (a symbolic link?); refused")));
    }
    let max = params.get("max_bytes").and_then(Value::as_u64).unwrap_or(u64::MAX);
    // Opening a FIFO or a device can block for ever (and a thread stuck in `open` cannot
    // be stopped): only a regular file is opened.
    let meta = tokio::fs::metadata(&path).await.map_err(|e| fatal(format!("CAD file {name:?}: {e}")))?;
    if !meta.is_file() {
        return Err(fatal(format!(
            "CAD file {name:?} is not a regular file (a FIFO, socket, device or directory); give the STEP file itself"
        )));
    }
    let size = meta.len();
    if size == 0 {
        return Err(fatal(format!(
            "CAD file {name:?} is empty (0 bytes): an export or an upload that did not finish; export the STEP file again"
        )));
    }
    if size > max {
        return Err(fatal(format!(
            "CAD file {name:?} is {size} bytes, above the node's max_bytes of {max}; raise `max_bytes` if it is expected"
        )));
    }
    let mut head = vec![0u8; 64];
    let n = {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(&path).await.map_err(|e| fatal(format!("CAD file {name:?}: {e}")))?;
        f.read(&mut head).await.map_err(|e| fatal(format!("CAD file {name:?}: {e}")))?
    };
    if !String::from_utf8_lossy(&head[..n]).trim_start().starts_with("ISO-10303-21") {
        return Err(fatal(format!("CAD file {name:?} is not a STEP file (no ISO-10303-21 header); export it as STEP AP203/AP214/AP242")));
    }
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(env.store.put_file(&path, "cad_step", "model/step", json!({"file_name": file_name})).await?)
}
