//! `video_encode` (`video.encode`): turntable frames → H.264 MP4 with ffmpeg.

use crate::module::{fatal, input_ref, Env, Module, ModuleError, ModuleFuture};
use crate::tools::{self, Scratch};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::registry::module::VIDEO_ENCODE;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::sync::Arc;

pub(super) struct VideoEncode(pub(super) Arc<Env>);

impl Module for VideoEncode {
    fn key(&self) -> &'static str {
        VIDEO_ENCODE
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let video = encode(&self.0, &input_ref(task, "frames")?, &task.params).await?;
            Ok(json!({ "video": video }))
        })
    }
}

/// Encodes the frames a `frames` manifest names; stores the MP4.
pub(crate) async fn encode(env: &Env, frames: &ArtifactRef, params: &Value) -> Result<ArtifactRef, ModuleError> {
    let manifest: Value =
        serde_json::from_slice(&env.store.read(frames).await?).map_err(|e| fatal(format!("the frames manifest is not readable ({e})")))?;
    let list = manifest["frames"].as_array().filter(|l| !l.is_empty()).ok_or_else(|| fatal("the frames manifest lists no frames"))?;
    let scratch = Scratch::new(&env.scratch, "encode").await?;
    // ffmpeg reads a numbered sequence: link each stored frame under its position.
    for (i, f) in list.iter().enumerate() {
        let r = ArtifactRef {
            sha256: f["sha256"].as_str().unwrap_or_default().into(),
            kind: "image_png".into(),
            bytes: f["bytes"].as_u64().unwrap_or(0),
            mime: "image/png".into(),
            meta: Value::Null,
        };
        let src = env.store.path(&r).await?;
        let dst = scratch.dir.join(format!("f{i:06}.png"));
        tokio::fs::symlink(&src, &dst).await.map_err(|e| fatal(format!("cannot link frame {}: {e}", dst.display())))?;
    }
    let fps = params["fps"].as_u64().unwrap_or(24).to_string();
    let crf = params["crf"].as_u64().unwrap_or(18).to_string();
    let pix = params["pixel_format"].as_str().unwrap_or("yuv420p");
    let out = scratch.dir.join("video.mp4");
    let flags = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-framerate",
        &fps,
        "-i",
        "f%06d.png",
        "-c:v",
        "libx264",
        "-crf",
        &crf,
        "-pix_fmt",
        pix,
        "-movflags",
        "+faststart",
        // yuv420p needs even sizes; pad odd ones by a pixel instead of failing.
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
    ];
    let args: Vec<&OsStr> = flags.iter().map(OsStr::new).chain(std::iter::once(out.as_os_str())).collect();
    tools::run(&env.tools.ffmpeg, &args, &scratch.dir, "encoding the turntable (ffmpeg)", true).await?;
    let meta =
        json!({"frames": list.len(), "fps": params["fps"], "width": manifest["width"], "height": manifest["height"], "codec": "h264"});
    Ok(env.store.put_file(&out, "video_mp4", "video/mp4", meta).await?)
}
