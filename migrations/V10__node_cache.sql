-- The node result cache (issue 13): a cacheable node's outputs by content address, the key
-- of `shared::cache::key` (node type, module build fingerprint, params, input bytes). An
-- entry is written by the success that produced it and replaced by a later one (a refresh,
-- or the entry's artifacts were gone); failures are never written.
CREATE TABLE node_cache (
    key          text PRIMARY KEY CHECK (key ~ '^[0-9a-f]{64}$'),
    module_key   text NOT NULL,
    outputs      jsonb NOT NULL,
    -- the success it holds; a plain id, so pruning runs does not empty the cache
    node_run_id  uuid NOT NULL,
    run_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    hits         bigint NOT NULL DEFAULT 0,
    last_hit_at  timestamptz
);

-- `use`: nodes may be served from the cache; `refresh`: every node runs (a re-render on
-- purpose) and its results replace the entries.
ALTER TABLE runs ADD COLUMN cache_mode text NOT NULL DEFAULT 'use' CHECK (cache_mode IN ('use', 'refresh'));

-- The node's cache key (served from it or stored under it), and for a node served from the
-- cache, the node_run whose outputs it took.
ALTER TABLE node_runs ADD COLUMN cache_key text, ADD COLUMN cached_from uuid;
