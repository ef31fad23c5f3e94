//! The material library and each product's material map: what `material.assign` (and the
//! legacy pipeline) read when they build a render's material map. A map entry targets a
//! part key (one occurrence) or a part name (every instance of the part).
//!
//! Renders never drop a part silently: parts without a material are listed by the
//! materials step; `repair` gives the ones the product's last render listed a material,
//! so nobody edits the database by hand.

use super::{json_body, ApiError, ErrorBody};
use crate::db::sql;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const MATERIAL_EXAMPLE: &str = r##"{"base_color": "#B0B4B8", "metallic": 1.0, "roughness": 0.35, "description": "brushed steel"}"##;
const MAP_EXAMPLE: &str = r#"{"assignments": {"bolt": "steel", "as1/plate_1": "blue_paint"}}"#;

/// `PUT /v1/materials/{name}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MaterialInput {
    /// sRGB `#RRGGBB`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    base_color: String,
    /// 0 to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    metallic: f64,
    /// 0 to 1.
    #[serde(default = "half")]
    #[schema(minimum = 0, maximum = 1, default = 0.5)]
    roughness: f64,
    #[serde(default)]
    description: String,
}

fn half() -> f64 {
    0.5
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct MaterialView {
    name: String,
    description: String,
    base_color: String,
    metallic: f64,
    roughness: f64,
    updated_at: DateTime<Utc>,
}

impl MaterialView {
    fn from_row(r: &tokio_postgres::Row) -> Self {
        MaterialView {
            name: r.get(0),
            description: r.get(1),
            base_color: r.get(2),
            metallic: r.get(3),
            roughness: r.get(4),
            updated_at: r.get(5),
        }
    }
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn check_material(name: &str, m: &MaterialInput) -> Result<(), ApiError> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(refused("invalid_name", format!("material name `{name}` must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `-`")));
    }
    let hex = m.base_color.strip_prefix('#').filter(|h| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()));
    if hex.is_none() {
        return Err(refused(
            "invalid_color",
            format!("`base_color` {:?} must be an sRGB colour `#RRGGBB`, e.g. \"#B0B4B8\"", m.base_color),
        ));
    }
    for (field, v) in [("metallic", m.metallic), ("roughness", m.roughness)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(refused("invalid_value", format!("`{field}` must be between 0 and 1, got {v}")));
        }
    }
    Ok(())
}

/// `PUT /v1/materials/{name}`: creates or replaces a material of the library.
#[utoipa::path(put, path = "/v1/materials/{name}", tag = "materials", request_body = MaterialInput, params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `-`")),
    responses((status = 200, body = MaterialView), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 422, body = ErrorBody, description = "a bad name, colour or value")))]
pub(super) async fn put_material(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<MaterialView>, ApiError> {
    let m: MaterialInput = json_body(&headers, &body, MATERIAL_EXAMPLE)?;
    check_material(&name, &m)?;
    let client = state.pool.get().await?;
    let row = client.query_one(sql::UPSERT_MATERIAL, &[&name, &m.description, &m.base_color, &m.metallic, &m.roughness]).await?;
    tracing::info!(material = %name, "material saved");
    Ok(Json(MaterialView::from_row(&row)))
}

/// `GET /v1/materials`.
#[utoipa::path(get, path = "/v1/materials", tag = "materials",
    responses((status = 200, body = Object, description = "`items`: the library")))]
pub(super) async fn list_materials(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let client = state.pool.get().await?;
    let items: Vec<MaterialView> = client.query(sql::MATERIALS, &[]).await?.iter().map(MaterialView::from_row).collect();
    Ok(Json(json!({ "items": items })))
}

/// `PUT /v1/products/{product}/material-map` body: the whole map.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MapInput {
    /// Part key or part name (1 to 1000 characters) → material name.
    #[schema(schema_with = assignments_schema)]
    assignments: BTreeMap<String, String>,
}

/// `assignments`: targets of 1 to 1000 characters, each naming a material of the library.
fn assignments_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(1000))))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(MATERIAL_NAME))))
        .build()
}

/// What a material's name must look like (the library's check and the database's).
const MATERIAL_NAME: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct MapView {
    product: String,
    assignments: BTreeMap<String, String>,
}

