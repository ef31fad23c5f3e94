-- The order system's side (issue 14), second part.
-- A worker's quarantined modules, from its heartbeat (`wire::Quarantined`): a module that
-- kept failing there for reasons not about the input. Shown in the console and the API.
ALTER TABLE workers ADD COLUMN quarantined jsonb NOT NULL DEFAULT '[]';

-- The requests list, newest first (keyset on received_at, id).
CREATE INDEX render_requests_received ON render_requests (received_at DESC, id DESC);

-- Old events are pruned by age (`webhooks.keep_events`).
CREATE INDEX events_created ON events (created_at);

-- A request's estimated finish reads the recent run times of its output type.
CREATE INDEX runs_recent_by_output_type ON runs (output_type_key, finished_at DESC)
    WHERE status = 'succeeded' AND role IN ('authoritative', 'fallback');
