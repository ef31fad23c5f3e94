//! Turns a validated graph into a run: the run, all its node_runs with their dependency
//! counters, and outbox rows for the nodes that are ready now, in one transaction.
//! Nothing is published here: the entry points ([`create_run`], [`request::create`],
//! [`operate::retry`]) hand the ready tasks to this coordinator's publisher after the commit,
//! so no caller can forget; [`insert_run`], for callers with a transaction of their own
//! (rollout's comparisons, results' fallbacks), returns them to hand over after that commit.
//! [`request`] does the same for a render request, whose rollout mode decides the runs.

pub mod operate;
pub mod request;

use crate::db::{sql, DbError};
use crate::outbox::{self, Hot, Ready, LEASE};
use deadpool_postgres::{Pool, Transaction};
use renderfleet_shared::cache::CacheMode;
use renderfleet_shared::chunks;
use renderfleet_shared::graph::{InputBinding, InputSource, Plan};
use renderfleet_shared::metrics as m;
use renderfleet_shared::scheduling::{Priority, ANONYMOUS};
use renderfleet_shared::wire::{TaskMessage, WIRE_VERSION};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// What [`create_run`] did.
#[derive(Debug)]
pub enum Created {
    /// A new run; its ready tasks are with this coordinator's publisher.
    New(Uuid),
    /// The idempotency key was used before for the same request: that run.
    Existing(Uuid),
    /// The idempotency key was used before for a different request.
    KeyReused(Uuid),
}

/// Who a run is for and how it relates to its request.
#[derive(Debug, Clone, Copy)]
pub struct RunMeta<'a> {
    pub pipeline: &'a str,
    pub role: &'a str,
    pub request_id: Option<Uuid>,
    pub output_type_key: Option<&'a str>,
    pub workflow: Option<(Uuid, i32)>,
    /// Whether its nodes may be served from the node result cache.
    pub cache: CacheMode,
    /// Where its tasks go in the queue (`shared::scheduling`).
    pub priority: Priority,
    /// Who it counts against for fair share.
    pub submitter: &'a str,
}

impl RunMeta<'_> {
    /// A run submitted directly (`POST /v1/runs`): an authoritative graph run of its own.
    pub const DIRECT: RunMeta<'static> = RunMeta {
        pipeline: "graph",
        role: "authoritative",
        request_id: None,
        output_type_key: None,
        workflow: None,
        cache: CacheMode::Use,
        priority: Priority::Normal,
        submitter: ANONYMOUS,
    };
}

/// Who submits a run and how urgent it is.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    pub priority: Priority,
    pub submitter: &'a str,
    pub cache: CacheMode,
}

impl Default for Submission<'static> {
    fn default() -> Self {
        Submission { priority: Priority::Normal, submitter: ANONYMOUS, cache: CacheMode::Use }
    }
}

/// Creates the run and hands its ready tasks to the publisher (`hot`) once committed. With
/// an idempotency key, a repeated request returns the first run.
pub async fn create_run(
    pool: &Pool,
    hot: &Hot,
    plan: &Plan,
    graph: &Value,
    subject: &Value,
    key: Option<&str>,
    by: Submission<'_>,
) -> Result<Created, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let meta = RunMeta { cache: by.cache, priority: by.priority, submitter: by.submitter, ..RunMeta::DIRECT };
    let Some((run_id, ready)) = insert_run(&tx, plan, graph, subject, key, meta).await? else {
        let row = tx.query_one(sql::RUN_BY_KEY, &[&key, subject, graph]).await?;
        let (id, same): (Uuid, bool) = (row.get(0), row.get(1));
        return Ok(if same { Created::Existing(id) } else { Created::KeyReused(id) });
    };
    tx.commit().await?;
    hot.send(ready);
    metrics::counter!(m::RUNS_TOTAL, "status" => "created").increment(1);
    Ok(Created::New(run_id))
}

/// Writes a run inside `tx`: the run, its node_runs and the outbox rows of its ready nodes
/// (leased to this coordinator's publisher). `None` when `key` was used before.
pub async fn insert_run(
    tx: &Transaction<'_>,
    plan: &Plan,
    graph: &Value,
    subject: &Value,
    key: Option<&str>,
    meta: RunMeta<'_>,
) -> Result<Option<(Uuid, Vec<Ready>)>, DbError> {
    // Chunked turntables become their chunk tasks here, on every path that creates runs.
    let expanded;
    let plan = if chunks::any(plan) {
        expanded = chunks::expand(plan.clone());
        &expanded
    } else {
        plan
    };
    let run_id = Uuid::now_v7();
    let ids: Vec<Uuid> = plan.nodes.iter().map(|_| Uuid::now_v7()).collect();
    let node_ids: Vec<&str> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
    let modules: Vec<&str> = plan.nodes.iter().map(|n| n.module_key).collect();
    let params: Vec<&Value> = plan.nodes.iter().map(|n| &n.params).collect();
    let successors: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| format!("{{{}}}", n.successors.iter().map(|&s| ids[s].to_string()).collect::<Vec<_>>().join(",")))
        .collect();
    let max_attempts: Vec<i32> = plan.nodes.iter().map(|n| n.max_attempts as i32).collect();
    let timeouts: Vec<i64> = plan.nodes.iter().map(|n| n.timeout.as_millis().max(1) as i64).collect();
    let deps: Vec<i32> = plan.nodes.iter().map(|n| n.deps as i32).collect();
    let bindings: Vec<Value> = plan.nodes.iter().map(|n| bindings(&n.inputs, &ids)).collect();
    let ready: Vec<TaskMessage> = plan
        .ready()
        .map(|i| TaskMessage {
            avoid: Vec::new(),
            cache: None,
            v: WIRE_VERSION,
            run_id,
            node_run_id: ids[i],
            node_id: plan.nodes[i].id.clone(),
            module_key: plan.nodes[i].module_key.to_string(),
            attempt: 1,
            params: plan.nodes[i].params.clone(),
            timeout_ms: timeouts[i] as u64,
            inputs: Default::default(),
        })
        .collect();
    let nodes_total = plan.nodes.len() as i32;
    let (workflow_id, workflow_version) = (meta.workflow.map(|w| w.0), meta.workflow.map(|w| w.1));
    let inserted = tx
        .query_opt(
            sql::INSERT_RUN,
            &[
                &run_id,
                subject,
                graph,
                &nodes_total,
                &key,
                &meta.pipeline,
                &meta.role,
                &meta.request_id,
                &meta.output_type_key,
                &workflow_id,
                &workflow_version,
                &meta.cache.as_str(),
                &meta.priority.rank(),
                &meta.submitter,
            ],
        )
        .await?;
    if inserted.is_none() {
        return Ok(None);
    }
    tx.execute(
        sql::INSERT_NODE_RUNS,
        &[&run_id, &ids, &node_ids, &modules, &params, &successors, &max_attempts, &timeouts, &deps, &bindings],
    )
    .await?;
    let ready = outbox::enqueue(tx, ready, Duration::ZERO, Some(LEASE)).await?;
    Ok(Some((run_id, ready)))
}

/// A node's input bindings as stored in `node_runs.bindings` (see migration V3).
fn bindings(inputs: &[InputBinding], ids: &[Uuid]) -> Value {
    let map = inputs
        .iter()
        .map(|b| {
            let source = match &b.source {
                InputSource::Node { node, port } => serde_json::json!({"node_run": ids[*node], "port": port}),
                InputSource::Context(c) => serde_json::json!({"context": c.port()}),
            };
            (b.port.clone(), source)
        })
        .collect();
    Value::Object(map)
}
