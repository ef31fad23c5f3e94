//! A render request from the order system (DESIGN §3): the output type's rollout mode
//! decides the runs, and the request and all its runs are written in one transaction, so a
//! retried request (same `Idempotency-Key`) finds the first answer and never renders twice.
//!
//! - `legacy`: one authoritative legacy run (a single `legacy.render` node).
//! - `shadow`: that legacy run, plus a shadow graph run for a sampled share of requests;
//!   the sample is a hash of the idempotency key, so a retry makes the same choice.
//! - `graph`: one authoritative graph run of the bound workflow with the overrides applied.

use super::{insert_run, RunMeta};
use crate::db::{sql, DbError};
use crate::outbox::{Hot, Ready};
use deadpool_postgres::{Pool, Transaction};
use renderfleet_shared::cache::CacheMode;
use renderfleet_shared::graph::{self, EdgeSpec, GraphSpec, NodeDefaults, NodeSpec, Plan, Problem};
use renderfleet_shared::legacy;
use renderfleet_shared::metrics as m;
use renderfleet_shared::overrides;
use renderfleet_shared::registry::{registry, Family};
use renderfleet_shared::scheduling::Priority;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What the order system sent.
#[derive(Debug)]
pub struct Request<'a> {
    pub idempotency_key: &'a str,
    pub order_line_id: &'a str,
    pub subject: &'a Value,
    pub output_type: &'a str,
    pub cache: CacheMode,
    /// None: the output type's default.
    pub priority: Option<Priority>,
    pub submitter: &'a str,
}

#[derive(Debug)]
pub struct RunCreated {
    pub run_id: Uuid,
    pub pipeline: &'static str,
    pub role: &'static str,
}

