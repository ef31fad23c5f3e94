//! `legacy_render` (`legacy.render`): the legacy pipeline, one task that runs the same
//! module code as the graph in a fixed order inside this worker, with params mapped from
//! the output type's `legacy_preset` (see `renderfleet_shared::legacy`). Dispatch runs the
//! resolve and export steps as nodes before it and passes their `glb` and `parts`. It must stay
//! callable at all times: it is what rollback falls back to.

use super::{blender_blend, blender_still, blender_turntable, cad_resolve, glb_export, materials, metadata, video_encode};
use crate::module::{fatal, optional_ref, Env, Module, ModuleFuture};
use renderfleet_shared::legacy::{steps, Deliverable};
use renderfleet_shared::registry::module::LEGACY_RENDER;
use renderfleet_shared::wire::TaskMessage;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

pub(super) struct LegacyRender(pub(super) Arc<Env>);

impl Module for LegacyRender {
    fn key(&self) -> &'static str {
        LEGACY_RENDER
    }

    fn run<'a>(&'a self, task: &'a TaskMessage) -> ModuleFuture<'a> {
        Box::pin(async move {
            let env = &self.0;
            let kind = task.params["artifact_kind"].as_str().unwrap_or_default();
            let s = steps(kind, &task.params["preset"]).map_err(|e| fatal(format!("output type `{}`: {e}", task.params["output_type"])))?;
            let subject = task.inputs.get("subject").cloned().unwrap_or(Value::Null);
            let context = task.inputs.get("product_materials").cloned().unwrap_or(Value::Null);
            let mut seconds = serde_json::Map::new();
            let mut out = serde_json::Map::new();
            let mut t = Instant::now();
            let mut lap = |name: &str, t: &mut Instant| {
                seconds.insert(name.into(), json!((t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0));
                *t = Instant::now();
            };
            // Dispatch runs the resolve and export steps as nodes of their own (so the export
            // comes from the node result cache when it can); a legacy node on its own, or
            // queued before that, does them here.
            let (glb, parts) = match (optional_ref(task, "glb")?, optional_ref(task, "parts")?) {
                (Some(glb), Some(parts)) => (glb, parts),
                _ => {
                    let step = cad_resolve::resolve(env, &subject, &s.resolve).await?;
                    lap("resolve", &mut t);
                    let exported = glb_export::export(env, &step, &s.export).await?;
                    lap("export", &mut t);
                    exported
                }
            };
            out.insert("glb".into(), json!(glb));
            out.insert("parts".into(), json!(parts));
            let deliverable = match s.deliverable {
                Deliverable::Glb => json!(glb),
                Deliverable::PartManifest => json!(parts),
                Deliverable::Metadata => {
                    let (_, m) = metadata::describe(env, &glb, &s.metadata).await?;
                    lap("metadata", &mut t);
                    json!(m)
                }
                render => {
                    let (map, missing, unmatched) = materials::assign(env, &parts, &context, &s.materials).await?;
                    lap("materials", &mut t);
                    out.insert("materials".into(), json!(map));
                    out.insert("missing_materials".into(), missing);
                    out.insert("unmatched_targets".into(), unmatched);
                    match render {
                        Deliverable::Still => {
                            let image = blender_still::still(env, &glb, Some(&map), &s.still).await?;
                            lap("render", &mut t);
                            json!(image)
                        }
                        Deliverable::Turntable => {
                            let frames = blender_turntable::turntable(env, &glb, Some(&map), &s.turntable).await?;
                            lap("render", &mut t);
                            out.insert("frames".into(), json!(frames));
                            let video = video_encode::encode(env, &frames, &s.encode).await?;
                            lap("encode", &mut t);
                            if kind == "frames" {
                                json!(frames)
                            } else {
                                json!(video)
                            }
                        }
                        _ => {
                            let blend = blender_blend::blend(env, &glb, Some(&map), &s.blend).await?;
                            lap("render", &mut t);
                            json!(blend)
                        }
                    }
                }
            };
            out.insert("artifact".into(), deliverable);
            out.insert("step_seconds".into(), Value::Object(seconds));
            Ok(Value::Object(out))
        })
    }
}
