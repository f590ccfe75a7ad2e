INSERT INTO kiln_pipelines (kind, workspace, languages, tags)
VALUES ('validation', $1, $2, $3)
RETURNING id
