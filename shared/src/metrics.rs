//! Metric names (Prometheus conventions: `renderfleet_` prefix, `_total` counters, `_seconds`
//! histograms). Label values come from small fixed sets: module keys, statuses, never ids.

/// Counter, label `status` (`created|succeeded|failed`). Incremented by the coordinator when a
/// run is created and when it reaches a final status.
pub const RUNS_TOTAL: &str = "renderfleet_runs_total";
/// Counter, labels `module`, `status` (`dispatched|started|succeeded|retried|failed|skipped|lost`).
/// Coordinator: outbox publisher (dispatched) and result consumer (the rest).
pub const NODE_TASKS_TOTAL: &str = "renderfleet_node_tasks_total";
/// Histogram, label `module`: node start → finish, observed when a result is applied.
pub const NODE_DURATION_SECONDS: &str = "renderfleet_node_duration_seconds";
/// Histogram, label `module`: node ready (queued) → started on a worker.
pub const DISPATCH_LATENCY_SECONDS: &str = "renderfleet_dispatch_latency_seconds";
/// Gauge: age of the oldest due outbox row at the last publisher pass, among modules with room
/// in their queue (rows held back for a full queue are counted by [`OUTBOX_HELD_TASKS`]).
pub const OUTBOX_LAG_SECONDS: &str = "renderfleet_outbox_lag_seconds";
/// Gauge, label `module`: ready tasks the scheduler holds in the outbox because the module's
/// broker queue is at its window (`shared::scheduling`): work waiting for the fleet.
pub const OUTBOX_HELD_TASKS: &str = "renderfleet_outbox_held_tasks";
/// Counter: outbox rows published and confirmed by the broker.
pub const OUTBOX_PUBLISHED_TOTAL: &str = "renderfleet_outbox_published_total";
/// Counter, label `outcome` (`applied|ignored`): result messages by effect; `ignored` are
/// duplicates and results of attempts that are no longer current.
pub const RESULTS_TOTAL: &str = "renderfleet_results_total";
/// Histogram: result messages per applied batch.
pub const RESULT_BATCH_SIZE: &str = "renderfleet_result_batch_size";
/// Counter, label `module`: cacheable tasks the outbox publisher served from the node result
/// cache instead of publishing them (see `shared::cache`).
pub const CACHE_HITS_TOTAL: &str = "renderfleet_cache_hits_total";
/// Counter, labels `module`, `reason` (`no_entry|artifact_missing|refresh|fleet_mixed`):
/// cacheable tasks published to workers. `fleet_mixed`: the live workers of the module report
/// different fingerprints (an upgrade in progress) or none is live, so no key can be trusted.
pub const CACHE_MISSES_TOTAL: &str = "renderfleet_cache_misses_total";
/// Counter, label `outcome` (`delivered|retried|given_up`): webhook delivery attempts.
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "renderfleet_webhook_deliveries_total";
/// Counter, label `source` (`worker|coordinator`): messages sent to the dead-letter queue.
pub const DEAD_LETTERED_TOTAL: &str = "renderfleet_dead_lettered_total";
/// Counter, label `component` (`coordinator|worker`): broker (re)connections.
pub const BROKER_CONNECTS_TOTAL: &str = "renderfleet_broker_connects_total";

/// Counter, labels `module`, `outcome` (`succeeded|failed|timeout|cancelled|requeued`):
/// tasks executed by this worker.
pub const WORKER_TASKS_TOTAL: &str = "renderfleet_worker_tasks_total";
pub const WORKER_QUARANTINES_TOTAL: &str = "renderfleet_worker_quarantines_total";
/// Histogram, label `module`: module run time on the worker.
pub const WORKER_TASK_SECONDS: &str = "renderfleet_worker_task_seconds";
/// Gauge: task slots in use on this worker.
pub const WORKER_BUSY_SLOTS: &str = "renderfleet_worker_busy_slots";
/// Gauge: task slots configured on this worker.
pub const WORKER_SLOTS: &str = "renderfleet_worker_slots";

/// Counter, labels `output_type`, `kind` (`shadow|noise`), `verdict`
/// (`match|mismatch|candidate_error|control_error|ignored`): shadow comparisons decided.
pub const COMPARISONS_TOTAL: &str = "renderfleet_comparisons_total";
/// Histogram, label `output_type`: share of failing pixels (0..1) of compared images.
pub const COMPARISON_FAIL_RATIO: &str = "renderfleet_comparison_fail_ratio";
/// Histogram, label `output_type`: RMSE (0..1) of compared images.
pub const COMPARISON_RMSE: &str = "renderfleet_comparison_rmse";
/// Gauge, labels `output_type`, `status` (`pass|fail|insufficient_data`): 1 for the gate's
/// current status, 0 for the others. Refreshed by the rollout reconciler.
pub const GATE_STATUS: &str = "renderfleet_gate_status";
/// Gauge, label `output_type`: the gate's mismatch rate net of the noise floor (0..1).
pub const GATE_MISMATCH_RATIO: &str = "renderfleet_gate_mismatch_ratio";
/// Gauge, labels `output_type`, `mode` (`legacy|shadow|graph`): 1 for the current mode.
pub const ROLLOUT_MODE: &str = "renderfleet_rollout_mode";
/// Counter, label `output_type`: failed authoritative graph runs replaced by a legacy run.
pub const FALLBACKS_TOTAL: &str = "renderfleet_fallbacks_total";
/// Counter, labels `output_type`, `reason` (`manual|auto`): mode changes back to legacy.
pub const ROLLBACKS_TOTAL: &str = "renderfleet_rollbacks_total";

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The unit a metric is measured in, where it has one (Prometheus's base units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Count,
}