#[derive(Debug)]
pub enum Outcome {
    /// New: the request and its runs (their ready tasks are with the publisher).
    New { request_id: Uuid, mode: String, runs: Vec<RunCreated> },
    /// The key was used before for the same request: that request.
    Existing(Uuid),
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no output type `{0}`; `GET /v1/output-types` lists them")]
    UnknownOutputType(String),
    #[error("this Idempotency-Key was used for a different request ({0}); use a new key for a new request")]
    KeyReused(Uuid),
    #[error("output type `{key}` is bound to workflow {workflow}, which cannot run: {reason}")]
    Workflow { key: String, workflow: Uuid, reason: String, problems: Vec<Problem> },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RequestError {
    fn from(e: tokio_postgres::Error) -> Self {
        RequestError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for RequestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RequestError::Db(e.into())
    }
}

struct OutputType {
    key: String,
    family: Family,
    artifact_kind: String,
    workflow: Option<(Uuid, Option<i32>)>,
    overrides: Value,
    legacy_preset: Value,
    mode: String,
    shadow_pct: f64,
    /// A/A sample share (percent), from the gate config.
    noise_pct: f64,
    default_priority: Priority,
}

/// A shadow run (or an A/A legacy twin) waits one level below its request: nobody waits for
/// it, and it must not slow the orders it is measured on.
fn shadow_priority(p: Priority) -> Priority {
    Priority::from_rank(p.rank() - 1).unwrap_or(Priority::Bulk)
}

/// Whether the request with this key gets a shadow run at `pct` percent. Stable per key.
pub fn sampled(idempotency_key: &str, pct: f64) -> bool {
    let h = Sha256::digest(idempotency_key.as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % 10_000;
    (n as f64) < pct * 100.0
}

/// The legacy pipeline's graph: its first two steps, resolving and exporting the CAD file, as
/// nodes of their own, so the export is served from the node result cache like the graph's
/// (one export per product across every output type and both pipelines), then one
/// `legacy.render` node with the raw preset for the rest. A preset the legacy mapping refuses
/// (output types are checked when written, so only an old row) keeps the single node, whose
/// worker fails the run with the mapping's own message.
fn legacy_graph(ot: &OutputType) -> GraphSpec {
    let node = |id: &str, node_type: &str, params: Value| NodeSpec {
        id: id.into(),
        node_type: node_type.into(),
        params,
        max_attempts: None,
        timeout: None,
        position: None,
    };
    let legacy =
        node("legacy", "legacy.render", json!({"output_type": ot.key, "artifact_kind": ot.artifact_kind, "preset": ot.legacy_preset}));
    let Ok(steps) = legacy::steps(&ot.artifact_kind, &ot.legacy_preset) else {
        return GraphSpec { family: Some(ot.family), nodes: vec![legacy], edges: Vec::new() };
    };
    let edge = |from: &str, from_port: Option<&str>, to: &str, to_port: Option<&str>| EdgeSpec {
        from: from.into(),
        from_port: from_port.map(Into::into),
        to: to.into(),
        to_port: to_port.map(Into::into),
    };
    GraphSpec {
        family: Some(ot.family),
        nodes: vec![node("legacy_cad", "cad.resolve", steps.resolve), node("legacy_export", "cad.export_glb", steps.export), legacy],
        edges: vec![
            edge("legacy_cad", None, "legacy_export", None),
            edge("legacy_export", Some("glb"), "legacy", Some("glb")),
            edge("legacy_export", Some("parts"), "legacy", Some("parts")),
        ],
    }
}

/// A planned run: (plan, stored graph, workflow it came from).
type Planned = (Plan, Value, Option<(Uuid, i32)>);

fn plan_of(graph: &GraphSpec, defaults: NodeDefaults) -> Result<(Plan, Value), Vec<Problem>> {
    let plan = graph::plan(graph, registry(), defaults)?;
    let stored = serde_json::to_value(&plan.graph).expect("graph serializes");
    Ok((plan, stored))
}

async fn load_output_type(pool: &Pool, key: &str) -> Result<OutputType, RequestError> {
    let client = pool.get().await?;
    let r = client.query_opt(sql::OUTPUT_TYPE, &[&key]).await?.ok_or_else(|| RequestError::UnknownOutputType(key.into()))?;
    Ok(output_type_of(&r))
}

/// An output type from a row of [`sql::OUTPUT_TYPE`].
fn output_type_of(r: &tokio_postgres::Row) -> OutputType {
    let workflow_id: Option<Uuid> = r.get(4);
    OutputType {
        key: r.get(0),
        family: Family::parse(r.get(2)).unwrap_or(Family::OrderLine),
        artifact_kind: r.get(3),
        workflow: workflow_id.map(|id| (id, r.get(5))),
        overrides: r.get(6),
        legacy_preset: r.get(7),
        mode: r.get(8),
        shadow_pct: r.get(9),
        noise_pct: serde_json::from_value::<renderfleet_shared::gate::GateConfig>(r.get(10)).map(|g| g.noise_sample_pct).unwrap_or(0.0),
        default_priority: r.get::<_, Option<i16>>("default_priority").and_then(Priority::from_rank).unwrap_or_default(),
    }
}

/// The bound workflow with the output type's overrides applied, planned.
async fn graph_run(pool: &Pool, ot: &OutputType, defaults: NodeDefaults) -> Result<Planned, RequestError> {
    let Some((id, pinned)) = ot.workflow else {
        return Err(RequestError::UnknownOutputType(format!("{} (graph mode without a workflow)", ot.key)));
    };
    let client = pool.get().await?;
    let row = match pinned {
        Some(v) => client.query_opt(sql::WORKFLOW_VERSION, &[&id, &v]).await?,
        None => client.query_opt(sql::WORKFLOW_LATEST, &[&id]).await?,
    };
    let fail = |reason: String, problems: Vec<Problem>| RequestError::Workflow { key: ot.key.clone(), workflow: id, reason, problems };
    let row = row.ok_or_else(|| fail("it does not exist (any more)".into(), Vec::new()))?;
    let version: i32 = row.get(1);
    let graph: GraphSpec =
        serde_json::from_value(row.get(4)).map_err(|e| fail(format!("its stored graph is unreadable ({e})"), Vec::new()))?;
    let graph =
        overrides::apply(&graph, &ot.overrides, registry()).map_err(|p| fail("the invocation overrides do not fit it".into(), p))?;
    let (plan, stored) = plan_of(&graph, defaults).map_err(|p| fail("it does not validate; fix or repair it".into(), p))?;
    Ok((plan, stored, Some((id, version))))
}

/// Creates the render request and its runs and hands their ready tasks to the publisher
/// (`hot`) once committed, or finds the first answer for its key.
pub async fn create(pool: &Pool, hot: &Hot, req: &Request<'_>, defaults: NodeDefaults) -> Result<Outcome, RequestError> {
    let ot = load_output_type(pool, req.output_type).await?;
    let fingerprint = json!({"order_line_id": req.order_line_id, "subject": req.subject, "output_type": req.output_type});
    // What to run, decided before the transaction (reads only).
    let legacy = || -> Result<Planned, RequestError> {
        let (plan, stored) = plan_of(&legacy_graph(&ot), defaults).map_err(|p| RequestError::Workflow {
            key: ot.key.clone(),
            workflow: Uuid::nil(),
            reason: "its legacy preset does not form a valid legacy run".into(),
            problems: p,
        })?;
        Ok((plan, stored, None))
    };
    let mut runs: Vec<(Planned, &'static str, &'static str)> = Vec::new();
    match ot.mode.as_str() {
        "graph" => runs.push((graph_run(pool, &ot, defaults).await?, "graph", "authoritative")),
        "shadow" => {
            runs.push((legacy()?, "legacy", "authoritative"));
            if sampled(req.idempotency_key, ot.shadow_pct) {
                // A broken candidate must never cost the order its (legacy) render.
                match graph_run(pool, &ot, defaults).await {
                    Ok(planned) => runs.push((planned, "graph", "shadow")),
                    Err(RequestError::Db(e)) => return Err(RequestError::Db(e)),
                    Err(e) => tracing::error!(output_type = %ot.key, error = %e, "no shadow run: the bound workflow cannot run"),
                }
            }
            // A second legacy run on a sample measures legacy against itself: the noise
            // floor the gate subtracts (A/A). Sampled apart from the shadow runs.
            if sampled(&format!("{}/noise", req.idempotency_key), ot.noise_pct) {
                runs.push((legacy()?, "legacy", "shadow"));
            }
        }
        _ => runs.push((legacy()?, "legacy", "authoritative")),
    }

    let priority = req.priority.unwrap_or(ot.default_priority);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let request_id = Uuid::now_v7();
    let inserted = tx
        .query_opt(
            sql::INSERT_REQUEST,
            &[
                &request_id,
                &req.idempotency_key,
                &req.order_line_id,
                req.subject,
                &req.output_type,
                &fingerprint,
                &priority.rank(),
                &req.submitter,
            ],
        )
        .await?;
    if inserted.is_none() {
        let row = tx.query_one(sql::REQUEST_BY_KEY, &[&req.idempotency_key, &fingerprint]).await?;
        let (id, same): (Uuid, bool) = (row.get(0), row.get(1));
        return if same { Ok(Outcome::Existing(id)) } else { Err(RequestError::KeyReused(id)) };
    }
    let mut created = Vec::new();
    let mut ready = Vec::new();
    for ((plan, stored, workflow), pipeline, role) in &runs {
        let meta = RunMeta {
            pipeline,
            role,
            request_id: Some(request_id),
            output_type_key: Some(&ot.key),
            workflow: *workflow,
            cache: req.cache,
            priority: if *role == "shadow" { shadow_priority(priority) } else { priority },
            submitter: req.submitter,
        };
        let (run_id, r) =
            insert_run(&tx, plan, stored, req.subject, None, meta).await?.expect("runs of a request carry no key of their own");
        created.push(RunCreated { run_id, pipeline, role });
        ready.extend(r);
    }
    tx.commit().await?;
    hot.send(ready);
    metrics::counter!(m::RUNS_TOTAL, "status" => "created").increment(created.len() as u64);
    Ok(Outcome::New { request_id, mode: ot.mode, runs: created })
}

/// The legacy run that answers a request whose authoritative graph run failed (graph mode),
/// written inside `tx`, the transaction that fails the graph run, so the two happen
/// together or not at all. `None` when the request has one already (its key
/// `fallback:<request>` is taken) or when the legacy run cannot be planned (logged: the
/// request then answers with the failed graph run).
pub async fn insert_fallback(
    tx: &Transaction<'_>,
    request_id: Uuid,
    defaults: NodeDefaults,
) -> Result<Option<(String, Vec<Ready>)>, DbError> {
    let Some(req) = tx.query_opt(sql::REQUEST_FOR_FALLBACK, &[&request_id]).await? else { return Ok(None) };
    let (subject, key, submitter): (Value, String, String) = (req.get("subject"), req.get("output_type_key"), req.get("submitter"));
    let priority = Priority::from_rank(req.get("priority")).unwrap_or_default();
    let cache = CacheMode::parse(req.get("cache_mode")).unwrap_or_default();
    let Some(row) = tx.query_opt(sql::OUTPUT_TYPE, &[&key]).await? else { return Ok(None) };
    let ot = output_type_of(&row);
    let (plan, stored) = match plan_of(&legacy_graph(&ot), defaults) {
        Ok(p) => p,
        Err(problems) => {
            tracing::error!(output_type = %key, %request_id, ?problems, "the legacy fallback cannot be planned; the request answers with its failed graph run");
            return Ok(None);
        }
    };
    let meta = RunMeta {
        pipeline: "legacy",
        role: "fallback",
        request_id: Some(request_id),
        output_type_key: Some(&key),
        workflow: None,
        cache,
        priority,
        submitter: &submitter,
    };
    let run_key = format!("fallback:{request_id}");
    Ok(insert_run(tx, &plan, &stored, &subject, Some(&run_key), meta).await?.map(|(_, ready)| (key, ready)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_stable_per_key_and_near_the_share() {
        assert_eq!(sampled("order-1", 30.0), sampled("order-1", 30.0));
        assert!(!sampled("order-1", 0.0) && sampled("order-1", 100.0));
        let hits = (0..10_000).filter(|i| sampled(&format!("k{i}"), 25.0)).count();
        assert!((2_300..2_700).contains(&hits), "{hits} of 10000 at 25%");
    }
}