async fn read_map(state: &AppState, product: &str) -> Result<MapView, ApiError> {
    let client = state.pool.get().await?;
    let assignments = client.query(sql::PRODUCT_MAP, &[&product]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(MapView { product: product.into(), assignments })
}

/// Writes `assignments` (all of them, or merged over the current map) in one transaction,
/// after checking that every material exists.
/// A product id is 1 to 200 characters (what the database holds).
fn check_product(product: &str) -> Result<(), ApiError> {
    if product.is_empty() || product.chars().count() > 200 {
        return Err(refused("invalid_product", "the product id must be 1 to 200 characters".into()));
    }
    Ok(())
}

/// Checks `assignments` and, unless `dry_run`, writes them (replacing the map when
/// `replace`): a dry run makes every check the real call makes and writes nothing.
async fn write_map(
    state: &AppState,
    product: &str,
    assignments: &BTreeMap<String, String>,
    replace: bool,
    dry_run: bool,
) -> Result<(), ApiError> {
    check_product(product)?;
    if let Some(t) = assignments.keys().find(|t| t.is_empty() || t.len() > 1000) {
        return Err(refused("invalid_target", format!("target {t:?} must be a part key or part name of 1 to 1000 characters")));
    }
    let targets: Vec<&str> = assignments.keys().map(String::as_str).collect();
    let materials: Vec<&str> = assignments.values().map(String::as_str).collect();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await.map_err(crate::db::DbError::from)?;
    let unknown: Vec<String> =
        tx.query(sql::UNKNOWN_MATERIALS, &[&materials]).await.map_err(crate::db::DbError::from)?.iter().map(|r| r.get(0)).collect();
    if !unknown.is_empty() {
        return Err(refused(
            "unknown_material",
            format!("the library has no material {}; add it first (`renderctl materials apply`); nothing was saved", unknown.join(", ")),
        ));
    }
    if dry_run {
        return Ok(()); // the transaction rolls back when dropped
    }
    if replace {
        tx.execute(sql::DELETE_PRODUCT_MAP, &[&product]).await.map_err(crate::db::DbError::from)?;
    }
    tx.execute(sql::UPSERT_PRODUCT_MAP, &[&product, &targets, &materials]).await.map_err(crate::db::DbError::from)?;
    tx.commit().await.map_err(crate::db::DbError::from)?;
    Ok(())
}

/// `PUT /v1/products/{product}/material-map`: replaces the product's map.
#[utoipa::path(put, path = "/v1/products/{product}/material-map", tag = "materials", request_body = MapInput, params(("product" = String, Path, min_length = 1, max_length = 200, description = "a product id, 1 to 200 characters")),
    responses((status = 200, body = MapView), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 422, body = ErrorBody, description = "a material the library does not have; nothing is saved")))]
pub(super) async fn put_map(
    State(state): State<AppState>,
    Path(product): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<MapView>, ApiError> {
    let input: MapInput = json_body(&headers, &body, MAP_EXAMPLE)?;
    write_map(&state, &product, &input.assignments, true, false).await?;
    tracing::info!(%product, entries = input.assignments.len(), "material map saved");
    Ok(Json(read_map(&state, &product).await?))
}

/// `GET /v1/products/{product}/material-map`.
#[utoipa::path(get, path = "/v1/products/{product}/material-map", tag = "materials", params(("product" = String, Path, min_length = 1, max_length = 200, description = "a product id, 1 to 200 characters")),
    responses((status = 200, body = MapView), (status = 422, body = ErrorBody, description = "a product id over 200 characters")))]
pub(super) async fn get_map(State(state): State<AppState>, Path(product): Path<String>) -> Result<Json<MapView>, ApiError> {
    check_product(&product)?;
    Ok(Json(read_map(&state, &product).await?))
}

/// `POST /v1/products/{product}/material-map/repair` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RepairInput {
    /// The material to give every part the product's last render found unassigned.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    material: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RepairQuery {
    /// Report what would be assigned without writing.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/products/{product}/material-map/repair`: assigns `material` to every part that
/// the product's most recent materials step listed as missing.
#[utoipa::path(post, path = "/v1/products/{product}/material-map/repair", tag = "materials", request_body = RepairInput, params(("product" = String, Path, min_length = 1, max_length = 200, description = "a product id, 1 to 200 characters"), RepairQuery),
    responses((status = 200, body = Object, description = "`added`: the targets assigned (or that would be, with dry_run); `from_run`: the run they were found in"), (status = 400, description = "malformed JSON or an unknown field", body = ErrorBody), (status = 404, body = ErrorBody, description = "no materials step has run for the product"), (status = 422, body = ErrorBody)))]
pub(super) async fn repair_map(
    State(state): State<AppState>,
    Path(product): Path<String>,
    Query(q): Query<RepairQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_product(&product)?;
    let input: RepairInput = json_body(&headers, &body, r#"{"material": "neutral_grey"}"#)?;
    let client = state.pool.get().await?;
    let Some(row) = client.query_opt(sql::LAST_MISSING_PARTS, &[&product]).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_materials_run",
            format!("no materials step has run for product `{product}` yet; render it once, then repair what it lists as missing"),
        ));
    };
    let missing: Value = row.get(0);
    let run_id: uuid::Uuid = row.get(1);
    // The material is checked whatever there is to add, in a dry run as in the real one.
    if !client.query(sql::UNKNOWN_MATERIALS, &[&vec![input.material.as_str()]]).await?.is_empty() {
        return Err(refused(
            "unknown_material",
            format!("the library has no material {}; add it first (`renderctl materials apply`); nothing was saved", input.material),
        ));
    }
    // Parts mapped since that run (an earlier repair) are not added again.
    let mapped: std::collections::HashSet<String> =
        client.query(sql::PRODUCT_MAP, &[&product]).await?.iter().map(|r| r.get("target")).collect();
    drop(client);
    let added: BTreeMap<String, String> = missing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| !mapped.contains(*k))
        .map(|k| (k.to_string(), input.material.clone()))
        .collect();
    if !added.is_empty() {
        write_map(&state, &product, &added, false, q.dry_run).await?;
        if !q.dry_run {
            tracing::info!(%product, added = added.len(), "material map repaired");
        }
    }
    Ok(Json(json!({"product": product, "dry_run": q.dry_run, "from_run": run_id, "added": added.keys().collect::<Vec<_>>()})))
}
