-- Workspaces stored once as artifacts (canonical tar, gzip-compressed, content-addressed), and
-- validation pipelines over them with their settled verdict and quality score.

CREATE TABLE kiln_artifacts (
    digest       text PRIMARY KEY CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),     -- the uncompressed tar
    stored_bytes bigint NOT NULL CHECK (stored_bytes >= 0),   -- what `data` holds
    files        integer NOT NULL CHECK (files >= 0),
    data         bytea NOT NULL,
    source       jsonb NOT NULL DEFAULT '{}',                  -- how it was produced (dir, git)
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kiln_pipelines (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('validation')),
    workspace     text NOT NULL REFERENCES kiln_artifacts (digest),
    languages     text[] NOT NULL,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'finished')),
    verdict       text CHECK (verdict IN ('passed', 'failed', 'error')),
    quality_score smallint CHECK (quality_score BETWEEN 1 AND 10),
    result        jsonb,
    tags          text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CONSTRAINT kiln_pipelines_finished_has_verdict
        CHECK ((state = 'finished') = (finished_at IS NOT NULL AND verdict IS NOT NULL))
);
CREATE INDEX kiln_pipelines_running ON kiln_pipelines (id) WHERE state = 'running';
CREATE INDEX kiln_pipelines_workspace ON kiln_pipelines (workspace);

-- A pipeline job reaching a final state wakes whoever settles or waits for the pipeline.
-- Only pipeline jobs pay for this trigger (the WHEN clause is checked before any call).
CREATE FUNCTION kiln_notify_pipeline_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_pipelines', NEW.pipeline_id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER kiln_jobs_pipeline_final
    AFTER UPDATE OF state ON kiln_jobs
    FOR EACH ROW
    WHEN (NEW.pipeline_id IS NOT NULL AND NEW.finalized_at IS NOT NULL AND OLD.finalized_at IS NULL)
    EXECUTE FUNCTION kiln_notify_pipeline_job();
