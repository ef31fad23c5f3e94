-- Priorities and fair share (issue 14). A run's priority (`shared::scheduling::Priority`:
-- 0 bulk, 1 normal, 2 rush, 3 interactive) and its submitter (the request's tenant, else the
-- API token's name) are copied onto its outbox rows. While a module's broker queue is full
-- (its window), its rows wait here and the publisher takes them by priority, then by `tag`:
-- a fair-queueing tag given when the row is written (see outbox_tag_base), so that
-- submitters take turns however many rows each has waiting.
ALTER TABLE runs
    ADD COLUMN priority  smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    ADD COLUMN submitter text NOT NULL DEFAULT '';
ALTER TABLE render_requests
    ADD COLUMN priority  smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    ADD COLUMN submitter text NOT NULL DEFAULT '';
-- NULL: normal.
ALTER TABLE output_types ADD COLUMN default_priority smallint CHECK (default_priority BETWEEN 0 AND 3);
ALTER TABLE outbox
    ADD COLUMN priority  smallint NOT NULL DEFAULT 1,
    ADD COLUMN submitter text NOT NULL DEFAULT '',
    ADD COLUMN tag       bigint NOT NULL DEFAULT 0;
-- The publisher's order, and the lowest waiting tag of a priority.
CREATE INDEX outbox_waiting ON outbox (routing_key, priority DESC, tag, id) WHERE sent_at IS NULL;
-- A submitter's last waiting tag.
CREATE INDEX outbox_waiting_submitter ON outbox (routing_key, priority, submitter, tag) WHERE sent_at IS NULL;
-- What each submitter has sent but not started, counted only when submitters have limits.
CREATE INDEX node_runs_queued ON node_runs (module_key) WHERE status = 'queued';

-- The tag before a new row's: the submitter's last waiting one (it queues behind its own
-- rows), else one ahead of the lowest waiting one of the priority (a submitter with nothing
-- waiting goes first: the others have had their turn), else 0. Rows written by one
-- statement add their row number (they cannot see each other).
CREATE FUNCTION outbox_tag_base(rk text, prio smallint, who text) RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    (SELECT max(tag) FROM outbox WHERE routing_key = rk AND priority = prio AND submitter = who AND sent_at IS NULL),
    (SELECT min(tag) - 2 FROM outbox WHERE routing_key = rk AND priority = prio AND sent_at IS NULL),
    0)
$$;
