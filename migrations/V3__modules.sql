-- Real modules: where each node's inputs come from, the artifacts runs produce, and the
-- material library with each product's material map.

-- Input port -> {"node_run": uuid, "port": output port} for an upstream output, or
-- {"context": "subject" | "product_materials"} for something of the run's. Resolved when
-- the task is built (workers have no database).
ALTER TABLE node_runs ADD COLUMN bindings jsonb NOT NULL DEFAULT '{}';

-- Content-addressed files in the artifact store, recorded from the results that name them.
CREATE TABLE artifacts (
    sha256          text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    kind            text NOT NULL,
    bytes           bigint NOT NULL CHECK (bytes >= 0),
    mime            text NOT NULL,
    meta            jsonb NOT NULL DEFAULT '{}',
    -- the node run that first produced it (the same bytes may come from many)
    first_node_run  uuid,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The material library.
CREATE TABLE materials (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    description  text NOT NULL DEFAULT '',
    -- sRGB, as people pick colours
    base_color   text NOT NULL CHECK (base_color ~ '^#[0-9A-Fa-f]{6}$'),
    metallic     double precision NOT NULL DEFAULT 0 CHECK (metallic BETWEEN 0 AND 1),
    roughness    double precision NOT NULL DEFAULT 0.5 CHECK (roughness BETWEEN 0 AND 1),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A product's material map. `target` is a part key (one occurrence) or a part name (every
-- instance of that part); a key wins over its part's name.
CREATE TABLE product_material_maps (
    product     text NOT NULL CHECK (length(product) BETWEEN 1 AND 200),
    target      text NOT NULL CHECK (length(target) BETWEEN 1 AND 1000),
    material    text NOT NULL REFERENCES materials (name) ON UPDATE CASCADE,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product, target)
);
