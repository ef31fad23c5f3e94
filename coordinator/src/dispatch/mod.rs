//! Turns a validated graph into a run: the run, all its node_runs with their dependency
//! counters, and outbox rows for the nodes that are ready now, in one transaction.
//! Nothing is published here; the outbox publisher does that after the commit.

use crate::db::{sql, DbError};
use crate::outbox::{self, Ready, LEASE};
use deadpool_postgres::Pool;
use renderfleet_shared::graph::Plan;
use renderfleet_shared::metrics as m;
use renderfleet_shared::wire::{TaskMessage, WIRE_VERSION};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// What [`create_run`] did.
#[derive(Debug)]
pub enum Created {
    /// A new run, and its ready tasks for the publisher (leased to this coordinator).
    New(Uuid, Vec<Ready>),
    /// The idempotency key was used before for the same request: that run.
    Existing(Uuid),
    /// The idempotency key was used before for a different request.
    KeyReused(Uuid),
}

/// Creates the run. With an idempotency key, a repeated request returns the first run.
pub async fn create_run(pool: &Pool, plan: &Plan, graph: &Value, subject: &Value, key: Option<&str>) -> Result<Created, DbError> {
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
    let ready: Vec<TaskMessage> = plan
        .ready()
        .map(|i| TaskMessage {
            v: WIRE_VERSION,
            run_id,
            node_run_id: ids[i],
            node_id: plan.nodes[i].id.clone(),
            module_key: plan.nodes[i].module_key.to_string(),
            attempt: 1,
            params: plan.nodes[i].params.clone(),
            timeout_ms: timeouts[i] as u64,
        })
        .collect();

    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let nodes_total = plan.nodes.len() as i32;
    if tx.query_opt(sql::INSERT_RUN, &[&run_id, subject, graph, &nodes_total, &key]).await?.is_none() {
        let row = tx.query_one(sql::RUN_BY_KEY, &[&key, subject, graph]).await?;
        let (id, same): (Uuid, bool) = (row.get(0), row.get(1));
        return Ok(if same { Created::Existing(id) } else { Created::KeyReused(id) });
    }
    tx.execute(sql::INSERT_NODE_RUNS, &[&run_id, &ids, &node_ids, &modules, &params, &successors, &max_attempts, &timeouts, &deps]).await?;
    let ready = outbox::enqueue(&tx, ready, Duration::ZERO, Some(LEASE)).await?;
    tx.commit().await?;
    metrics::counter!(m::RUNS_TOTAL, "status" => "created").increment(1);
    Ok(Created::New(run_id, ready))
}
