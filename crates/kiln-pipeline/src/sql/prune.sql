-- Removes up to $2 pipelines finished more than $1 seconds ago (their jobs are pruned by the
-- queue's own retention; a job retried after this no longer has a pipeline to reopen).
WITH gone AS (
    DELETE FROM kiln_pipelines
    WHERE id IN (
        SELECT id FROM kiln_pipelines
        WHERE state = 'finished' AND finished_at < now() - make_interval(secs => $1)
        ORDER BY finished_at
        LIMIT $2
    )
    RETURNING id
)
SELECT count(*) AS pruned FROM gone
