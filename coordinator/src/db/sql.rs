//! Every SQL statement of the coordinator, named. Parameters are listed in each doc comment.
//!
//! Times that order events (queued, finished, outbox rows) are `clock_timestamp()`, the
//! wall clock at the statement: `now()` is the transaction's start, which can precede what
//! the same transaction records as having happened before.

/// $1 id, $2 subject, $3 graph, $4 nodes_total, $5 idempotency key (nullable), $6 pipeline,
/// $7 role, $8 render request, $9 output type key, $10 workflow id, $11 workflow version
/// (the last four nullable), $12 cache mode. No row when a run with the same key exists.
pub const INSERT_RUN: &str = "
INSERT INTO runs (id, subject, graph, nodes_total, idempotency_key, pipeline, role, request_id, output_type_key,
                  workflow_id, workflow_version, cache_mode, priority, submitter)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

/// The run created earlier with key $1, and whether it was for the same subject $2 and graph $3.
pub const RUN_BY_KEY: &str = "SELECT id, subject = $2 AND graph = $3 FROM runs WHERE idempotency_key = $1";

/// All node_runs of a run in one statement. $1 run_id, then parallel arrays:
/// $2 ids, $3 node ids, $4 module keys, $5 params, $6 successors (as '{..}' literals),
/// $7 max_attempts, $8 timeout_ms, $9 unmet_deps, $10 input bindings.
pub const INSERT_NODE_RUNS: &str = "
INSERT INTO node_runs (id, run_id, node_id, module_key, params, successors, status, max_attempts, timeout_ms, unmet_deps, queued_at,
                       bindings)
SELECT t.id, $1, t.node_id, t.module_key, t.params, t.successors::uuid[],
       CASE WHEN t.deps = 0 THEN 'queued' ELSE 'pending' END, t.max_attempts, t.timeout_ms, t.deps,
       CASE WHEN t.deps = 0 THEN clock_timestamp() END, t.bindings
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::int4[], $8::int8[], $9::int4[], $10::jsonb[])
     AS t(id, node_id, module_key, params, successors, max_attempts, timeout_ms, deps, bindings)";

/// The inputs of node_runs $1, resolved from their bindings: upstream outputs by port, the
/// run's subject, and the subject product's material map with the library.
pub const RESOLVE_INPUTS: &str = "
SELECT n.id, jsonb_object_agg(b.key,
  CASE b.value->>'context'
    WHEN 'subject' THEN r.subject
    WHEN 'product_materials' THEN jsonb_build_object(
      'product', r.subject->>'product',
      'assignments', coalesce((SELECT jsonb_object_agg(m.target, m.material) FROM product_material_maps m
                               WHERE m.product = r.subject->>'product'), '{}'),
      'library', coalesce((SELECT jsonb_object_agg(l.name, jsonb_build_object('base_color', l.base_color,
                           'metallic', l.metallic, 'roughness', l.roughness)) FROM materials l), '{}'))
    ELSE coalesce(p.outputs -> (b.value->>'port'), 'null')
  END)
FROM node_runs n JOIN runs r ON r.id = n.run_id
CROSS JOIN LATERAL jsonb_each(n.bindings) b
LEFT JOIN node_runs p ON p.id = (b.value->>'node_run')::uuid
WHERE n.id = ANY($1)
GROUP BY n.id";

/// Artifacts named by results. Parallel arrays: $1 sha256, $2 kind, $3 bytes, $4 mime,
/// $5 meta, $6 node_run. The first producer is kept.
pub const RECORD_ARTIFACTS: &str = "
INSERT INTO artifacts (sha256, kind, bytes, mime, meta, first_node_run)
SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::jsonb[], $6::uuid[])
ON CONFLICT (sha256) DO NOTHING";

/// Tasks for the outbox. Parallel arrays: $1 node_run ids, $2 attempts, $3 routing keys,
/// $4 delay in seconds before publishing; $5 lease in seconds (0: none) for a publisher that
/// sends them itself right after the commit. Returns the ids of the rows written.
pub const ENQUEUE: &str = "
INSERT INTO outbox (node_run_id, attempt, routing_key, not_before, claimed_until, priority, submitter, tag)
SELECT t.id, t.attempt, t.rk, clock_timestamp() + make_interval(secs => t.delay),
       CASE WHEN $5::float8 > 0 THEN clock_timestamp() + make_interval(secs => $5::float8) END,
       r.priority, r.submitter,
       outbox_tag_base(t.rk, r.priority, r.submitter) + row_number() OVER (PARTITION BY t.rk, r.priority, r.submitter ORDER BY t.id)
FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::float8[]) AS t(id, attempt, rk, delay)
JOIN node_runs n ON n.id = t.id JOIN runs r ON r.id = n.run_id
ON CONFLICT (node_run_id, attempt) DO NOTHING
RETURNING id, node_run_id";

/// Claims due, unleased rows for publishing, with what their messages need; other
/// coordinators skip them. $1 limit.
pub const CLAIM_DUE: &str = "
SELECT o.id, o.node_run_id, n.run_id, n.node_id, o.routing_key, n.params, o.attempt, n.timeout_ms,
       extract(epoch FROM now() - greatest(o.not_before, coalesce(o.claimed_until, o.not_before)))::float8 AS lag
FROM outbox o JOIN node_runs n ON n.id = o.node_run_id
WHERE o.sent_at IS NULL AND o.not_before <= now() AND (o.claimed_until IS NULL OR o.claimed_until < now())
ORDER BY o.not_before, o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED";

/// Of modules $1, those with due, unleased rows (rows held back for their window, or for a
/// publisher to take).
pub const MODULES_WAITING: &str = "
SELECT m FROM unnest($1::text[]) AS m
WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.routing_key = m AND o.sent_at IS NULL AND o.not_before <= now()
              AND (o.claimed_until IS NULL OR o.claimed_until < now()))";

/// [`CLAIM_DUE`] with a quota per module, for the scheduler: at most $2[i] rows of module
/// $1[i], the highest priority first, then the lowest fair-queueing tag (migration V11);
/// none of submitter $4[j] for module $3[j] (at its limit).
pub const CLAIM_SCHEDULED: &str = "
SELECT c.id, c.node_run_id, n.run_id, n.node_id, c.routing_key, n.params, c.attempt, n.timeout_ms, c.lag, c.submitter
FROM unnest($1::text[], $2::int4[]) AS q(module, quota)
CROSS JOIN LATERAL (
  SELECT o.id, o.node_run_id, o.routing_key, o.attempt, o.submitter,
         extract(epoch FROM now() - greatest(o.not_before, coalesce(o.claimed_until, o.not_before)))::float8 AS lag
  FROM outbox o
  WHERE o.routing_key = q.module AND o.sent_at IS NULL AND o.not_before <= now()
    AND (o.claimed_until IS NULL OR o.claimed_until < now())
    AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS x(module, submitter)
                    WHERE x.module = o.routing_key AND x.submitter = o.submitter)
  ORDER BY o.priority DESC, o.tag, o.id
  LIMIT q.quota
  FOR UPDATE OF o SKIP LOCKED
) c
JOIN node_runs n ON n.id = c.node_run_id";

/// Per module of $1 and submitter: tasks started and not ended, plus tasks sent and not yet
/// started (what counts against a submitter's limit).
pub const IN_FLIGHT: &str = "
SELECT n.module_key, r.submitter, count(*)::int8 AS tasks
FROM node_runs n JOIN runs r ON r.id = n.run_id
WHERE n.module_key = ANY($1) AND (n.status = 'running' OR (n.status = 'queued' AND EXISTS (
  SELECT 1 FROM outbox o WHERE o.node_run_id = n.id AND o.attempt = n.attempt AND o.sent_at IS NOT NULL)))
