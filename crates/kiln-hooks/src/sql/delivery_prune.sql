-- Removes webhook deliveries recorded more than $1 seconds ago.
WITH gone AS (
    DELETE FROM kiln_hook_deliveries
    WHERE received_at < now() - make_interval(secs => $1)
    RETURNING 1
)
SELECT count(*) AS pruned FROM gone
