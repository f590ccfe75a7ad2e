-- Job kinds as modules (issue 15): the kind is text checked against the one list in
-- `kiln_queue::JobKind` (a test compares this constraint with it), attempts keep what their
-- kind produced as JSON, and every final transition writes an event to an outbox.

-- Kinds: text with a CHECK instead of an enum type, so adding a kind is one append-only
-- migration that replaces the constraint.
ALTER TABLE kiln_jobs ALTER COLUMN kind TYPE text USING kind::text;
ALTER TABLE kiln_jobs ADD CONSTRAINT kiln_jobs_kind_known
    CHECK (kind IN ('generation', 'test', 'lint', 'security-scan', 'preview', 'notification'));
DROP TYPE kiln_job_kind;

-- Attempt details: kind-owned JSON. The sandbox columns validation filled move into it,
-- nothing lost (null fields are left out).
ALTER TABLE kiln_attempts ADD COLUMN details jsonb;
UPDATE kiln_attempts
SET details = jsonb_strip_nulls(jsonb_build_object(
        'exit_code', exit_code, 'container_id', container_id, 'image_digest', image_digest,
        'peak_memory_bytes', peak_memory_bytes, 'cpu_time_ms', cpu_time_ms,
        'stdout_head', stdout_head, 'stdout_tail', stdout_tail,
        'stderr_head', stderr_head, 'stderr_tail', stderr_tail,
        'diff', diff, 'diff_files', diff_files, 'diff_insertions', diff_insertions,
        'diff_deletions', diff_deletions, 'timings', timings))
WHERE num_nonnulls(exit_code, container_id, image_digest, peak_memory_bytes, cpu_time_ms,
                   stdout_head, stdout_tail, stderr_head, stderr_tail, diff, diff_files,
                   diff_insertions, diff_deletions, timings) > 0;
ALTER TABLE kiln_attempts
    DROP COLUMN exit_code, DROP COLUMN container_id, DROP COLUMN image_digest,
    DROP COLUMN peak_memory_bytes, DROP COLUMN cpu_time_ms,
    DROP COLUMN stdout_head, DROP COLUMN stdout_tail, DROP COLUMN stderr_head, DROP COLUMN stderr_tail,
    DROP COLUMN diff, DROP COLUMN diff_files, DROP COLUMN diff_insertions, DROP COLUMN diff_deletions,
    DROP COLUMN timings;

-- The job-event outbox. Ids are handed out by `kiln_event_ids`, which takes the one counter
-- row's lock until its transaction ends: event-writing transactions therefore commit in the
-- order of their ids, and a reader that reads `id > cursor` can never see a higher id before a
-- lower one (no late-committing lower id to skip). Statements call it last, after their own
-- row locks, so the counter is held only for the event insert and the commit.
CREATE TABLE kiln_event_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id   bigint NOT NULL
);
INSERT INTO kiln_event_counter VALUES (true, 0);

-- One row per writing statement (a completion batch, a rescue pass, a cancel), holding its
-- events' fields as parallel arrays: event `first_id + i - 1` is the i-th element. Readers
-- expand the rows (`unnest … WITH ORDINALITY`) and see one event per job with its own id; a
-- batch of 1,000 completions writes one tuple and one index entry instead of a thousand.
CREATE TABLE kiln_events (
    last_id      bigint PRIMARY KEY,
    first_id     bigint NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    types        text[] NOT NULL,
    job_ids      bigint[] NOT NULL,
    pipeline_ids bigint[] NOT NULL,
    queues       text[] NOT NULL,
    kinds        text[] NOT NULL,
    data         jsonb[] NOT NULL,
    CONSTRAINT kiln_events_block CHECK (
        cardinality(types) = last_id - first_id + 1
        AND cardinality(job_ids) = cardinality(types) AND cardinality(pipeline_ids) = cardinality(types)
        AND cardinality(queues) = cardinality(types) AND cardinality(kinds) = cardinality(types)
        AND cardinality(data) = cardinality(types))
);

-- Reserves `n` consecutive event ids and returns the first (NULL when n = 0, taking no lock).
-- One NOTIFY kiln_events per call, delivered at commit.
CREATE FUNCTION kiln_event_ids(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
BEGIN
    IF n IS NULL OR n <= 0 THEN
        RETURN NULL;
    END IF;
    UPDATE kiln_event_counter SET last_id = last_id + n RETURNING last_id INTO last;
    PERFORM pg_notify('kiln_events', last::text);
    RETURN last - n + 1;
END;
$$;

-- Pipeline settling and waits follow the outbox now (`job.*` events carry the pipeline id):
-- the per-row NOTIFY trigger of migration 0005 goes.
DROP TRIGGER kiln_jobs_pipeline_final ON kiln_jobs;
DROP FUNCTION kiln_notify_pipeline_job();
