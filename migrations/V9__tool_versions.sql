-- What each worker reports about its build (issue 13, the node result cache): the versions of
-- the external tools its modules use, and per module the fingerprint of its build (module,
-- worker version, scripts, tool versions), which the cache keys on.
ALTER TABLE workers
    ADD COLUMN tools jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN fingerprints jsonb NOT NULL DEFAULT '{}';