/// One metric family: its name, kind, unit and `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, unit: Option<Unit>, help: &'static str) -> Family {
    Family { name, kind, unit, help }
}

use Kind::{Counter, Gauge, Histogram};
const S: Option<Unit> = Some(Unit::Seconds);
const N: Option<Unit> = Some(Unit::Count);

/// Every metric either binary emits, described once at start-up (`platform::telemetry`):
/// Prometheus tooling (`promtool check metrics`) refuses families without HELP text.
pub const FAMILIES: &[Family] = &[
    family(RUNS_TOTAL, Counter, N, "Runs created, and runs that reached a final status, by status."),
    family(
        NODE_TASKS_TOTAL,
        Counter,
        N,
        "Node tasks by module and what happened to them (dispatched, started, succeeded, retried, failed, skipped, lost).",
    ),
    family(NODE_DURATION_SECONDS, Histogram, S, "Node run time from start to finish on a worker, by module."),
    family(DISPATCH_LATENCY_SECONDS, Histogram, S, "Time from a node being ready (queued) to its start on a worker, by module."),
    family(
        OUTBOX_LAG_SECONDS,
        Gauge,
        S,
        "Age of the oldest due outbox row at the last publisher pass, of modules with room in their queue.",
    ),
    family(OUTBOX_HELD_TASKS, Gauge, N, "Ready tasks held in the outbox while their module's broker queue is full, by module."),
    family(OUTBOX_PUBLISHED_TOTAL, Counter, N, "Outbox rows published and confirmed by the broker."),
    family(CACHE_HITS_TOTAL, Counter, N, "Cacheable tasks answered from the node result cache instead of a worker, by module."),
    family(
        CACHE_MISSES_TOTAL,
        Counter,
        N,
        "Cacheable tasks sent to workers, by module and reason (no_entry, artifact_missing, refresh, fleet_mixed).",
    ),
    family(RESULTS_TOTAL, Counter, N, "Result messages by effect: applied, or ignored (duplicates, attempts no longer current)."),
    family(RESULT_BATCH_SIZE, Histogram, N, "Result messages per applied batch."),
    family(WEBHOOK_DELIVERIES_TOTAL, Counter, N, "Webhook delivery attempts by outcome (delivered, retried, given_up)."),
    family(DEAD_LETTERED_TOTAL, Counter, N, "Messages sent to the dead-letter queue, by the component that sent them."),
    family(BROKER_CONNECTS_TOTAL, Counter, N, "Broker connections made (the first and every reconnection), by component."),
    family(WORKER_TASKS_TOTAL, Counter, N, "Tasks this worker executed, by module and outcome."),
    family(
        WORKER_QUARANTINES_TOTAL,
        Counter,
        N,
        "Times this worker quarantined a module that kept failing here for reasons not about the input.",
    ),
    family(WORKER_TASK_SECONDS, Histogram, S, "Module run time on this worker, by module."),
    family(WORKER_BUSY_SLOTS, Gauge, N, "Task slots in use on this worker."),
    family(WORKER_SLOTS, Gauge, N, "Task slots configured on this worker."),
    family(COMPARISONS_TOTAL, Counter, N, "Shadow comparisons decided, by output type, kind (shadow, noise) and verdict."),
    family(COMPARISON_FAIL_RATIO, Histogram, None, "Share of failing pixels (0 to 1) of compared images, by output type."),
    family(COMPARISON_RMSE, Histogram, None, "RMSE (0 to 1) of compared images, by output type."),
    family(
        GATE_STATUS,
        Gauge,
        None,
        "1 for the rollout gate's current status (pass, fail, insufficient_data), 0 for the others, by output type.",
    ),
    family(GATE_MISMATCH_RATIO, Gauge, None, "The rollout gate's mismatch rate net of the noise floor (0 to 1), by output type."),
    family(ROLLOUT_MODE, Gauge, None, "1 for the output type's current rollout mode (legacy, shadow, graph), 0 for the others."),
    family(FALLBACKS_TOTAL, Counter, N, "Failed authoritative graph runs replaced by a legacy run, by output type."),
    family(ROLLBACKS_TOTAL, Counter, N, "Rollout mode changes back to legacy, by output type and reason (manual, auto)."),
];

/// Buckets for ratio histograms (0..1): fine near 0, where matching images sit.
pub const RATIO_BUCKETS: &[f64] = &[0.0, 0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Buckets for `_seconds` histograms: from sub-millisecond hops to hour-long renders.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_name_is_described_once() {
        // The names are the `pub const … = "renderfleet_…"` lines of this file.
        let names: Vec<&str> =
            include_str!("metrics.rs").lines().filter_map(|l| l.split("&str = \"").nth(1)?.strip_suffix("\";")).collect();
        assert!(names.len() >= 22, "{names:?}");
        for name in &names {
            let described: Vec<&Family> = FAMILIES.iter().filter(|f| f.name == *name).collect();
            assert_eq!(described.len(), 1, "{name} must be in FAMILIES exactly once");
            assert!(described[0].help.len() > 10, "{name}: HELP text");
        }
        assert_eq!(FAMILIES.len(), names.len(), "FAMILIES names a metric that has no constant");
        for f in FAMILIES {
            assert_eq!(f.kind == Counter, f.name.ends_with("_total"), "{}: only counters end in _total", f.name);
            assert_eq!(f.unit == S, f.name.ends_with("_seconds"), "{}: `_seconds` is the unit seconds", f.name);
        }
    }
}
