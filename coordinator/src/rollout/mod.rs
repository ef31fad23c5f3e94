//! The rollout reconciler (DESIGN §3, §8): what happens after the runs of a render request
//! end. It compares shadow pairs (graph against legacy, and legacy against legacy for the
//! noise floor), records verdicts, rolls an output type back when its graph runs fail too
//! often, and keeps the gate and mode gauges current. (The legacy fallback of a failed graph
//! run is written by the result consumer, in the transaction that fails the run.)
//!
//! It is woken when a request's run ends and also runs every `rollout.interval`. Every step
//! is idempotent (a comparison is unique per request and kind, a compare run has an
//! idempotency key), so two coordinators, a crash, or a missed wake-up change nothing but
//! the timing. Mode changes ([`set_mode`]) lock the output type and write a
//! `rollout_events` row in the same transaction.

use crate::db::{sql, DbError};
use crate::dispatch::{self, RunMeta};
use renderfleet_shared::scheduling::Priority;

/// The submitter comparison runs count against.
const COMPARISONS: &str = "rollout";
use crate::AppState;
use deadpool_postgres::GenericClient;
use renderfleet_shared::gate::{self, GateConfig, GateInput, GateResult, GateStatus, Verdict};
use renderfleet_shared::graph::{GraphSpec, NodeSpec, Plan, PlannedNode};
use renderfleet_shared::metrics as m;
use renderfleet_shared::registry::{module, registry};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Reconciles until `cancel`.
pub async fn run(state: AppState, cancel: CancellationToken) {
    let interval = state.config.rollout.interval;
    let mut gauges_due = tokio::time::Instant::now();
    loop {
        reconcile(&state).await;
        // Gates and gauges on the timer only: a busy fleet wakes the reconciler often.
        if tokio::time::Instant::now() >= gauges_due {
            if let Err(e) = refresh(&state).await {
                tracing::warn!(error = %e, "rollout gates could not be refreshed; will retry");
            }
            gauges_due = tokio::time::Instant::now() + interval;
        }
        tokio::select! {
            _ = state.rollout_kick.notified() => {}
            _ = tokio::time::sleep_until(gauges_due) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// One pass over the comparisons that may be due. A row that fails is logged and left for
/// the next pass; it never holds back the others.
pub async fn reconcile(state: &AppState) {
    let lookback = state.config.rollout.lookback.as_secs_f64();
    let rows = async {
        let client = state.pool.get().await?;
        let pairs = client.query(sql::PAIRS_DUE, &[&lookback]).await?;
        let done = client.query(sql::COMPARES_DONE, &[]).await?;
        Ok::<_, DbError>((pairs, done))
    };
    let (pairs, done) = match rows.await {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "rollout reconciliation failed; will retry"),
    };
    for row in &pairs {
        if let Err(e) = start_comparison(state, row).await {
            tracing::warn!(error = %e, request = %row.get::<_, Uuid>(0), "a shadow comparison could not be started; will retry");
        }
    }
    for row in &done {
        if let Err(e) = decide(state, row).await {
            tracing::warn!(error = %e, comparison = %row.get::<_, Uuid>(0), "a comparison could not be decided; will retry");
        }
    }
}

fn gate_config(v: &Value) -> GateConfig {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// A pair whose runs have ended: decided at once when a side failed, else compared by a
/// `compare` task.
async fn start_comparison(state: &AppState, row: &tokio_postgres::Row) -> Result<(), DbError> {
    let (request, key): (Uuid, String) = (row.get(0), row.get(1));
    let (control, control_status, control_s): (Uuid, String, Option<f64>) = (row.get(2), row.get(3), row.get(4));
    let (candidate, candidate_status, candidate_s): (Uuid, String, Option<f64>) = (row.get(5), row.get(6), row.get(7));
    let (kind, artifact_kind): (String, String) = (row.get(8), row.get(9));
    let cfg = gate_config(&row.get(10));
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let (mut control_node, mut candidate_node) = (None, None);
    let verdict = if control_status != "succeeded" {
        Some((Verdict::ControlError, json!({"reason": format!("the legacy run {control} {control_status}")})))
    } else if candidate_status != "succeeded" {
        Some((Verdict::CandidateError, json!({"reason": format!("the candidate run {candidate} {candidate_status}")})))
    } else {
        control_node = tx.query_opt(sql::DELIVERABLE, &[&control, &artifact_kind]).await?.map(|r| r.get::<_, Uuid>(0));
        candidate_node = tx.query_opt(sql::DELIVERABLE, &[&candidate, &artifact_kind]).await?.map(|r| r.get::<_, Uuid>(0));
        match (control_node, candidate_node) {
            (None, _) => Some((Verdict::ControlError, json!({"reason": format!("the legacy run delivered no `{artifact_kind}`")}))),
            (_, None) => Some((Verdict::CandidateError, json!({"reason": format!("the graph run delivered no `{artifact_kind}`")}))),
            _ => None,
        }
    };
    let id = Uuid::now_v7();
    let (status, verdict_str, metrics) = match &verdict {
        Some((v, metrics)) => ("done", Some(v.as_str()), metrics.clone()),
        None => ("comparing", None, json!({})),
    };
    let inserted = tx
        .query_opt(
            sql::INSERT_COMPARISON,
            &[&id, &request, &key, &kind, &control, &candidate, &status, &verdict_str, &metrics, &control_s, &candidate_s],
        )
        .await?;
    if inserted.is_none() {
        return Ok(()); // another coordinator got there first
    }
    let mut ready = Vec::new();
    if let (Some(c), Some(d)) = (control_node, candidate_node) {
        let plan = compare_plan(&cfg);
        let graph = serde_json::to_value(&plan.graph).expect("graph serializes");
        // Like the shadow runs it measures, a comparison waits behind the orders.
        let meta = RunMeta {
            role: "comparison",
            request_id: Some(request),
            output_type_key: Some(&key),
            priority: Priority::Bulk,
            submitter: COMPARISONS,
            ..RunMeta::DIRECT
        };
        let subject = json!({"comparison": id, "control_run": control, "candidate_run": candidate});
        let run_key = format!("compare:{id}");
        if let Some((run, r)) = dispatch::insert_run(&tx, &plan, &graph, &subject, Some(&run_key), meta).await? {
            // Bound in the same transaction: the task's inputs are resolved after the commit.
            let bindings = json!({"control": {"node_run": c, "port": "artifact"}, "candidate": {"node_run": d, "port": "artifact"}});
            tx.execute(sql::START_COMPARE, &[&id, &run, &bindings]).await?;
            ready = r;
        }
    }
    tx.commit().await?;
    state.hot.send(ready);
    if let Some((v, _)) = verdict {
        metrics::counter!(m::COMPARISONS_TOTAL, "output_type" => key.clone(), "kind" => kind.clone(), "verdict" => v.as_str()).increment(1);
        tracing::info!(output_type = %key, %kind, %request, verdict = v.as_str(), "comparison decided");
    }
    Ok(())
}

/// The compare run of a comparison: one `compare.artifacts` node, its thresholds from the
/// output type's gate config, its inputs bound to the two deliverables afterwards.
fn compare_plan(cfg: &GateConfig) -> Plan {
    let params = registry().with_defaults(
        "compare.artifacts",
        &json!({"fail": cfg.fail, "fail_percent": cfg.fail_percent, "hard_fail": cfg.hard_fail, "frame_sample": cfg.frame_sample}),
    );
    let t = registry().get("compare.artifacts").expect("a registered type");
    let node = PlannedNode {
        id: "compare".into(),
        module_key: module::COMPARE,
        params: params.clone(),
        max_attempts: 3,
        timeout: Duration::from_secs(t.default_timeout_s.unwrap_or(600)),
        deps: 0,
        successors: Vec::new(),
        inputs: Vec::new(),
    };
    let spec =
        NodeSpec { id: "compare".into(), node_type: "compare.artifacts".into(), params, max_attempts: None, timeout: None, position: None };
    Plan { nodes: vec![node], graph: GraphSpec { family: None, nodes: vec![spec], edges: Vec::new() }, family: None, warnings: Vec::new() }
}

/// Records the verdict of a finished compare run.
async fn decide(state: &AppState, row: &tokio_postgres::Row) -> Result<(), DbError> {
    let (id, key, kind, node_status): (Uuid, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let outputs: Option<Value> = row.get(4);
    let error: Option<Value> = row.get(5);
    let client = state.pool.get().await?;
    let cfg = gate_config(&row.get(6));
    let mut rule: Option<String> = None;
    let (status, verdict, metrics, diff) = match outputs.filter(|_| node_status == "succeeded") {
        Some(o) if o["verdict"] == "match" || o["verdict"] == "mismatch" => {
            let mut verdict = o["verdict"].as_str().unwrap_or_default().to_string();
            if verdict == Verdict::Mismatch.as_str() {
                if let Some(r) = gate::ignored_by(&cfg.ignore_rules, &o["metrics"]) {
                    verdict = Verdict::Ignored.as_str().into();
                    rule = Some(r.name.clone());
                }
            }
            let diff = o["diff"]["sha256"].as_str().map(String::from);
            let mut metrics = o["metrics"].clone();
            if let Some(r) = o.get("report") {
                metrics["report"] = r.clone();
            }
            ("done", Some(verdict), metrics, diff)
        }
        // The comparison itself failed (a store outage, a bug) or answered something this
        // coordinator does not know: kept out of the gate.
        Some(o) => ("failed", None, json!({"error": format!("the compare task answered an unknown verdict {}", o["verdict"])}), None),
        None => ("failed", None, json!({"error": error}), None),
    };
    let changed = client.execute(sql::DECIDE_COMPARISON, &[&id, &status, &verdict, &metrics, &diff, &rule]).await?;
    if changed == 1 {
        if let Some(v) = &verdict {
            metrics::counter!(m::COMPARISONS_TOTAL, "output_type" => key.clone(), "kind" => kind.clone(), "verdict" => v.clone())
                .increment(1);
            let worst = metrics.get("worst").unwrap_or(&metrics);
            if let Some(f) = worst["fail_share"].as_f64() {
                metrics::histogram!(m::COMPARISON_FAIL_RATIO, "output_type" => key.clone()).record(f);
            }
            if let Some(r) = worst["rmse"].as_f64() {
                metrics::histogram!(m::COMPARISON_RMSE, "output_type" => key.clone()).record(r);
            }
        }
        tracing::info!(output_type = %key, %kind, comparison = %id, status, verdict = ?verdict, "comparison decided");
    }
    Ok(())
}

/// In `graph` mode, too many failed graph runs since the promotion send the output type
/// back to `legacy` (the fallbacks have already answered their requests).
async fn auto_rollback(state: &AppState, client: &impl GenericClient, key: &str, cfg: &GateConfig) -> Result<(), DbError> {
    let r = client.query_one(sql::GRAPH_FAILURES, &[&key, &i64::from(cfg.window)]).await?;
    let (ended, failed): (i64, i64) = (r.get(0), r.get(1));
    let rate = if ended > 0 { failed as f64 / ended as f64 } else { 0.0 };
    if ended < i64::from(cfg.min_samples) || rate <= cfg.max_graph_failure_rate {
        return Ok(());
    }
    let reason = format!(
        "automatic: {failed} of the last {ended} graph runs failed ({:.1}%, limit {:.1}%)",
        rate * 100.0,
        cfg.max_graph_failure_rate * 100.0
    );
    let snapshot = json!({"graph_runs": ended, "graph_failures": failed, "failure_rate": rate, "limit": cfg.max_graph_failure_rate});
    match set_mode(state, key, Some("graph"), "legacy", &reason, "auto", false, snapshot).await {
        Ok(_) => tracing::error!(output_type = %key, %reason, "rolled back to legacy"),
        Err(ModeError::Db(e)) => return Err(e),
        Err(e) => tracing::warn!(output_type = %key, error = %e, "automatic rollback not applied"),
    }
    Ok(())
}

/// The gate of an output type as it stands.
pub async fn gate(client: &impl GenericClient, key: &str, cfg: &GateConfig) -> Result<GateResult, DbError> {
    let r = client.query_one(sql::GATE_INPUT, &[&key, &i64::from(cfg.window)]).await?;
    let n = |i: usize| r.get::<_, i64>(i) as u32;
    let input = GateInput {
        matches: n(0),
        mismatches: n(1),
        candidate_errors: n(2),
        control_errors: n(3),
        ignored: n(4),
        noise_samples: n(5),
        noise_mismatches: n(6),
        candidate_p95_s: r.get(7),
        control_p95_s: r.get(8),
    };
    Ok(gate::evaluate(cfg, &input))
}

/// 1 for the output type's current mode, 0 for the others.
fn mode_gauges(key: &str, mode: &str) {
    for m_ in ["legacy", "shadow", "graph"] {
        metrics::gauge!(m::ROLLOUT_MODE, "output_type" => key.to_string(), "mode" => m_).set(f64::from(u8::from(m_ == mode)));
    }
}

/// Per output type: the automatic rollback check in `graph` mode, and the mode and gate
/// gauges.
async fn refresh(state: &AppState) -> Result<(), DbError> {
    let client = state.pool.get().await?;
    for row in client.query(sql::ROLLOUT_STATES, &[]).await? {
        let (key, mut mode): (String, String) = (row.get(0), row.get(1));
        let cfg = gate_config(&row.get(2));
        if mode == "graph" {
            auto_rollback(state, &client, &key, &cfg).await?;
            mode = client.query_opt(sql::OUTPUT_TYPE, &[&key]).await?.map(|r| r.get(8)).unwrap_or(mode);
        }
        let g = gate(&client, &key, &cfg).await?;
        for s in GateStatus::ALL {
            metrics::gauge!(m::GATE_STATUS, "output_type" => key.clone(), "status" => s.as_str()).set(f64::from(u8::from(s == g.status)));
        }
        metrics::gauge!(m::GATE_MISMATCH_RATIO, "output_type" => key.clone()).set(g.net_mismatch_rate);
        mode_gauges(&key, &mode);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("no output type `{0}`; `GET /v1/output-types` lists them")]
    Unknown(String),
    #[error("output type `{key}` is `{mode}`: {why}")]
    Refused { key: String, mode: String, why: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ModeError {
    fn from(e: tokio_postgres::Error) -> Self {
        ModeError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for ModeError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ModeError::Db(e.into())
    }
}

/// A recorded mode change.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ModeChange {
    pub output_type: String,
    pub from_mode: String,
    pub to_mode: String,
    pub event_id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Moves output type `key` to `to` and records why, in one transaction; with
/// `expected_from`, only if the mode under the lock is still that one (the gate was judged
/// for it). The very next render request reads the new mode: nothing is cached.
#[allow(clippy::too_many_arguments)]
pub async fn set_mode(
    state: &AppState,
    key: &str,
    expected_from: Option<&str>,
    to: &str,
    reason: &str,
    actor: &str,
    forced: bool,
    snapshot: Value,
) -> Result<ModeChange, ModeError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx.query_opt(sql::LOCK_MODE, &[&key]).await?.ok_or_else(|| ModeError::Unknown(key.into()))?;
    let from: String = row.get(0);
    let workflow: Option<Uuid> = row.get(1);
    if from == to {
        return Err(ModeError::Refused { key: key.into(), mode: from, why: format!("it is already `{to}`") });
    }
    if let Some(expected) = expected_from.filter(|e| *e != from) {
        return Err(ModeError::Refused {
            key: key.into(),
            mode: from.clone(),
            why: format!(
                "it was `{expected}` when this change was decided and has moved since; look again (`renderctl rollout status {key}`)"
            ),
        });
    }
    if to != "legacy" && workflow.is_none() {
        return Err(ModeError::Refused {
            key: key.into(),
            mode: from,
            why: "it has no bound workflow; bind one (PUT /v1/output-types/{key}) before shadowing or promoting".into(),
        });
    }
    tx.execute(sql::SET_MODE, &[&key, &to]).await?;
    let ev = tx.query_one(sql::INSERT_ROLLOUT_EVENT, &[&key, &from, &to, &reason, &actor, &forced, &snapshot]).await?;
    tx.commit().await?;
    if to == "legacy" {
        let why = if actor == "auto" { "auto" } else { "manual" };
        metrics::counter!(m::ROLLBACKS_TOTAL, "output_type" => key.to_string(), "reason" => why).increment(1);
    }
    mode_gauges(key, to);
    tracing::warn!(output_type = %key, from = %from, to = %to, %actor, forced, %reason, "rollout mode changed");
    Ok(ModeChange { output_type: key.into(), from_mode: from, to_mode: to.into(), event_id: ev.get(0), at: ev.get(1) })
}

/// An output type's mode, gate config and gate as they stand; `None` for an unknown key.
pub async fn state_of(client: &impl GenericClient, key: &str) -> Result<Option<(String, GateConfig, GateResult)>, DbError> {
    let Some(row) = client.query_opt(sql::OUTPUT_TYPE, &[&key]).await? else { return Ok(None) };
    let cfg = gate_config(&row.get(10));
    let gate = gate(client, key, &cfg).await?;
    Ok(Some((row.get(8), cfg, gate)))
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("the gate of `{key}` is `{}`: {}; promote when it passes, or force with a reason", gate.status.as_str(), gate.reasons.join("; "))]
    GateNotPassing { key: String, gate: Box<GateResult> },
    #[error("a forced promotion needs a `reason`; it is recorded with the gate's numbers")]
    ReasonRequired,
    #[error(transparent)]
    Mode(#[from] ModeError),
}

/// The one promotion policy (API and console): `legacy → shadow` always (a workflow must be
/// bound); `shadow → graph` only when the gate passes, unless forced with a reason, which is
/// recorded. The mode is re-checked under the lock by [`set_mode`].
pub async fn promote(state: &AppState, key: &str, force: bool, reason: Option<String>, actor: &str) -> Result<ModeChange, PromoteError> {
    let client = state.pool.get().await.map_err(ModeError::from)?;
    let (mode, _, gate) = state_of(&client, key).await.map_err(ModeError::from)?.ok_or_else(|| ModeError::Unknown(key.into()))?;
    drop(client); // set_mode takes a connection of its own
    let passes = gate.status == GateStatus::Pass;
    let (to, reason) = match mode.as_str() {
        "legacy" => ("shadow", reason.unwrap_or_else(|| "start shadowing".into())),
        "shadow" => {
            let reason = reason.filter(|r| !r.trim().is_empty());
            if force && reason.is_none() {
                return Err(PromoteError::ReasonRequired);
            }
            if !passes && !force {
                return Err(PromoteError::GateNotPassing { key: key.into(), gate: Box::new(gate) });
            }
            ("graph", reason.unwrap_or_else(|| "the gate passes".into()))
        }
        other => {
            return Err(ModeError::Refused { key: key.into(), mode: other.into(), why: "it is already on the graph pipeline".into() }.into())
        }
    };
    let snapshot = serde_json::to_value(&gate).expect("gate serializes");
    Ok(set_mode(state, key, Some(&mode), to, &reason, actor, force && !passes, snapshot).await?)
}