GROUP BY 1, 2";

/// Live worker slots per module (a heartbeat within $1 seconds, not stopped).
pub const LIVE_SLOTS: &str = "
SELECT m AS module, sum(w.concurrency)::int8 AS slots
FROM workers w CROSS JOIN LATERAL unnest(w.modules) AS m
WHERE w.last_seen > now() - make_interval(secs => $1) AND w.status <> 'stopped'
GROUP BY m";

/// Rows waiting per module (due or not), for the held-tasks gauge.
pub const OUTBOX_WAITING: &str = "SELECT routing_key, count(*)::int8 AS tasks FROM outbox WHERE sent_at IS NULL GROUP BY routing_key";

/// Gives up this coordinator's lease on rows $1: they wait for their module's window, and
/// the scheduler takes them in order.
pub const RELEASE: &str = "UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1) AND sent_at IS NULL";

/// Per module of $1, the distinct fingerprints its live workers report (heartbeat within $2
/// seconds, not stopped); '' for a worker that reports none. No row: no live worker.
pub const FLEET_FINGERPRINTS: &str = "
SELECT m AS module, array_agg(DISTINCT coalesce(w.fingerprints->>m, '')) AS fingerprints
FROM unnest($1::text[]) AS m
JOIN workers w ON m = ANY(w.modules) AND w.last_seen > now() - make_interval(secs => $2) AND w.status <> 'stopped'
GROUP BY m";

/// Of runs $1, those created with `cache: refresh`.
pub const REFRESHING_RUNS: &str = "SELECT id FROM runs WHERE id = ANY($1) AND cache_mode = 'refresh'";

/// The cache entries with keys $1.
pub const CACHE_ENTRIES: &str = "SELECT key, outputs, node_run_id FROM node_cache WHERE key = ANY($1)";

/// Drops entry $1 if node_run $2 still holds it (its artifacts are gone).
pub const DROP_CACHE_ENTRY: &str = "DELETE FROM node_cache WHERE key = $1 AND node_run_id = $2";

/// $1 ids.
pub const MARK_SENT: &str = "UPDATE outbox SET sent_at = clock_timestamp() WHERE id = ANY($1)";

/// [`MARK_SENT`] for the hot path, committed asynchronously: losing it in a database crash
/// only re-publishes the rows when their lease ends, which the result consumer ignores, and
/// it keeps this bookkeeping commit from queueing behind the hop transactions' WAL flushes.
pub const MARK_SENT_LAZY: &str = "
WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE outbox SET sent_at = clock_timestamp() FROM lazy WHERE id = ANY($1)";

/// Holds rows $1 back for $2 seconds and drops their lease (the broker refused them).
pub const DEFER: &str =
    "UPDATE outbox SET not_before = clock_timestamp() + make_interval(secs => $2), claimed_until = NULL WHERE id = ANY($1)";

/// Seconds until the next unsent row is due (negative when overdue), or NULL.
pub const NEXT_DUE: &str = "
SELECT extract(epoch FROM min(greatest(not_before, coalesce(claimed_until, not_before))) - now())::float8
FROM outbox WHERE sent_at IS NULL";

/// Deletes sent rows older than $1 seconds.
pub const PRUNE_SENT: &str = "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)";

/// A worker took an attempt. $1 node_run, $2 attempt, $3 worker, $4 started_at.
/// Returns the module.
pub const STARTED: &str = "
WITH n AS (
  UPDATE node_runs SET status = 'running', worker_id = $3, started_at = $4, heartbeat_at = now()
  WHERE id = $1 AND attempt = $2 AND status IN ('queued', 'running')
  RETURNING id, attempt, module_key, queued_at
), a AS (
  INSERT INTO node_attempts (node_run_id, attempt, status, worker_id, started_at)
  SELECT id, attempt, 'running', $3, $4 FROM n
  ON CONFLICT (node_run_id, attempt) DO UPDATE SET worker_id = EXCLUDED.worker_id, started_at = EXCLUDED.started_at
  WHERE node_attempts.status = 'running'
)
SELECT module_key FROM n";

/// Every successful attempt of a batch, in one statement: mark the nodes succeeded and
/// record their attempts, count the finished predecessors of each successor and queue the
/// successors that have none left (with outbox rows leased for $7 seconds to this
/// coordinator's own publisher), and advance the runs, succeeding those with every node
/// done. Parallel arrays, one entry per (node_run, attempt), no duplicates: $1 node_runs,
/// $2 attempts, $3 workers, $4 started_at, $5 finished_at, $6 outputs, $8 cache keys and
/// $9 the node_runs a cache hit came from (both nullable). A success with a key and no
/// source is stored in `node_cache` (one per key: the batch may hold the same work twice);
/// a hit counts on its entry.
/// Duplicates and stale attempts match no row and change nothing.
/// Returns rows of three kinds:
/// `done`  (module, run seconds, ready→start seconds),
/// `ready` (-, node_run, run, node id, module, params, attempt, timeout_ms) for each node queued,
/// `outbox` (outbox id, node_run) for each outbox row written (the caller pairs them: a join
/// of the two CTEs here would be planned blind, and a fan-out of 10,000 made it quadratic),
/// `run`   (run id, its render request, whether it just succeeded).
///
/// Plans: the coordinator runs generic plans, which assume an unnested array holds 10 rows.
/// Below a few thousand node_runs that makes the joins hash joins over a sequential scan
/// (up to ~1 ms per hop at 3,000 rows); above, nested loops over the primary key. Both
/// stay linear in the batch. Adding `id = ANY($1)` to pin the index was tried and made it
/// worse: a nested loop with a join *filter*, quadratic for a large batch or fan-out
/// (10,000-wide: 0.14 → 2.1 ms per node).
pub const SUCCEEDED: &str = "
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::jsonb[], $8::text[], $9::uuid[])
         AS t(id, attempt, worker_id, started_at, finished_at, outputs, cache_key, cached_from)
), done AS (
  UPDATE node_runs n SET status = 'succeeded', worker_id = i.worker_id, started_at = i.started_at,
         finished_at = i.finished_at, outputs = i.outputs, error = NULL, heartbeat_at = NULL,
         cache_key = i.cache_key, cached_from = i.cached_from
  FROM input i
  WHERE n.id = i.id AND n.attempt = i.attempt AND n.status IN ('queued', 'running')
  RETURNING n.id, n.run_id, n.attempt, n.module_key, n.successors, n.queued_at, i.worker_id, i.started_at, i.finished_at,
            i.outputs, i.cache_key, i.cached_from
), stored AS (
  INSERT INTO node_cache (key, module_key, outputs, node_run_id, run_id)
  SELECT DISTINCT ON (cache_key) cache_key, module_key, outputs, id, run_id FROM done
  WHERE cache_key IS NOT NULL AND cached_from IS NULL
  ORDER BY cache_key, finished_at DESC
  ON CONFLICT (key) DO UPDATE SET module_key = EXCLUDED.module_key, outputs = EXCLUDED.outputs, node_run_id = EXCLUDED.node_run_id,
                                  run_id = EXCLUDED.run_id, created_at = now(), hits = 0, last_hit_at = NULL
), hit AS (
  UPDATE node_cache c SET hits = c.hits + h.cnt, last_hit_at = now()
  FROM (SELECT cache_key, count(*) AS cnt FROM done WHERE cached_from IS NOT NULL GROUP BY cache_key) h
  WHERE c.key = h.cache_key
), attempts AS (
  INSERT INTO node_attempts (node_run_id, attempt, status, worker_id, started_at, finished_at)
  SELECT id, attempt, 'succeeded', worker_id, started_at, finished_at FROM done
  ON CONFLICT (node_run_id, attempt) DO UPDATE
  SET status = 'succeeded', worker_id = EXCLUDED.worker_id, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at
), released AS (
  UPDATE node_runs n SET unmet_deps = n.unmet_deps - c.cnt,
         status = CASE WHEN n.unmet_deps = c.cnt THEN 'queued' ELSE n.status END,
         queued_at = CASE WHEN n.unmet_deps = c.cnt THEN greatest(clock_timestamp(), c.after) ELSE n.queued_at END
  FROM (SELECT s AS id, count(*)::int4 AS cnt, max(done.finished_at) AS after FROM done, unnest(done.successors) AS s GROUP BY s) c
  WHERE n.id = c.id AND n.status = 'pending'
  RETURNING n.id, n.run_id, n.node_id, n.module_key, n.params, n.attempt, n.timeout_ms, n.status
), enqueued AS (
  INSERT INTO outbox (node_run_id, attempt, routing_key, claimed_until, priority, submitter, tag)
  SELECT rl.id, rl.attempt, rl.module_key, clock_timestamp() + make_interval(secs => $7), r.priority, r.submitter,
         outbox_tag_base(rl.module_key, r.priority, r.submitter)
           + row_number() OVER (PARTITION BY rl.module_key, r.priority, r.submitter ORDER BY rl.id)
  FROM released rl JOIN runs r ON r.id = rl.run_id WHERE rl.status = 'queued'
  ON CONFLICT (node_run_id, attempt) DO NOTHING
  RETURNING id, node_run_id
), progress AS (
  UPDATE runs r SET nodes_done = r.nodes_done + d.cnt,
         status = CASE WHEN r.status = 'running' AND r.nodes_done + d.cnt >= r.nodes_total THEN 'succeeded' ELSE r.status END,
         finished_at = CASE WHEN r.status = 'running' AND r.nodes_done + d.cnt >= r.nodes_total THEN clock_timestamp() ELSE r.finished_at END
  FROM (SELECT d.run_id, count(*)::int4 AS cnt, min(r0.status) AS before
        FROM done d JOIN runs r0 ON r0.id = d.run_id GROUP BY d.run_id) d
  WHERE r.id = d.run_id
  RETURNING r.id, r.request_id, d.before = 'running' AND r.status = 'succeeded' AS just_succeeded
)
SELECT 'done' AS kind, NULL::int8, NULL::uuid, NULL::uuid, NULL::text, module_key, NULL::jsonb, NULL::int4, NULL::int8,
       -- no durations for cache hits: no worker ran, and they would drag the module's figures down
       CASE WHEN cached_from IS NULL THEN extract(epoch FROM finished_at - started_at)::float8 END,
       CASE WHEN cached_from IS NULL THEN extract(epoch FROM started_at - queued_at)::float8 END, NULL::bool
