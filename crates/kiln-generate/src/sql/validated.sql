-- An iteration's validation settled: its verdict, score (retry penalty applied) and results.
UPDATE kiln_generation_iterations
SET state = 'validated', verdict = $3, quality_score = $4, validation = $5, validated_at = now()
WHERE pipeline_id = $1 AND iteration = $2 AND state = 'validating'
