//! `/console/products/{product}[?run=ID]`: a product's geometry with its materials before a
//! render is spent on it. The GLB of its latest export (or run ID's) in a WebGL viewer (the
//! `preview` bundle: orbit, zoom, fit; click a part ↔ its row), every part coloured by the
//! product's material map resolved exactly as `material.assign` resolves it for the next
//! render (`shared::materials::resolve`: key over part, the default where unmapped), and the
//! part list: keys, part names, instance counts, the material each gets, parts without one
//! highlighted. The map is edited from here through the API (`PUT material-map`, `repair`).

use super::html::esc;
use super::session::Viewer;
use super::{assets, db_err, oops, stored_json};
use crate::api::auth::Scope;
use crate::db::sql;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use renderfleet_shared::artifact::ArtifactRef;
use renderfleet_shared::materials::{self, PartRef};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use uuid::Uuid;

#[derive(Deserialize)]
pub(super) struct ProductQuery {
    run: Option<Uuid>,
}

/// One occurrence in the manifest `glb_export` stores beside the GLB.
#[derive(Deserialize)]
struct Occurrence {
    key: String,
    part: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    triangles: u64,
}

#[derive(Deserialize)]
struct Manifest {
    parts: Vec<Occurrence>,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Path(product): Path<String>,
    Query(q): Query<ProductQuery>,
    viewer: axum::Extension<Viewer>,
) -> Response {
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return db_err(e),
    };
    let export = match client.query_opt(sql::PRODUCT_EXPORT, &[&product, &q.run]).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            let which = q.run.map(|r| format!(" in run {r}")).unwrap_or_default();
            return oops(
                StatusCode::NOT_FOUND,
                &format!("no GLB export of product `{product}`{which} yet: render it once through a graph workflow (cad.export_glb), then look here"),
            );
        }
        Err(e) => return db_err(e),
    };
    let run: Uuid = export.get("run_id");
    let outputs: Value = export.get("outputs");
    let (Some(glb), Some(parts_ref)) = (ArtifactRef::from_value(&outputs["glb"]), ArtifactRef::from_value(&outputs["parts"])) else {
        return oops(StatusCode::CONFLICT, &format!("run {run}'s export stored no GLB and part manifest; render the product again"));
    };
    let Some(manifest) = stored_json::<Manifest>(&state, &parts_ref.sha256).await else {
        return oops(
            StatusCode::NOT_FOUND,
            &format!(
                "the part manifest {} is not in the console's artifacts_dir; point [artifacts_dir] at the workers' store",
                parts_ref.sha256
            ),
        );
    };
    // The map and the library as the coordinator binds them for `material.assign`.
    let (map_rows, library_rows) = match (client.query(sql::PRODUCT_MAP, &[&product]).await, client.query(sql::MATERIALS, &[]).await) {
        (Ok(m), Ok(l)) => (m, l),
        (Err(e), _) | (_, Err(e)) => return db_err(e),
    };
    let assignments: Map<String, Value> = map_rows.iter().map(|r| (r.get("target"), Value::String(r.get("material")))).collect();
    let library: Map<String, Value> = library_rows
        .iter()
        .map(|r| {
            let def = json!({"base_color": r.get::<_, String>("base_color"), "metallic": r.get::<_, f64>("metallic"), "roughness": r.get::<_, f64>("roughness")});
            (r.get("name"), def)
        })
        .collect();
    let context = json!({"product": product, "assignments": assignments, "library": library});
    let params: Value = export.get::<_, Option<Value>>("materials_params").unwrap_or_else(|| json!({}));
    // `on_missing: fail` would refuse to render; the preview still shows what is mapped.
    let lenient =
        json!({"on_missing": "default", "default_material": params.get("default_material").cloned().unwrap_or(json!("neutral_grey"))});
    let refs: Vec<PartRef> = manifest.parts.iter().map(|p| PartRef { key: &p.key, part: &p.part }).collect();
    let resolved = match materials::resolve(&refs, &context, &lenient) {
        Ok(r) => r,
        Err(why) => return oops(StatusCode::CONFLICT, &format!("the material map of `{product}` cannot be applied: {why}")),
    };
    let missing: std::collections::HashSet<&str> = resolved["missing"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut instances: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &manifest.parts {
        *instances.entry(p.part.as_str()).or_default() += 1;
    }

    let mut body = format!(
        "<div class=\"card\"><p>product <b id=\"product\">{}</b> · {} occurrences of {} parts · {} without a material{} · geometry from run <a href=\"/console/runs/{run}\">{}</a></p><p class=\"muted\">Colours are what the next render assigns: the product's map over the material library, a part key before its part name, <code>{}</code> where unmapped.</p></div>",
        esc(&product),
        manifest.parts.len(),
        instances.len(),
        missing.len(),
        if missing.is_empty() { String::new() } else { " (highlighted)".into() },
        &run.to_string()[..13],
        esc(lenient["default_material"].as_str().unwrap_or("neutral_grey")),
    );
    let view = json!({
        "product": product,
        "glb": format!("/console/artifacts/{}", glb.sha256),
        "parts": manifest.parts.iter().map(|p| {
            let material = resolved["assignments"][&p.key].as_str().unwrap_or_default();
            json!({"key": p.key, "part": p.part, "material": material,
                   "definition": resolved["materials"][material], "missing": missing.contains(p.key.as_str())})
        }).collect::<Vec<_>>(),
        "library": library.keys().collect::<Vec<_>>(),
        "may_edit": viewer.may(Scope::Admin),
    });
    let _ = write!(
        body,
        "<div id=\"preview\" data-csrf=\"{}\" data-view=\"{}\"><noscript>The 3D view needs JavaScript; the part list is below.</noscript></div>",
        esc(viewer.csrf()),
        esc(&view.to_string())
    );
    body += "<h3>parts</h3><table id=\"parts\"><tr><th>part key</th><th>part</th><th>name</th><th>instances</th><th>triangles</th><th>material</th><th>from</th></tr>";
    for p in &manifest.parts {
        let material = resolved["assignments"][&p.key].as_str().unwrap_or_default();
        let colour = resolved["materials"][material]["base_color"].as_str().unwrap_or("#9A9A9A");
        let from = if assignments.contains_key(&p.key) {
            "its key"
        } else if assignments.contains_key(&p.part) {
            "its part"
        } else {
            "no material: the default"
        };
        let _ = write!(
            body,
            "<tr data-key=\"{k}\" data-part=\"{pt}\" data-colour=\"{c}\" class=\"{cls}\"><td><code>{k}</code></td><td>{pt}</td><td>{n}</td><td>{i}</td><td>{t}</td><td><span class=\"swatch\" style=\"background: {c}\"></span> {m}</td><td>{from}</td></tr>",
            k = esc(&p.key),
            pt = esc(&p.part),
            n = esc(&p.name),
            i = instances[p.part.as_str()],
            t = p.triangles,
            c = esc(colour),
            cls = if missing.contains(p.key.as_str()) { "missing" } else { "" },
            m = esc(material),
        );
    }
    body += "</table>";
    if let Some(unmatched) = resolved["unmatched_targets"].as_array().filter(|u| !u.is_empty()) {
        let list: Vec<String> = unmatched.iter().filter_map(Value::as_str).map(|t| format!("<code>{}</code>", esc(t))).collect();
        let _ = write!(body, "<p class=\"error\" id=\"unmatched\">map entries that match no part: {}</p>", list.join(", "));
    }
    body += &assets::tags("preview");
    assets::with_scripts(viewer.page("Product", &body).into_response())
}