FROM done
UNION ALL
SELECT 'ready', NULL, id, run_id, node_id, module_key, params, attempt, timeout_ms, NULL, NULL, NULL
FROM released WHERE status = 'queued'
UNION ALL
SELECT 'outbox', id, node_run_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM enqueued
UNION ALL
SELECT 'run', NULL, id, request_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, just_succeeded FROM progress";

/// Locks the runs of the node_runs $1, in id order. Every batch takes its run locks first and
/// in the same order, so concurrent batches (several coordinators, the recovery sweeper)
/// queue behind each other instead of deadlocking on node and run rows.
pub const LOCK_RUNS: &str = "
SELECT id FROM runs WHERE id IN (SELECT run_id FROM node_runs WHERE id = ANY($1)) ORDER BY id FOR UPDATE";

/// Locks the node if ($1 node_run, $2 attempt) is its current, unfinished attempt. Also
/// returns whether its run still runs, and whether it has been quiet for more than $3
/// seconds (re-checked under the lock before an attempt is declared lost).
pub const LOCK_ATTEMPT: &str = "
SELECT n.run_id, n.node_id, n.module_key, n.max_attempts, n.started_at, r.status = 'running',
       coalesce(n.heartbeat_at < now() - make_interval(secs => $3), false)
FROM node_runs n JOIN runs r ON r.id = n.run_id
WHERE n.id = $1 AND n.attempt = $2 AND n.status IN ('queued', 'running') FOR UPDATE OF n";

/// Records how attempt $2 of node_run $1 ended. $3 status ('failed' | 'lost'), $4 worker,
/// $5 started_at, $6 finished_at, $7 error.
pub const ATTEMPT_ENDED: &str = "
INSERT INTO node_attempts (node_run_id, attempt, status, worker_id, started_at, finished_at, error)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (node_run_id, attempt) DO UPDATE
SET status = EXCLUDED.status, worker_id = coalesce(EXCLUDED.worker_id, node_attempts.worker_id),
    started_at = coalesce(EXCLUDED.started_at, node_attempts.started_at),
    finished_at = EXCLUDED.finished_at, error = EXCLUDED.error";

/// Starts the next attempt of node_run $1 after $4 seconds; $2 error, $3 log tail of the
/// failed one. Returns what the task message needs.
pub const RETRY: &str = "
UPDATE node_runs SET attempt = attempt + 1, status = 'queued', worker_id = NULL, started_at = NULL,
       finished_at = NULL, heartbeat_at = NULL, error = $2, log_tail = $3,
       queued_at = clock_timestamp() + make_interval(secs => $4)
WHERE id = $1
RETURNING id, run_id, node_id, module_key, params, attempt, timeout_ms";

/// Node_run $1 failed for good. $2 worker, $3 started_at, $4 finished_at, $5 error, $6 log tail.
pub const FAIL_NODE: &str = "
UPDATE node_runs SET status = 'failed', worker_id = $2, started_at = $3, finished_at = $4, error = $5,
       log_tail = $6, heartbeat_at = NULL
WHERE id = $1";

/// Skips every pending descendant of node_run $1; $2 the reason shown. Returns the count.
pub const SKIP_DESCENDANTS: &str = "
WITH RECURSIVE d(id) AS (
  SELECT unnest(successors) FROM node_runs WHERE id = $1
  UNION
  SELECT unnest(n.successors) FROM node_runs n JOIN d ON n.id = d.id
)
UPDATE node_runs SET status = 'skipped', error = jsonb_build_object('kind', 'upstream_failed', 'message', $2::text)
WHERE id IN (SELECT id FROM d) AND status = 'pending'";

/// Skips the other pending nodes of run $1 (not downstream of the failure); $2 the reason.
pub const SKIP_PENDING: &str = "
UPDATE node_runs SET status = 'skipped', error = jsonb_build_object('kind', 'run_failed', 'message', $2::text)
WHERE run_id = $1 AND status = 'pending'";

/// Fails run $1 with error $2. No row if it had already ended; else its request and whether
/// it was a request's authoritative graph run (which a legacy fallback then replaces).
pub const FAIL_RUN: &str = "
UPDATE runs SET status = 'failed', finished_at = clock_timestamp(), error = $2 WHERE id = $1 AND status = 'running'
RETURNING id, request_id, role = 'authoritative' AND pipeline = 'graph'";

