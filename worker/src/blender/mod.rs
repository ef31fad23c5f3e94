//! The Blender driver: runs `worker/scripts/render.py` (in Blender 4.5 LTS as a Python module,
//! or in a Blender executable) on a GLB, with every setting
//! in a JSON file (never generated Python), and reads back the script's report. The
//! still, turntable and .blend modules and the legacy pipeline all render through here, so
//! the same settings give the same pixels whichever pipeline asked.

pub(crate) mod warm;

use crate::module::{Env, ModuleError};
use crate::tools;
use renderfleet_shared::artifact::ArtifactRef;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the script did, and where the time went.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// The script's report (`mesh_objects`, `materials_assigned`, `frames`, `timings`...).
    pub(crate) report: Value,
    /// Seconds: Blender start-up (process start → script start), import, render, total.
    pub(crate) timings: Value,
}

/// Renders in `mode` (`still`, `turntable`, `blend`) into `output`; `params` are the node's
/// params (defaults filled in by the coordinator).
pub(crate) async fn render(
    env: &Env,
    dir: &Path,
    mode: &str,
    glb: &Path,
    material_map: Option<&Path>,
    output: &Path,
    params: &Value,
) -> Result<Rendered, ModuleError> {
    let mut job = params.as_object().cloned().unwrap_or_default();
    let report_path = dir.join("report.json");
    job.insert("mode".into(), json!(mode));
    job.insert("glb".into(), json!(glb));
    job.insert("material_map".into(), json!(material_map));
    job.insert("output".into(), json!(output));
    job.insert("report".into(), json!(report_path));
    job.insert("threads".into(), json!(env.blender.threads));
    let params_path = dir.join("blender-params.json");
    tokio::fs::write(&params_path, serde_json::to_vec_pretty(&Value::Object(job)).expect("JSON"))
        .await
        .map_err(|e| ModuleError::host(format!("cannot write {}: {e}", params_path.display())))?;
    let what = format!("Blender ({mode})");
    let spawned = unix_now();
    let ran = match &env.warm_blender {
        Some(pool) => pool.run(&params_path, &what).await?,
        None => cold(env, &params_path, dir, &what).await?,
    };
    let report: Value = match tokio::fs::read(&report_path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    if report.is_null() {
        return Err(ModuleError::Fatal {
            message: format!("Blender ({mode}) exited without writing its report; see the log tail"),
            log_tail: Some(ran.tail),
        });
    }
    let t = &report["timings"];
    let script_start = t["script_start_unix"].as_f64().unwrap_or(spawned);
    let total = ran.wall.as_secs_f64();
    let timings = json!({
        "blender_startup_s": round3(script_start - spawned),
        "import_s": t["import_s"],
        "setup_s": t["setup_s"],
        "render_s": t["render_s"],
        "save_s": t["save_s"],
        "total_s": round3(total),
        "warm": env.warm_blender.is_some(),
    });
    tracing::info!(mode, %timings, "blender finished");
    Ok(Rendered { report, timings })
}

/// Whether `[tools] blender` names a Python with PyPI's `bpy` (Blender as a module, what
/// `ops/dev.sh` installs) rather than a Blender executable: a program called `python…`.
pub(crate) fn is_module(program: &str) -> bool {
    Path::new(program).file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with("python"))
}

/// The arguments that run `script` with `script_args` in `program`: `python script -- …`
/// for the module, `blender -b --factory-startup … --python script -- …` for the executable.
pub(crate) fn script_args<'a>(program: &str, script: &'a Path, script_args: &[&'a OsStr]) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = if is_module(program) {
        Vec::new()
    } else {
        ["-b", "--factory-startup", "-noaudio", "--python-exit-code", "3", "--python"].iter().map(OsStr::new).collect()
    };
    args.push(script.as_os_str());
    args.push(OsStr::new("--"));
    args.extend_from_slice(script_args);
    args
}

/// The arguments that run the Python `expr` in `program` after opening the .blend `file`
/// (if any): `python -c …` for the module (the file as `sys.argv[1]`), `blender -b [file]
/// --python-expr …` for the executable.
pub(crate) fn expr_args(program: &str, file: Option<&Path>, expr: &str) -> Vec<std::ffi::OsString> {
    if is_module(program) {
        let open = if file.is_some() { "import sys, bpy; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); " } else { "" };
        let mut args = vec!["-c".into(), format!("{open}{expr}").into()];
        args.extend(file.map(|f| f.as_os_str().to_owned()));
        args
    } else {
        let mut args: Vec<std::ffi::OsString> = vec!["-b".into(), "--factory-startup".into(), "-noaudio".into()];
        args.extend(file.map(|f| f.as_os_str().to_owned()));
        args.extend(["--python-exit-code".into(), "3".into(), "--python-expr".into(), expr.into()]);
        args
    }
}

/// A fresh Blender for one job.
async fn cold(env: &Env, params_path: &Path, dir: &Path, what: &str) -> Result<tools::Ran, ModuleError> {
    let args = script_args(&env.tools.blender, &env.scripts.render, &[params_path.as_os_str()]);
    // A script error is about this input (a broken GLB, a bad setting): retrying will not help.
    tools::run(&env.tools.blender, &args, dir, what, true).await
}

/// The local paths of a render's inputs: the GLB and, when given, the material map.
pub(crate) async fn input_paths(
    env: &Env,
    glb: &ArtifactRef,
    materials: Option<&ArtifactRef>,
) -> Result<(PathBuf, Option<PathBuf>), ModuleError> {
    let glb = env.store.path(glb).await?;
    let map = match materials {
        Some(m) => Some(env.store.path(m).await?),
        None => None,
    };
    Ok((glb, map))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
