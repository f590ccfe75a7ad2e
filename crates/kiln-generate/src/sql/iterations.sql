-- Every iteration of a pipeline, oldest first.
SELECT iteration, job_id, state, workspace, budget_stop, verdict, quality_score, validation, record
FROM kiln_generation_iterations WHERE pipeline_id = $1
ORDER BY iteration