/// A worker's heartbeat. $1 id, $2 host, $3 version, $4 modules, $5 concurrency, $6 running,
/// $7 status, $8 tools, $9 fingerprints, $10 quarantined modules.
pub const UPSERT_WORKER: &str = "
INSERT INTO workers (id, host, version, modules, concurrency, running, status, last_seen, tools, fingerprints, quarantined)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, version = EXCLUDED.version, modules = EXCLUDED.modules,
  concurrency = EXCLUDED.concurrency, running = EXCLUDED.running, status = EXCLUDED.status, last_seen = now(),
  tools = EXCLUDED.tools, fingerprints = EXCLUDED.fingerprints, quarantined = EXCLUDED.quarantined";

/// The median time from request to finish of output type $1's last $2 succeeded answering
/// runs, and how many there were (index `runs_recent_by_output_type`).
pub const RECENT_RUN_SECONDS: &str = "
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY secs) AS p50, count(*) AS runs
FROM (SELECT extract(epoch FROM finished_at - created_at)::float8 AS secs FROM runs
      WHERE output_type_key = $1 AND status = 'succeeded' AND role IN ('authoritative', 'fallback')
      ORDER BY finished_at DESC LIMIT $2) recent";

/// Render requests newest first with the status of the run that answers each (its fallback,
/// else its authoritative run): $1 output type, $2 submitter, $3 received since, $4/$5 the
/// cursor (received_at, id), $6 page size.
pub const REQUESTS: &str = "
SELECT q.id, q.order_line_id, q.output_type_key, q.received_at, q.priority, q.submitter,
       a.status, a.nodes_done, a.nodes_total
FROM render_requests q
LEFT JOIN LATERAL (SELECT r.status, r.nodes_done, r.nodes_total FROM runs r
                   WHERE r.request_id = q.id AND r.role IN ('fallback', 'authoritative')
                   ORDER BY (r.role = 'fallback') DESC LIMIT 1) a ON true
WHERE ($1::text IS NULL OR q.output_type_key = $1) AND ($2::text IS NULL OR q.submitter = $2)
  AND ($3::timestamptz IS NULL OR q.received_at >= $3)
  AND ($4::timestamptz IS NULL OR (q.received_at, q.id) < ($4, $5::uuid))
  AND q.received_at <= coalesce($4::timestamptz, 'infinity')
ORDER BY q.received_at DESC, q.id DESC LIMIT $6";

/// Whether render request $1 exists.
pub const REQUEST_EXISTS: &str = "SELECT id FROM render_requests WHERE id = $1";

/// Render request $1's running runs, locked for cancelling.
pub const REQUEST_RUNNING_RUNS: &str = "SELECT id FROM runs WHERE request_id = $1 AND status = 'running' ORDER BY created_at FOR UPDATE";

/// Workers heard from in the last $1 seconds, by id.
pub const WORKERS: &str = "
SELECT id, host, version, modules, status, running, concurrency, last_seen, tools, quarantined,
       extract(epoch FROM now() - last_seen)::float8 AS quiet_secs
FROM workers WHERE last_seen > now() - make_interval(secs => $1) ORDER BY id";

/// Worker $1's quarantined modules.
pub const WORKER_QUARANTINE: &str = "SELECT quarantined FROM workers WHERE id = $1";

/// Retried tasks $1 (node_run ids) at attempts $2: the workers that failed an earlier
/// attempt of the node, per node whose module another live worker (heartbeat within $3
/// seconds, running, not one of them) takes. Those workers hand the task back to the others.
pub const AVOID: &str = "
SELECT t.id AS node_run_id, array_agg(DISTINCT a.worker_id) AS avoid
FROM unnest($1::uuid[], $2::int4[]) AS t(id, attempt)
JOIN node_runs n ON n.id = t.id
JOIN node_attempts a ON a.node_run_id = t.id AND a.attempt < t.attempt AND a.status = 'failed' AND a.worker_id IS NOT NULL
GROUP BY t.id, n.module_key
HAVING EXISTS (
  SELECT 1 FROM workers w
  WHERE n.module_key = ANY(w.modules) AND w.status = 'running' AND w.last_seen > now() - make_interval(secs => $3)
    AND w.id <> ALL(array_agg(a.worker_id)))";

/// Refreshes the heartbeat of attempts in hand. $1 node_run ids, $2 attempts; $3 the
/// worker when senders are verified: then only its own (whose start it reported) count.
pub const TOUCH_RUNNING: &str = "
UPDATE node_runs n SET heartbeat_at = now()
FROM unnest($1::uuid[], $2::int4[]) AS t(id, attempt)
WHERE n.id = t.id AND n.attempt = t.attempt AND n.status = 'running' AND ($3::text IS NULL OR n.worker_id = $3)";

/// This coordinator's watermark: $1 instance, $2 seconds since it had read everything
/// (NULL: not caught up yet).
pub const UPSERT_WATERMARK: &str = "
INSERT INTO coordinator_watermarks (instance, caught_up_at, seen_at)
VALUES ($1, clock_timestamp() - make_interval(secs => $2::float8), clock_timestamp())
ON CONFLICT (instance) DO UPDATE SET caught_up_at = EXCLUDED.caught_up_at, seen_at = EXCLUDED.seen_at";

/// $1 instance (stopping).
pub const DELETE_WATERMARK: &str = "DELETE FROM coordinator_watermarks WHERE instance = $1";

/// Watermarks not refreshed for $1 seconds (coordinators long gone).
pub const PRUNE_WATERMARKS: &str = "DELETE FROM coordinator_watermarks WHERE seen_at < clock_timestamp() - make_interval(secs => $1)";

/// Running attempts whose last heartbeat is more than $1 seconds older than the lowest
/// watermark of the coordinators seen in the last $2 seconds (none caught up: nothing).
pub const FIND_LOST: &str = "
WITH mark AS (
  SELECT min(coalesce(caught_up_at, '-infinity')) AS at FROM coordinator_watermarks
  WHERE seen_at > clock_timestamp() - make_interval(secs => $2)
)
SELECT n.id, n.attempt, n.worker_id, n.started_at, extract(epoch FROM now() - n.heartbeat_at)::float8
FROM node_runs n, mark
WHERE n.status = 'running' AND n.heartbeat_at < mark.at - make_interval(secs => $1)
ORDER BY n.heartbeat_at LIMIT 500";

/// $1 run id.
pub const GET_RUN: &str = "
SELECT id, pipeline, role, status, subject, graph, nodes_total, nodes_done, error, created_at, finished_at, cache_mode,
       priority, submitter
FROM runs WHERE id = $1";

/// $1 run id, in submission order; a node served from the cache names the node_run (and its
/// run, while it is kept) that produced its outputs.
pub const GET_NODE_RUNS: &str = "
SELECT n.id, n.node_id, n.module_key, n.status, n.attempt, n.max_attempts, n.worker_id, n.queued_at, n.started_at, n.finished_at,
       n.outputs, n.error, n.log_tail, n.params, n.bindings, n.cached_from, c.run_id AS cached_from_run
FROM node_runs n LEFT JOIN node_runs c ON c.id = n.cached_from
WHERE n.run_id = $1 ORDER BY n.id";

/// $1 run id.
pub const GET_ATTEMPTS: &str = "
SELECT a.node_run_id, a.attempt, a.status, a.worker_id, a.started_at, a.finished_at, a.error
FROM node_attempts a JOIN node_runs n ON n.id = a.node_run_id
WHERE n.run_id = $1 ORDER BY a.node_run_id, a.attempt";

