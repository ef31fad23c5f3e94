-- The spine: runs, their node_runs and attempts, the outbox, and the workers seen.
-- Status values are checked here so that a bug cannot write a state the code does not know.

CREATE TABLE runs (
    id           uuid PRIMARY KEY,
    pipeline     text NOT NULL DEFAULT 'graph' CHECK (pipeline IN ('graph', 'legacy')),
    role         text NOT NULL DEFAULT 'authoritative' CHECK (role IN ('authoritative', 'shadow', 'fallback')),
    subject      jsonb NOT NULL,
    graph        jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    nodes_total  integer NOT NULL,
    nodes_done   integer NOT NULL DEFAULT 0,
    error        jsonb,
    -- a client's Idempotency-Key: the same key again returns this run instead of a new one
    idempotency_key text UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX runs_created ON runs (created_at DESC);
CREATE INDEX runs_status_created ON runs (status, created_at DESC);

CREATE TABLE node_runs (
    id            uuid PRIMARY KEY,
    run_id        uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id       text NOT NULL,
    module_key    text NOT NULL,
    params        jsonb NOT NULL,
    -- node_runs released when this one succeeds
    successors    uuid[] NOT NULL DEFAULT '{}',
    status        text NOT NULL CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'skipped')),
    -- the current attempt, 1-based; results for any other attempt are stale
    attempt       integer NOT NULL DEFAULT 1,
    max_attempts  integer NOT NULL CHECK (max_attempts > 0),
    timeout_ms    bigint NOT NULL CHECK (timeout_ms > 0),
    -- predecessors not yet succeeded; the node is queued when it reaches 0
    unmet_deps    integer NOT NULL CHECK (unmet_deps >= 0),
    worker_id     text,
    queued_at     timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    heartbeat_at  timestamptz,
    outputs       jsonb,
    error         jsonb,
    log_tail      text,
    UNIQUE (run_id, node_id)
);
CREATE INDEX node_runs_running_heartbeat ON node_runs (heartbeat_at) WHERE status = 'running';

-- One row per attempt: who ran it, when, and how it ended.
CREATE TABLE node_attempts (
    node_run_id  uuid NOT NULL REFERENCES node_runs (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'lost')),
    worker_id    text,
    started_at   timestamptz,
    finished_at  timestamptz,
    error        jsonb,
    PRIMARY KEY (node_run_id, attempt)
);

-- Tasks to publish. Written in the same transaction as the state change that makes a node
-- ready; the unique key makes enqueuing the same attempt twice impossible. The message is
-- built from node_runs at publish time. A row written by a coordinator that publishes it
-- itself right after its commit carries a short lease (claimed_until) that keeps the other
-- publishers off it; if that coordinator dies first, the lease runs out and any publisher
-- sends the row.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    node_run_id    uuid NOT NULL,
    attempt        integer NOT NULL,
    routing_key    text NOT NULL,
    not_before     timestamptz NOT NULL DEFAULT now(),
    claimed_until  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    UNIQUE (node_run_id, attempt)
);
CREATE INDEX outbox_due ON outbox (not_before) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    version      text NOT NULL,
    modules      text[] NOT NULL,
    concurrency  integer NOT NULL,
    running      integer NOT NULL,
    status       text NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL
);
