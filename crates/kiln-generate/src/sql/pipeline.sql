-- What an iteration needs of its generation pipeline.
SELECT id, state, workspace, created_by_token, request
FROM kiln_pipelines WHERE id = $1 AND kind = 'generation'