/// A workflow version. $1 id, $2 name, $3 family, $4 graph, $5 mixed_family, $6 repaired_from;
/// the version is the next one of $1 (1 for a new id). A concurrent edit of the same workflow
/// makes this fail with a unique violation.
pub const INSERT_WORKFLOW_VERSION: &str = "
INSERT INTO workflows (id, version, name, family, graph, mixed_family, repaired_from, message)
SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6, $7 FROM workflows WHERE id = $1
RETURNING version, created_at";

/// The latest version of workflow $1. (Every WORKFLOW_* query returns the same columns.)
pub const WORKFLOW_LATEST: &str = "
SELECT id, version, name, family, graph, mixed_family, repaired_from, created_at, message
FROM workflows WHERE id = $1 ORDER BY version DESC LIMIT 1";

/// Version $2 of workflow $1.
pub const WORKFLOW_VERSION: &str = "
SELECT id, version, name, family, graph, mixed_family, repaired_from, created_at, message
FROM workflows WHERE id = $1 AND version = $2";

/// The latest version of every workflow, newest first.
pub const WORKFLOWS_LATEST: &str = "
SELECT * FROM (SELECT DISTINCT ON (id) id, version, name, family, graph, mixed_family, repaired_from, created_at, message
               FROM workflows ORDER BY id, version DESC) w
ORDER BY created_at DESC";

/// Every version of workflow $1, newest first, without the graphs (a node count instead).
pub const WORKFLOW_VERSIONS: &str = "
SELECT version, name, message, mixed_family, repaired_from,
       CASE WHEN jsonb_typeof(graph->'nodes') = 'array' THEN jsonb_array_length(graph->'nodes') ELSE 0 END,
       created_at
FROM workflows WHERE id = $1 ORDER BY version DESC";

/// A new output type; no row when the key exists. $1 key, $2 description, $3 family,
/// $4 artifact_kind, $5 workflow_id, $6 workflow_version, $7 overrides, $8 legacy_preset,
/// $9 rollout_mode, $10 shadow_sample_pct, $11 gate_config.
pub const INSERT_OUTPUT_TYPE: &str = "
INSERT INTO output_types (key, description, family, artifact_kind, workflow_id, workflow_version, invocation_overrides,
                          legacy_preset, rollout_mode, shadow_sample_pct, gate_config, default_priority)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (key) DO NOTHING RETURNING revision";

/// Replaces output type $1 (parameters as [`INSERT_OUTPUT_TYPE`]) but its rollout mode, which
/// moves through [`SET_MODE`] only: $9 is the mode the caller checked the rest against, and
/// no row is changed when a promote or rollback has moved it meanwhile (or the key is gone).
pub const UPDATE_OUTPUT_TYPE: &str = "
UPDATE output_types SET description = $2, family = $3, artifact_kind = $4, workflow_id = $5, workflow_version = $6,
       invocation_overrides = $7, legacy_preset = $8, shadow_sample_pct = $10, gate_config = $11, default_priority = $12,
       revision = revision + 1, updated_at = now()
WHERE key = $1 AND rollout_mode = $9 RETURNING revision";

/// Output type $1. (Both OUTPUT_TYPE* queries return the same columns.)
pub const OUTPUT_TYPE: &str = "
SELECT key, description, family, artifact_kind, workflow_id, workflow_version, invocation_overrides, legacy_preset,
       rollout_mode, shadow_sample_pct, gate_config, revision, created_at, updated_at, default_priority
FROM output_types WHERE key = $1";

/// Every output type by key.
pub const OUTPUT_TYPES: &str = "
SELECT key, description, family, artifact_kind, workflow_id, workflow_version, invocation_overrides, legacy_preset,
       rollout_mode, shadow_sample_pct, gate_config, revision, created_at, updated_at, default_priority
FROM output_types ORDER BY key";

/// A render request; no row when its idempotency key was used before. $1 id, $2 key,
/// $3 order line, $4 subject, $5 output type, $6 fingerprint.
pub const INSERT_REQUEST: &str = "
INSERT INTO render_requests (id, idempotency_key, order_line_id, subject, output_type_key, fingerprint, priority, submitter)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

/// The request made earlier with key $1, and whether it had the same fingerprint $2.
pub const REQUEST_BY_KEY: &str = "SELECT id, fingerprint = $2 FROM render_requests WHERE idempotency_key = $1";

/// Render request $1 with its runs (one row per run, authoritative first).
pub const GET_REQUEST: &str = "
SELECT q.id, q.idempotency_key, q.order_line_id, q.subject, q.output_type_key, q.received_at,
       r.id, r.pipeline, r.role, r.status, r.nodes_total, r.nodes_done, r.error, r.created_at, r.finished_at,
       q.priority, q.submitter
FROM render_requests q LEFT JOIN runs r ON r.request_id = q.id
WHERE q.id = $1
ORDER BY (r.role = 'authoritative') DESC, r.created_at";

/// Live workers: heartbeat within $1 seconds and taking work (a draining worker is not).
pub const LIVE_WORKERS: &str = "
SELECT id, host, modules, status, last_seen FROM workers
WHERE last_seen > now() - make_interval(secs => $1) AND status = 'running' ORDER BY id";

/// Creates or replaces material $1. $2 description, $3 base colour, $4 metallic, $5 roughness.
pub const UPSERT_MATERIAL: &str = "
INSERT INTO materials (name, description, base_color, metallic, roughness) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, base_color = EXCLUDED.base_color,
  metallic = EXCLUDED.metallic, roughness = EXCLUDED.roughness, updated_at = now()
RETURNING name, description, base_color, metallic, roughness, updated_at";

/// The material library by name.
pub const MATERIALS: &str = "SELECT name, description, base_color, metallic, roughness, updated_at FROM materials ORDER BY name";

/// Product $1's material map: (target, material).
pub const PRODUCT_MAP: &str = "SELECT target, material FROM product_material_maps WHERE product = $1 ORDER BY target";

/// $1 product.
pub const DELETE_PRODUCT_MAP: &str = "DELETE FROM product_material_maps WHERE product = $1";

/// Map entries of product $1: parallel arrays $2 targets, $3 materials.
pub const UPSERT_PRODUCT_MAP: &str = "
INSERT INTO product_material_maps (product, target, material)
SELECT $1, t.target, t.material FROM unnest($2::text[], $3::text[]) AS t(target, material)
ON CONFLICT (product, target) DO UPDATE SET material = EXCLUDED.material, updated_at = now()";

/// The names among $1 that the library does not have.
pub const UNKNOWN_MATERIALS: &str = "
SELECT DISTINCT m FROM unnest($1::text[]) AS m WHERE NOT EXISTS (SELECT 1 FROM materials WHERE name = m) ORDER BY m";

/// The part keys that product $1's most recent materials step (graph or legacy) found
/// without a material, and its run.
/// The product $1's GLB export to preview (a graph's export step, or the legacy node, which
/// exports too): run $2's when given, else the latest that succeeded; with the params of
/// the same run's materials step (its `on_missing` and `default_material`), when it had one.
pub const PRODUCT_EXPORT: &str = "
SELECT n.run_id, n.outputs, n.finished_at,
       (SELECT m.params FROM node_runs m WHERE m.run_id = n.run_id AND m.module_key = 'materials' LIMIT 1) AS materials_params
FROM node_runs n JOIN runs r ON r.id = n.run_id
WHERE n.module_key IN ('glb_export', 'legacy_render') AND n.status = 'succeeded' AND n.outputs ? 'glb' AND n.outputs ? 'parts'
  AND r.subject->>'product' = $1 AND ($2::uuid IS NULL OR n.run_id = $2)
ORDER BY n.finished_at DESC LIMIT 1";

