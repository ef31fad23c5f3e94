-- Each coordinator's result-reading watermark: up to when it had read and stored every
-- result and heartbeat (NULL: not caught up yet). The recovery sweepers judge an attempt
-- lost only against the lowest watermark of the coordinators seen lately, so a coordinator
-- that holds unread heartbeats (frozen, or cut off from the database) holds every sweeper
-- back. See coordinator/src/recovery/mod.rs.
CREATE TABLE coordinator_watermarks (
    instance      text PRIMARY KEY,
    caught_up_at  timestamptz,
    seen_at       timestamptz NOT NULL
);
