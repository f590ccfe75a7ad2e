-- The pipeline's creating API token (NULL: submitted from the CLI or a library call); no row
-- when there is no such pipeline.
SELECT created_by_token FROM kiln_pipelines WHERE id = $1