pub const LAST_MISSING_PARTS: &str = "
SELECT coalesce(n.outputs->'missing', n.outputs->'missing_materials', '[]'), n.run_id
FROM node_runs n JOIN runs r ON r.id = n.run_id
WHERE n.module_key IN ('materials', 'legacy_render') AND n.status = 'succeeded' AND r.subject->>'product' = $1
  AND (n.outputs ? 'missing' OR n.outputs ? 'missing_materials')
ORDER BY n.finished_at DESC LIMIT 1";

/// Shadow pairs (graph against legacy) and A/A pairs (legacy against legacy) whose two runs
/// have ended and that have no comparison yet; runs that ended within $1 seconds.
/// Columns: request, output type, control run, its status, its render seconds, candidate
/// run, its status, its render seconds, comparison kind, the output type's artifact kind and
/// gate config. Render seconds are the sum of the run's node run times: what the pipeline
/// costs, without the time its tasks waited in queues (which depends on the fleet's load). A
/// node served from the cache counts at what its producer took: whether one side of a pair
/// happened to find the other's export in the cache must not decide the duration gate.
pub const PAIRS_DUE: &str = "
WITH recent AS (SELECT DISTINCT request_id FROM runs
                WHERE request_id IS NOT NULL AND finished_at > now() - make_interval(secs => $1))
SELECT q.id, q.output_type_key,
       c.id, c.status, (SELECT sum(extract(epoch FROM coalesce(p.finished_at - p.started_at, n.finished_at - n.started_at)))
                        FROM node_runs n LEFT JOIN node_runs p ON p.id = n.cached_from WHERE n.run_id = c.id)::float8,
       s.id, s.status, (SELECT sum(extract(epoch FROM coalesce(p.finished_at - p.started_at, n.finished_at - n.started_at)))
                        FROM node_runs n LEFT JOIN node_runs p ON p.id = n.cached_from WHERE n.run_id = s.id)::float8,
       CASE s.pipeline WHEN 'graph' THEN 'shadow' ELSE 'noise' END, o.artifact_kind, o.gate_config
FROM recent
JOIN render_requests q ON q.id = recent.request_id
JOIN runs s ON s.request_id = q.id AND s.role = 'shadow' AND s.status <> 'running'
JOIN runs c ON c.request_id = q.id AND c.role = 'authoritative' AND c.pipeline = 'legacy' AND c.status <> 'running'
JOIN output_types o ON o.key = q.output_type_key
WHERE NOT EXISTS (SELECT 1 FROM comparisons k
                  WHERE k.request_id = q.id AND k.kind = CASE s.pipeline WHEN 'graph' THEN 'shadow' ELSE 'noise' END)
LIMIT 200";

/// A comparison; no row when the request already has one of this kind. $1 id, $2 request,
/// $3 output type, $4 kind, $5 control run, $6 candidate run, $7 status, $8 verdict
/// (null while comparing), $9 metrics, $10 control seconds, $11 candidate seconds.
pub const INSERT_COMPARISON: &str = "
INSERT INTO comparisons (id, request_id, output_type_key, kind, control_run, candidate_run, status, verdict, metrics,
                         control_seconds, candidate_seconds, decided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, CASE WHEN $7 = 'done' THEN now() END)
ON CONFLICT (request_id, kind) DO NOTHING RETURNING id";

/// The node_run of run $1 that delivered an artifact of kind $2 (the legacy node, or a
/// publish node of the graph).
pub const DELIVERABLE: &str = "
SELECT id FROM node_runs WHERE run_id = $1 AND status = 'succeeded' AND outputs->'artifact'->>'kind' = $2
ORDER BY node_id LIMIT 1";

/// Points the compare run $2's node at the deliverables: $3 bindings. $1 comparison.
pub const START_COMPARE: &str = "
WITH c AS (UPDATE comparisons SET compare_run = $2 WHERE id = $1)
UPDATE node_runs SET bindings = $3 WHERE run_id = $2";

/// Comparisons whose compare run has ended: comparison, output type, kind, the compare
/// node's status, outputs and error, and the output type's gate config (ignore rules).
pub const COMPARES_DONE: &str = "
SELECT k.id, k.output_type_key, k.kind, n.status, n.outputs, n.error, o.gate_config
FROM comparisons k JOIN runs r ON r.id = k.compare_run JOIN node_runs n ON n.run_id = r.id
JOIN output_types o ON o.key = k.output_type_key
WHERE k.status = 'comparing' AND r.status <> 'running' LIMIT 200";

/// Decides comparison $1: $2 status, $3 verdict, $4 metrics, $5 diff image sha256, $6 the
/// ignore rule that excused a mismatch.
pub const DECIDE_COMPARISON: &str = "
UPDATE comparisons SET status = $2, verdict = $3, metrics = $4, diff_sha256 = $5, ignore_rule = $6, decided_at = now()
WHERE id = $1 AND status = 'comparing'";

/// Output type $1's last $2 authoritative graph runs since it last moved to `graph`:
/// how many ended, how many failed.
pub const GRAPH_FAILURES: &str = "
WITH since AS (SELECT coalesce(max(at), '-infinity'::timestamptz) AS t FROM rollout_events
               WHERE output_type_key = $1 AND to_mode = 'graph')
SELECT count(*), count(*) FILTER (WHERE w.status = 'failed') FROM (
  SELECT r.status FROM runs r, since
  WHERE r.output_type_key = $1 AND r.role = 'authoritative' AND r.pipeline = 'graph' AND r.status IN ('succeeded', 'failed')
    AND r.created_at >= since.t
  ORDER BY r.finished_at DESC LIMIT $2) w";

/// What output type $1's gate reads over its last $2 comparisons since it last moved to
/// `shadow` (evidence from an earlier shadow period, or from another bound workflow, does
/// not count): match, mismatch, candidate_error, control_error and ignored counts; A/A
/// samples and mismatches; p95 seconds of compared graph and legacy runs.
pub const GATE_INPUT: &str = "
WITH since AS (SELECT coalesce(max(at), '-infinity'::timestamptz) AS t FROM rollout_events
               WHERE output_type_key = $1 AND to_mode = 'shadow'),
     w AS (SELECT k.verdict, k.control_seconds, k.candidate_seconds
           FROM comparisons k JOIN runs r ON r.id = k.candidate_run JOIN output_types o ON o.key = k.output_type_key, since
           WHERE k.output_type_key = $1 AND k.kind = 'shadow' AND k.status = 'done' AND k.decided_at >= since.t
             AND r.workflow_id IS NOT DISTINCT FROM o.workflow_id
           ORDER BY k.decided_at DESC LIMIT $2),
     nz AS (SELECT k.verdict FROM comparisons k, since
            WHERE k.output_type_key = $1 AND k.kind = 'noise' AND k.status = 'done' AND k.decided_at >= since.t
            ORDER BY k.decided_at DESC LIMIT $2)
SELECT count(*) FILTER (WHERE verdict = 'match'), count(*) FILTER (WHERE verdict = 'mismatch'),
       count(*) FILTER (WHERE verdict = 'candidate_error'), count(*) FILTER (WHERE verdict = 'control_error'),
       count(*) FILTER (WHERE verdict = 'ignored'),
       (SELECT count(*) FROM nz WHERE verdict IN ('match', 'mismatch')), (SELECT count(*) FROM nz WHERE verdict = 'mismatch'),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY candidate_seconds) FILTER (WHERE verdict IN ('match', 'mismatch')),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY control_seconds) FILTER (WHERE verdict IN ('match', 'mismatch'))
