-- Records a generated iteration once: a repeated attempt of the same job inserts nothing.
-- With no project to validate ($8 false) it is validated at once, as an error.
INSERT INTO kiln_generation_iterations
    (pipeline_id, iteration, job_id, workspace, messages, record, budget_stop,
     state, verdict, validation, validated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7,
        CASE WHEN $8 THEN 'validating' ELSE 'validated' END,
        CASE WHEN $8 THEN NULL ELSE 'error' END,
        CASE WHEN $8 THEN NULL ELSE $9::jsonb END,
        CASE WHEN $8 THEN NULL ELSE now() END)
ON CONFLICT (pipeline_id, iteration) DO NOTHING
RETURNING iteration
