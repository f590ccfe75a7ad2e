-- The iterations of a generation pipeline, as the pipeline view lists them.
SELECT iteration, job_id, state, workspace, messages, budget_stop, verdict, quality_score,
       record, created_at, validated_at
FROM kiln_generation_iterations WHERE pipeline_id = $1
ORDER BY iteration
