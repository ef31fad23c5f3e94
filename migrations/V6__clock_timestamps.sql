-- Outbox rows order events: stamp them with the wall clock at the insert, not the
-- transaction's start time (see coordinator/src/db/sql.rs).
ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT clock_timestamp();
ALTER TABLE outbox ALTER COLUMN not_before SET DEFAULT clock_timestamp();
