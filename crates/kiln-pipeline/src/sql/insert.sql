INSERT INTO kiln_pipelines (kind, workspace, languages, tags, created_by_token)
VALUES ('validation', $1, $2, $3, $4)
RETURNING id
