-- Shadow comparisons, rollout events, and the runs that serve them.

-- Compare runs (the `compare` task of a shadow pair) belong to their request too.
ALTER TABLE runs DROP CONSTRAINT runs_role_check;
ALTER TABLE runs ADD CONSTRAINT runs_role_check CHECK (role IN ('authoritative', 'shadow', 'fallback', 'comparison'));
-- Finished runs of requests are what the rollout reconciler looks at; graph-mode failure
-- rates read an output type's recent authoritative graph runs.
CREATE INDEX runs_request_finished ON runs (finished_at) WHERE request_id IS NOT NULL;
CREATE INDEX runs_graph_authoritative ON runs (output_type_key, finished_at DESC)
    WHERE role = 'authoritative' AND pipeline = 'graph';

-- One comparison per request and kind: `shadow` is graph (candidate) against legacy
-- (control); `noise` is legacy against legacy (A/A), the noise floor the gate subtracts.
CREATE TABLE comparisons (
    id                 uuid PRIMARY KEY,
    request_id         uuid NOT NULL REFERENCES render_requests (id),
    output_type_key    text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('shadow', 'noise')),
    control_run        uuid NOT NULL REFERENCES runs (id),
    candidate_run      uuid NOT NULL REFERENCES runs (id),
    -- the run of the compare task, when both sides produced an artifact
    compare_run        uuid REFERENCES runs (id),
    status             text NOT NULL CHECK (status IN ('comparing', 'done', 'failed')),
    verdict            text CHECK (verdict IN ('match', 'mismatch', 'candidate_error', 'control_error', 'ignored')),
    ignore_rule        text,
    metrics            jsonb NOT NULL DEFAULT '{}',
    -- the diff image of a mismatch, in the artifact store
    diff_sha256        text,
    control_seconds    double precision,
    candidate_seconds  double precision,
    created_at         timestamptz NOT NULL DEFAULT now(),
    decided_at         timestamptz,
    UNIQUE (request_id, kind),
    CHECK ((status = 'done') = (verdict IS NOT NULL))
);
CREATE INDEX comparisons_gate ON comparisons (output_type_key, kind, decided_at DESC) WHERE status = 'done';
CREATE INDEX comparisons_comparing ON comparisons (compare_run) WHERE status = 'comparing';

-- Every change of an output type's rollout mode, with the gate as it stood.
CREATE TABLE rollout_events (
    id               bigserial PRIMARY KEY,
    output_type_key  text NOT NULL REFERENCES output_types (key),
    from_mode        text NOT NULL,
    to_mode          text NOT NULL,
    reason           text NOT NULL,
    actor            text NOT NULL,
    forced           boolean NOT NULL DEFAULT false,
    gate_snapshot    jsonb NOT NULL DEFAULT '{}',
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollout_events_by_type ON rollout_events (output_type_key, at DESC);
