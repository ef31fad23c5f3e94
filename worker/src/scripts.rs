//! The scripts the external tools run, compiled into the worker binary so that a host
//! never runs a script of another version than its worker. They are written out at
//! start-up, named by their content hash, so workers sharing a scratch directory agree.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const RENDER: &str = include_str!("../scripts/render.py");
const STEP_TO_GLB: &str = include_str!("../scripts/step_to_glb.py");

/// The scripts a tool runs for the modules, by name and text (what a module's cache
/// fingerprint covers besides the tool's version).
pub(crate) fn run_by(tool: crate::modules::Tool) -> &'static [(&'static str, &'static str)] {
    match tool {
        crate::modules::Tool::Blender => &[("render.py", RENDER)],
        crate::modules::Tool::Cascadio => &[("step_to_glb.py", STEP_TO_GLB)],
        crate::modules::Tool::Ffmpeg => &[],
    }
}

/// Where the scripts were written.
#[derive(Debug, Clone)]
pub struct Scripts {
    /// `worker/scripts/render.py`: still, turntable and .blend from a GLB.
    pub render: PathBuf,
    /// `worker/scripts/step_to_glb.py`: STEP → GLB with cascadio.
    pub step_to_glb: PathBuf,
}

impl Scripts {
    pub async fn install(dir: &Path) -> std::io::Result<Scripts> {
        Ok(Scripts { render: write(dir, "render", RENDER).await?, step_to_glb: write(dir, "step_to_glb", STEP_TO_GLB).await? })
    }
}

async fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
    let dir = dir.join("renderfleet-scripts");
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!("{name}-{hash}.py"));
    // Trusted only if it holds exactly this binary's script: in a shared temporary directory
    // anyone could have put a file of that name there first. Otherwise a fresh file is
    // renamed over it.
    if tokio::fs::read(&path).await.ok().as_deref() != Some(text.as_bytes()) {
        let tmp = dir.join(format!(".{name}-{}", uuid::Uuid::now_v7().simple()));
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::rename(&tmp, &path).await?;
    }
    Ok(path)
}
