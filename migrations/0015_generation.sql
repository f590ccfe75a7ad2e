-- Generation pipelines (issue 11): the generate → validate → regenerate loop is a pipeline of
-- kind 'generation'. It may start from no workspace, may end `partial` (iterations or budget
-- exhausted, said by `stop_reason`), keeps its request, and records each iteration in
-- kiln_generation_iterations (the iteration's workspace and messages are artifacts).
ALTER TABLE kiln_pipelines DROP CONSTRAINT kiln_pipelines_kind_check;
ALTER TABLE kiln_pipelines
    ADD CONSTRAINT kiln_pipelines_kind_check CHECK (kind IN ('validation', 'generation'));
ALTER TABLE kiln_pipelines DROP CONSTRAINT kiln_pipelines_verdict_check;
ALTER TABLE kiln_pipelines
    ADD CONSTRAINT kiln_pipelines_verdict_check CHECK (verdict IN ('passed', 'failed', 'error', 'partial'));
ALTER TABLE kiln_pipelines ALTER COLUMN workspace DROP NOT NULL;
ALTER TABLE kiln_pipelines
    ADD COLUMN stop_reason text CHECK (stop_reason IN ('max_iterations', 'budget')),
    ADD COLUMN request jsonb,
    ADD CONSTRAINT kiln_pipelines_partial_has_reason
        CHECK ((verdict IS NOT DISTINCT FROM 'partial') = (stop_reason IS NOT NULL)),
    ADD CONSTRAINT kiln_pipelines_workspace_or_generation
        CHECK (workspace IS NOT NULL OR kind = 'generation');

-- One row per generated iteration, written in the generating job's transaction together with
-- the iteration's validation jobs ('validating'), and settled once they are final
-- ('validated': verdict, score, merged validation result).
CREATE TABLE kiln_generation_iterations (
    pipeline_id   bigint NOT NULL REFERENCES kiln_pipelines (id) ON DELETE CASCADE,
    iteration     integer NOT NULL CHECK (iteration BETWEEN 1 AND 10),
    job_id        bigint NOT NULL,
    state         text NOT NULL DEFAULT 'validating' CHECK (state IN ('validating', 'validated')),
    workspace     text NOT NULL REFERENCES kiln_artifacts (digest),
    messages      text NOT NULL REFERENCES kiln_artifacts (digest),
    -- provider, model, tokens by type, cost, latency, retries, diffs: the job's result
    record        jsonb NOT NULL,
    -- the model's calls were cut by a budget: the loop ends after this iteration's validation
    budget_stop   boolean NOT NULL DEFAULT false,
    verdict       text CHECK (verdict IN ('passed', 'failed', 'error')),
    quality_score smallint CHECK (quality_score BETWEEN 1 AND 10),
    validation    jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    validated_at  timestamptz,
    PRIMARY KEY (pipeline_id, iteration),
    CONSTRAINT kiln_generation_iterations_validated
        CHECK ((state = 'validated') = (validated_at IS NOT NULL))
);
CREATE INDEX kiln_generation_iterations_workspace ON kiln_generation_iterations (workspace);
CREATE INDEX kiln_generation_iterations_messages ON kiln_generation_iterations (messages);

-- A hand retry that reopens a pipeline clears its stop reason too.
CREATE OR REPLACE FUNCTION kiln_reopen_pipeline() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM kiln_pipelines WHERE id = NEW.pipeline_id FOR UPDATE;
    UPDATE kiln_pipelines
    SET state = 'running', verdict = NULL, quality_score = NULL, result = NULL, finished_at = NULL,
        stop_reason = NULL
    WHERE id = NEW.pipeline_id AND state = 'finished';
    RETURN NULL;
END;
$$;