FROM w";

/// Every output type's key, mode and gate config (gates and gauges).
pub const ROLLOUT_STATES: &str = "SELECT key, rollout_mode, gate_config FROM output_types ORDER BY key";

/// Output type $1's mode and bound workflow, locked for a mode change.
pub const LOCK_MODE: &str = "SELECT rollout_mode, workflow_id, gate_config FROM output_types WHERE key = $1 FOR UPDATE";

/// Sets output type $1's mode to $2.
pub const SET_MODE: &str = "UPDATE output_types SET rollout_mode = $2, revision = revision + 1, updated_at = now() WHERE key = $1";

/// A mode change. $1 output type, $2 from, $3 to, $4 reason, $5 actor, $6 forced, $7 gate snapshot.
pub const INSERT_ROLLOUT_EVENT: &str = "
INSERT INTO rollout_events (output_type_key, from_mode, to_mode, reason, actor, forced, gate_snapshot)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, at";

/// Output type $1's mode changes, newest first, at most $2.
pub const ROLLOUT_EVENTS: &str = "
SELECT id, from_mode, to_mode, reason, actor, forced, gate_snapshot, at FROM rollout_events
WHERE output_type_key = $1 ORDER BY at DESC, id DESC LIMIT $2";

/// Comparisons, newest first: $1 output type (or null), $2 verdict (or null), $3 limit.
/// (COMPARISON returns the same columns.)
pub const COMPARISONS: &str = "
SELECT id, request_id, output_type_key, kind, control_run, candidate_run, compare_run, status, verdict, metrics,
       diff_sha256, control_seconds, candidate_seconds, created_at, decided_at, ignore_rule
FROM comparisons WHERE ($1::text IS NULL OR output_type_key = $1) AND ($2::text IS NULL OR verdict = $2)
ORDER BY created_at DESC LIMIT $3";

/// Comparison $1.
pub const COMPARISON: &str = "
SELECT id, request_id, output_type_key, kind, control_run, candidate_run, compare_run, status, verdict, metrics,
       diff_sha256, control_seconds, candidate_seconds, created_at, decided_at, ignore_rule
FROM comparisons WHERE id = $1";

/// The artifact run $1 delivered for output type $2 (its artifact kind).
pub const DELIVERED: &str = "
SELECT n.outputs->'artifact' FROM node_runs n, output_types o
WHERE n.run_id = $1 AND o.key = $2 AND n.status = 'succeeded' AND n.outputs->'artifact'->>'kind' = o.artifact_kind
ORDER BY n.node_id LIMIT 1";

/// Render request $1's subject and output type (for its legacy fallback).
/// Also the cache mode its authoritative run was given, which the fallback keeps.
pub const REQUEST_FOR_FALLBACK: &str = "
SELECT q.subject, q.output_type_key, q.priority, q.submitter,
       coalesce((SELECT r.cache_mode FROM runs r WHERE r.request_id = q.id AND r.role = 'authoritative' LIMIT 1), 'use') AS cache_mode
FROM render_requests q WHERE q.id = $1";

/// Cancels run $1 ($2 the reason shown). No row if it is not running.
pub const CANCEL_RUN: &str = "
UPDATE runs SET status = 'cancelled', finished_at = clock_timestamp(), error = jsonb_build_object('kind', 'cancelled', 'message', $2::text)
WHERE id = $1 AND status = 'running' RETURNING id";

/// The nodes of cancelled run $1 that have not started: skipped ($2 the reason). Running
/// ones are stopped by their workers and reported `cancelled`. Returns the attempts that
/// were queued (their tasks may be waiting in the outbox or a task queue).
pub const SKIP_FOR_CANCEL: &str = "
WITH s AS (
  SELECT id, status AS was FROM node_runs WHERE run_id = $1 AND status IN ('pending', 'queued') FOR UPDATE
)
UPDATE node_runs n SET status = 'skipped', error = jsonb_build_object('kind', 'cancelled', 'message', $2::text)
FROM s WHERE n.id = s.id
RETURNING n.id, n.attempt, s.was = 'queued' AS queued";

/// The running attempts of run $1: a cancel withdraws them too (a redelivery after their
/// worker died must not start them again).
pub const RUNNING_ATTEMPTS: &str = "SELECT id, attempt FROM node_runs WHERE run_id = $1 AND status = 'running'";

/// Deletes the unsent outbox rows of run $1 (cancelled): tasks waiting for a retry backoff
/// or a publisher are never sent.
pub const WITHDRAW_UNSENT: &str = "
DELETE FROM outbox o USING node_runs n WHERE n.id = o.node_run_id AND n.run_id = $1 AND o.sent_at IS NULL";

/// Reopens failed or cancelled run $1 when a retry can finish it: it has failed or skipped
/// nodes, none still queued or running (a cancelled task may still be stopping; its late
/// report would fail the reopened run), and it is not a request's graph run that a legacy
/// fallback already answered. No row otherwise.
pub const REOPEN_RUN: &str = "
UPDATE runs r SET status = 'running', finished_at = NULL, error = NULL
WHERE r.id = $1 AND r.status IN ('failed', 'cancelled')
  AND EXISTS (SELECT 1 FROM node_runs WHERE run_id = $1 AND status IN ('failed', 'skipped'))
  AND NOT EXISTS (SELECT 1 FROM node_runs WHERE run_id = $1 AND status IN ('queued', 'running'))
  AND NOT (r.role = 'authoritative' AND r.pipeline = 'graph' AND r.request_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM runs f WHERE f.idempotency_key = 'fallback:' || r.request_id))
RETURNING r.id";

/// Every failed or skipped node of run $1 becomes pending again with a new attempt (stale
/// results of the old one are ignored) and a fresh set of attempts; its counter is the
/// number of its predecessors not succeeded. Then the run's progress is recounted. Returns
/// how many nodes were reset.
pub const RESET_NODES: &str = "
WITH preds AS (
  -- predecessors not succeeded, per node, counted once for the run (not per node: a wide
  -- fan-out would make that quadratic)
  SELECT s AS id, count(*)::int4 AS cnt FROM node_runs p, unnest(p.successors) AS s
  WHERE p.run_id = $1 AND p.status <> 'succeeded' GROUP BY s
), reset AS (
  UPDATE node_runs n SET status = 'pending', attempt = n.attempt + 1, max_attempts = n.attempt + n.max_attempts,
         worker_id = NULL, started_at = NULL, finished_at = NULL, heartbeat_at = NULL, error = NULL, log_tail = NULL,
         outputs = NULL, unmet_deps = coalesce(preds.cnt, 0)
  FROM node_runs m LEFT JOIN preds ON preds.id = m.id
  WHERE m.id = n.id AND n.run_id = $1 AND n.status IN ('failed', 'skipped')
  RETURNING n.id
), progress AS (
  UPDATE runs SET nodes_done = (SELECT count(*) FROM node_runs WHERE run_id = $1 AND status = 'succeeded') WHERE id = $1
)
SELECT count(*) FROM reset";

/// Queues the pending nodes of run $1 that wait for nothing; returns what their tasks need.
pub const QUEUE_READY: &str = "
UPDATE node_runs SET status = 'queued', queued_at = clock_timestamp()
WHERE run_id = $1 AND status = 'pending' AND unmet_deps = 0
RETURNING id, run_id, node_id, module_key, params, attempt, timeout_ms";

