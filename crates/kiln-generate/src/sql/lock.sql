-- The loop's lock on its pipeline (settling an iteration, finishing, enqueueing the next).
SELECT state, workspace, request FROM kiln_pipelines WHERE id = $1 AND kind = 'generation' FOR UPDATE
