-- Hardening of the API (issue 14): a pipeline knows the API token that created it (NULL when
-- it was submitted from the CLI or a library call), so that retrying one of its jobs through
-- the API — which reopens the pipeline — is refused to other non-admin tokens. Finished
-- pipelines are pruned by age: an index on their finishing time keeps that cheap.
ALTER TABLE kiln_pipelines
    ADD COLUMN created_by_token bigint REFERENCES kiln_api_tokens (id) ON DELETE SET NULL;

CREATE INDEX kiln_pipelines_finished_at ON kiln_pipelines (finished_at) WHERE state = 'finished';
