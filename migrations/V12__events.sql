-- Completion events for the order system (issue 14): a transactional outbox of what happened
-- to render requests, delivered to webhook subscriptions over HTTP and published on the
-- `<prefix>.events` topic exchange. An event is written by the database itself, in the
-- transaction that ends the run (whichever code path ends it: a result, a cancel, the
-- recovery sweeper), so no outcome can be missed or reported without having happened.

CREATE TABLE events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- `shared::events::EventType`
    type             text NOT NULL CHECK (type IN ('request.succeeded', 'request.failed', 'request.cancelled', 'request.fallback')),
    request_id       uuid NOT NULL REFERENCES render_requests (id) ON DELETE CASCADE,
    -- the run whose end (or, for request.fallback, whose start) it reports
    run_id           uuid NOT NULL,
    output_type_key  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the body every delivery sends, built once (the first delivery or publish), so that
    -- every copy of an event is the same bytes whatever changed since
    payload          jsonb,
    -- on the events exchange (confirmed by the broker)
    published_at     timestamptz
);
CREATE INDEX events_unpublished ON events (created_at) WHERE published_at IS NULL;
CREATE INDEX events_request ON events (request_id);

CREATE TABLE webhooks (
    id           uuid PRIMARY KEY,
    url          text NOT NULL CHECK (url ~ '^https?://'),
    -- the HMAC key deliveries are signed with; kept to sign, never shown again
    secret       text NOT NULL CHECK (length(secret) >= 16),
    event_types  text[] NOT NULL CHECK (cardinality(event_types) > 0),
    description  text NOT NULL DEFAULT '',
    created_by   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per event and subscription, written with the event: retried with backoff until
-- the receiver answers 2xx or `webhooks.give_up_after` has passed.
CREATE TABLE webhook_deliveries (
    event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- when the next attempt is due; while an attempt is in flight, when it counts as lost
    next_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_attempt_at  timestamptz,
    -- the receiver's HTTP status, or NULL when there was no answer
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    PRIMARY KEY (event_id, webhook_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, event_id);

-- Writes an event (and its deliveries) for a request's answering run.
CREATE FUNCTION request_event(kind text, r runs) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    event uuid;
BEGIN
    INSERT INTO events (type, request_id, run_id, output_type_key)
    VALUES (kind, r.request_id, r.id, coalesce(r.output_type_key, '')) RETURNING id INTO event;
    INSERT INTO webhook_deliveries (event_id, webhook_id)
    SELECT event, w.id FROM webhooks w WHERE kind = ANY (w.event_types);
END $$;

-- A request's authoritative or fallback run ended. Deferred to the commit, so that a graph
-- run whose failure started a legacy fallback (in the same transaction) reports the
-- fallback, not a failure: the request is not over.
CREATE FUNCTION runs_ended_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role = 'authoritative' AND NEW.status = 'failed'
       AND EXISTS (SELECT 1 FROM runs f WHERE f.request_id = NEW.request_id AND f.role = 'fallback') THEN
        RETURN NULL;
    END IF;
    PERFORM request_event('request.' || NEW.status, NEW);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER runs_ended_event AFTER UPDATE OF status ON runs DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND NEW.request_id IS NOT NULL
                   AND NEW.role IN ('authoritative', 'fallback'))
EXECUTE FUNCTION runs_ended_event();

CREATE FUNCTION runs_fallback_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM request_event('request.fallback', NEW);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER runs_fallback_event AFTER INSERT ON runs DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW WHEN (NEW.role = 'fallback' AND NEW.request_id IS NOT NULL)
EXECUTE FUNCTION runs_fallback_event();
