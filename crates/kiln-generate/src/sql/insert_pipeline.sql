-- A generation pipeline: its input workspace (NULL: it starts empty), languages asked for,
-- tags, the submitting API token and the request the loop runs.
INSERT INTO kiln_pipelines (kind, workspace, languages, tags, created_by_token, request)
VALUES ('generation', $1, $2, $3, $4, $5)
RETURNING id
