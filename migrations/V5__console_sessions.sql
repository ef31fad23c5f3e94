-- Web console sign-ins. The browser's cookie holds a random session id; only its SHA-256 is
-- kept here (a copy of this table signs nobody in), with the name and scopes of the API token
-- that signed in (never the token). The console narrows the scopes to what the token still
-- holds on every request, and deletes a session at sign-out; expired rows are cleared at
-- sign-in.
CREATE TABLE console_sessions (
    id_sha256   bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    token_name  text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
