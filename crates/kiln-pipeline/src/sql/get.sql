SELECT id, kind, workspace, languages, state, verdict, stop_reason, quality_score, result, tags,
       created_at, finished_at
FROM kiln_pipelines WHERE id = $1
