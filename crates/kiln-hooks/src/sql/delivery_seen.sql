-- The job an earlier delivery enqueued.
SELECT job_id FROM kiln_hook_deliveries WHERE hook = $1 AND delivery_id = $2
