-- Kiln's durable queue: jobs, their attempts, queue settings and the worker registry.
-- Every table and type Kiln creates starts with `kiln_` so it can be found and dropped.

CREATE TYPE kiln_job_state AS ENUM (
    'pending', 'scheduled', 'available', 'running',
    'succeeded', 'retryable', 'failed', 'cancelled'
);

CREATE TYPE kiln_job_kind AS ENUM (
    'generation', 'test', 'lint', 'security-scan', 'preview', 'notification'
);

CREATE TYPE kiln_attempt_outcome AS ENUM (
    'succeeded', 'failed', 'timed_out', 'lost', 'cancelled', 'interrupted'
);

CREATE TABLE kiln_jobs (
    id                  bigserial PRIMARY KEY,
    queue               text NOT NULL CHECK (queue ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    kind                kiln_job_kind NOT NULL,
    state               kiln_job_state NOT NULL,
    payload             jsonb NOT NULL DEFAULT '{}',
    priority            smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    run_at              timestamptz NOT NULL DEFAULT now(),
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_ms          integer NOT NULL DEFAULT 120000 CHECK (timeout_ms > 0),
    unique_key          text,
    idempotency_key     text,
    tags                text[] NOT NULL DEFAULT '{}',
    pipeline_id         bigint,
    depends_on          bigint[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    attempted_at        timestamptz,
    finalized_at        timestamptz,
    locked_by           text,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    result              jsonb,
    last_error          text,
    CONSTRAINT kiln_jobs_finalized_iff_final
        CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finalized_at IS NOT NULL)),
    CONSTRAINT kiln_jobs_running_is_leased
        CHECK ((state = 'running') = (locked_by IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim path: only non-final, runnable rows are indexed, so it stays small.
CREATE INDEX kiln_jobs_fetch ON kiln_jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- The rescuer and per-queue running counts: only running rows.
CREATE INDEX kiln_jobs_running ON kiln_jobs (lease_expires_at)
    WHERE state = 'running';
-- No two live jobs share a unique key; a finished job frees it.
CREATE UNIQUE INDEX kiln_jobs_unique_key ON kiln_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled');
-- The same request returns the same job for as long as the job is kept.
CREATE UNIQUE INDEX kiln_jobs_idempotency_key ON kiln_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Jobs waiting for parents.
CREATE INDEX kiln_jobs_pending ON kiln_jobs USING gin (depends_on)
    WHERE state = 'pending';
-- Pruning by age per final state.
CREATE INDEX kiln_jobs_finalized ON kiln_jobs (state, finalized_at)
    WHERE finalized_at IS NOT NULL;
CREATE INDEX kiln_jobs_pipeline ON kiln_jobs (pipeline_id) WHERE pipeline_id IS NOT NULL;

CREATE TABLE kiln_attempts (
    id                bigserial PRIMARY KEY,
    job_id            bigint NOT NULL REFERENCES kiln_jobs (id) ON DELETE CASCADE,
    attempt           integer NOT NULL,
    worker_id         text NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    outcome           kiln_attempt_outcome NOT NULL,
    error             text,
    exit_code         integer,
    container_id      text,
    image_digest      text,
    peak_memory_bytes bigint,
    cpu_time_ms       bigint,
    stdout_head       text,
    stdout_tail       text,
    stderr_head       text,
    stderr_tail       text,
    diff              text,
    diff_files        integer,
    diff_insertions   integer,
    diff_deletions    integer,
    result            jsonb
);
CREATE INDEX kiln_attempts_job ON kiln_attempts (job_id, attempt);

CREATE TABLE kiln_queues (
    name        text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    max_running integer CHECK (max_running > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kiln_workers (
    id                text PRIMARY KEY,
    host              text NOT NULL,
    pid               integer NOT NULL,
    queues            text[] NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);

-- Wake-ups: one notification per queue per inserting statement (Postgres folds
-- duplicates inside a transaction). Workers also poll, so none of this is load-bearing.
CREATE FUNCTION kiln_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    FOR q IN SELECT DISTINCT queue FROM inserted WHERE state = 'available' LOOP
        PERFORM pg_notify('kiln_jobs', q);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER kiln_jobs_notify_insert
    AFTER INSERT ON kiln_jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_insert();