/// The console's runs list, newest first, one page: $1 status, $2 output type, $3 pipeline,
/// $4 role, $5 created since (each null for any), $6/$7 the last row of the previous page
/// (created_at, id; null for the first page), $8 page size. Keyset paging keeps a deep page
/// as cheap as the first on a table of any size.
pub const CONSOLE_RUNS: &str = "
SELECT id, status, pipeline, role, output_type_key, created_at, finished_at, nodes_done, nodes_total,
       error->>'node_id' AS failing_node, error->>'message' AS failure
FROM runs
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR output_type_key = $2)
  AND ($3::text IS NULL OR pipeline = $3) AND ($4::text IS NULL OR role = $4)
  AND ($5::timestamptz IS NULL OR created_at >= $5)
  AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
  -- the same bound again, outside the ORs, so that even a generic plan starts the index
  -- scan at the cursor instead of reading every newer row
  AND created_at <= coalesce($6::timestamptz, 'infinity')
ORDER BY created_at DESC, id DESC LIMIT $8";

/// Run $1 for the console: what GET_RUN has, plus its request and output type.
pub const CONSOLE_RUN: &str = "
SELECT id, pipeline, role, status, subject, graph, nodes_total, nodes_done, error, created_at, finished_at,
       request_id, output_type_key
FROM runs WHERE id = $1";

/// An artifact's mime type, for serving it.
pub const ARTIFACT_MIME: &str = "SELECT mime, kind FROM artifacts WHERE sha256 = $1";

/// The artifact run $1 delivered of kind $2 (the comparison page's images).
pub const RUN_DELIVERABLE: &str = "
SELECT outputs->'artifact'->>'sha256' FROM node_runs
WHERE run_id = $1 AND status = 'succeeded' AND outputs->'artifact'->>'kind' = $2 ORDER BY node_id LIMIT 1";

/// What each of workers $1 is running now: worker, run, node, module, started.
pub const CONSOLE_WORKER_TASKS: &str = "
SELECT worker_id, run_id, node_id, module_key, started_at FROM node_runs
WHERE status = 'running' AND worker_id = ANY($1) ORDER BY started_at";

/// Events $1 with what their payloads are built from (migration V12): the request, the run,
/// the output type's artifact kind, and the payload if it was built before.
pub const EVENTS_FOR_PAYLOAD: &str = "
SELECT e.id, e.type, e.created_at, e.output_type_key, e.payload,
       q.id AS request_id, q.order_line_id, q.idempotency_key, q.priority, q.submitter,
       r.id AS run_id, r.pipeline, r.error, o.artifact_kind
FROM events e JOIN render_requests q ON q.id = e.request_id JOIN runs r ON r.id = e.run_id
LEFT JOIN output_types o ON o.key = e.output_type_key
WHERE e.id = ANY($1)";

/// The artifacts of kind $2 that run $1's succeeded nodes produced.
pub const RUN_ARTIFACTS_OF_KIND: &str = "
SELECT n.outputs->'artifact' AS artifact FROM node_runs n
WHERE n.run_id = $1 AND n.status = 'succeeded' AND n.outputs->'artifact'->>'kind' = $2
ORDER BY n.node_id";

/// Up to $2 events older than $1 seconds that are on the exchange and have no pending
/// delivery, deleted (their deliveries cascade).
pub const PRUNE_EVENTS: &str = "
DELETE FROM events WHERE id IN (
  SELECT e.id FROM events e
  WHERE e.created_at < now() - make_interval(secs => $1) AND e.published_at IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
  ORDER BY e.created_at LIMIT $2)";

/// Event $1's kept payload.
pub const EVENT_PAYLOAD: &str = "SELECT payload FROM events WHERE id = $1";

/// Keeps event $1's payload $2 unless one was kept first; returns the kept one, or NULL when
/// another statement kept one while this one waited for the row (read it again then).
pub const KEEP_PAYLOAD: &str = "
WITH kept AS (UPDATE events SET payload = $2 WHERE id = $1 AND payload IS NULL RETURNING payload)
SELECT payload FROM kept UNION ALL SELECT payload FROM events WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM kept)";

/// Events not yet on the events exchange (at most $1), oldest first; other coordinators skip them.
pub const CLAIM_UNPUBLISHED_EVENTS: &str = "
SELECT id, type, output_type_key FROM events WHERE published_at IS NULL
ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED";

/// $1 event ids.
pub const MARK_EVENTS_PUBLISHED: &str = "UPDATE events SET published_at = clock_timestamp() WHERE id = ANY($1)";

/// Claims due webhook deliveries (at most $1): each attempt is counted and its row held for
/// $2 seconds, after which an attempt whose coordinator died is made again.
pub const CLAIM_DELIVERIES: &str = "
WITH due AS (
  SELECT event_id, webhook_id FROM webhook_deliveries
  WHERE status = 'pending' AND next_at <= now()
  ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, next_at = clock_timestamp() + make_interval(secs => $2), last_attempt_at = clock_timestamp()
FROM due, webhooks w, events e
WHERE d.event_id = due.event_id AND d.webhook_id = due.webhook_id AND w.id = d.webhook_id AND e.id = d.event_id
RETURNING d.event_id, d.webhook_id, d.attempts, w.url, w.secret, e.type, extract(epoch FROM now() - e.created_at)::float8 AS age";

/// Attempt $3 of delivery ($1 event, $2 webhook) was accepted with HTTP status $4.
pub const DELIVERED_WEBHOOK: &str = "
UPDATE webhook_deliveries SET status = 'delivered', delivered_at = clock_timestamp(), last_status = $4, last_error = NULL
WHERE event_id = $1 AND webhook_id = $2 AND attempts = $3 AND status = 'pending'";

/// Attempt $3 of delivery ($1 event, $2 webhook) failed: $4 the HTTP status (NULL: no
/// answer), $5 what went wrong; again in $6 seconds, or given up when $7.
pub const DELIVERY_FAILED: &str = "
UPDATE webhook_deliveries SET last_status = $4, last_error = $5,
       status = CASE WHEN $7 THEN 'failed' ELSE 'pending' END, next_at = clock_timestamp() + make_interval(secs => $6)
WHERE event_id = $1 AND webhook_id = $2 AND attempts = $3 AND status = 'pending'";

/// Seconds until the next pending delivery is due (negative when overdue), or NULL.
pub const NEXT_DELIVERY: &str = "
SELECT extract(epoch FROM min(next_at) - now())::float8 FROM webhook_deliveries WHERE status = 'pending'";

/// A webhook subscription. $1 id, $2 url, $3 secret, $4 event types, $5 description, $6 who.
pub const INSERT_WEBHOOK: &str = "
INSERT INTO webhooks (id, url, secret, event_types, description, created_by) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, url, event_types, description, created_by, created_at";

/// Every subscription, with its delivery counts.
pub const WEBHOOKS: &str = "
SELECT w.id, w.url, w.event_types, w.description, w.created_by, w.created_at,
       count(*) FILTER (WHERE d.status = 'pending') AS pending,
       count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
       count(*) FILTER (WHERE d.status = 'failed') AS failed
FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id
WHERE $1::uuid IS NULL OR w.id = $1
GROUP BY w.id ORDER BY w.created_at";

/// Webhook $1's latest deliveries (at most $2), newest event first.
pub const WEBHOOK_DELIVERIES: &str = "
SELECT d.event_id, e.type, e.request_id, e.created_at AS event_at, d.status, d.attempts, d.next_at, d.last_attempt_at,
       d.last_status, d.last_error, d.delivered_at
FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
WHERE d.webhook_id = $1 ORDER BY e.created_at DESC LIMIT $2";

/// $1 id. Its deliveries go with it.
pub const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE id = $1 RETURNING id";
