-- The contract layer: versioned workflows, output types, render requests, and the links
-- from runs to what they ran for.

-- A workflow is a graph of one family. An edit inserts a new version; nothing is updated
-- in place, so a run can always show the graph it ran (runs pin (workflow_id, version)).
CREATE TABLE workflows (
    id             uuid NOT NULL,
    version        integer NOT NULL CHECK (version > 0),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    family         text NOT NULL CHECK (family IN ('cad_file', 'order_line')),
    -- normalised: current type names, ports named, params with defaults
    graph          jsonb NOT NULL,
    -- an imported graph whose nodes belong to different families: stored so it can be
    -- repaired, refused by preflight and dispatch
    mixed_family   boolean NOT NULL DEFAULT false,
    -- the version this one was produced from by `repair`
    repaired_from  integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);

-- An invocation profile: what the order system asks for by key.
CREATE TABLE output_types (
    key                   text PRIMARY KEY CHECK (key ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    description           text NOT NULL DEFAULT '',
    family                text NOT NULL CHECK (family IN ('cad_file', 'order_line')),
    artifact_kind         text NOT NULL,
    -- none: legacy only
    workflow_id           uuid,
    -- none: the workflow's latest version at dispatch time
    workflow_version      integer,
    -- per node id, params merged over the workflow's
    invocation_overrides  jsonb NOT NULL DEFAULT '{}',
    -- the legacy pipeline's raw preset, kept apart from the overrides
    legacy_preset         jsonb NOT NULL DEFAULT '{}',
    rollout_mode          text NOT NULL DEFAULT 'legacy' CHECK (rollout_mode IN ('legacy', 'shadow', 'graph')),
    shadow_sample_pct     double precision NOT NULL DEFAULT 0 CHECK (shadow_sample_pct BETWEEN 0 AND 100),
    gate_config           jsonb NOT NULL DEFAULT '{}',
    -- bumped on every edit (optimistic concurrency and audit)
    revision              integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (rollout_mode = 'legacy' OR workflow_id IS NOT NULL)
);

-- What the order system asked for. The idempotency key makes a retried request return the
-- first answer instead of rendering twice.
CREATE TABLE render_requests (
    id               uuid PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    order_line_id    text NOT NULL,
    subject          jsonb NOT NULL,
    output_type_key  text NOT NULL REFERENCES output_types (key),
    -- a fingerprint of the request, to tell a retry from a different request reusing a key
    fingerprint      jsonb NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE runs
    ADD COLUMN request_id        uuid REFERENCES render_requests (id),
    ADD COLUMN output_type_key   text,
    ADD COLUMN workflow_id       uuid,
    ADD COLUMN workflow_version  integer;
CREATE INDEX runs_request ON runs (request_id) WHERE request_id IS NOT NULL;
