-- The HTTP API's own tables: API tokens (stored as SHA-256 hashes, never in the clear),
-- webhooks with the job template they enqueue, and the deliveries already seen (so a
-- repeated delivery enqueues nothing). Everything is prefixed `kiln_` like the rest.

CREATE TABLE kiln_api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['jobs:read', 'jobs:write', 'admin']
                                        AND cardinality(scopes) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE kiln_hooks (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    secret     text NOT NULL CHECK (length(secret) BETWEEN 16 AND 256),
    -- The job to enqueue (a JobSpec) with {{repository}}, {{commit}}, {{ref}}, {{event}},
    -- {{delivery}} and {{hook}} substituted in its strings.
    template   jsonb NOT NULL,
    -- GitHub events that trigger it (push, pull_request); ignored by generic deliveries.
    events     text[] NOT NULL DEFAULT ARRAY['push', 'pull_request'],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kiln_hook_deliveries (
    hook        text NOT NULL REFERENCES kiln_hooks (name) ON DELETE CASCADE,
    delivery_id text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    job_id      bigint,
    PRIMARY KEY (hook, delivery_id)
);
-- Pruning of old deliveries by age.
CREATE INDEX kiln_hook_deliveries_received ON kiln_hook_deliveries (received_at);

-- Enqueue wake-ups without serializing commits: every transaction that NOTIFYs holds one
-- database-wide lock from its commit until its WAL flush, so enqueue statements carrying the
-- trigger's NOTIFY commit one at a time (measured: ~200 commits/s under load, whatever the
-- concurrency). A session that sets `kiln.defer_notify = on` (the API's enqueue pool) skips
-- the trigger and sends its wake-ups afterwards in tiny separate transactions. Everyone else
-- is unchanged.
CREATE OR REPLACE FUNCTION kiln_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    IF current_setting('kiln.defer_notify', true) = 'on' THEN
        RETURN NULL;
    END IF;
    FOR q IN SELECT DISTINCT queue FROM inserted WHERE state = 'available' LOOP
        PERFORM pg_notify('kiln_jobs', q);
    END LOOP;
    RETURN NULL;
END;
$$;
