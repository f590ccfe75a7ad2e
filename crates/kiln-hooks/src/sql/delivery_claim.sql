-- Record a delivery and the job it enqueued (a repeat keeps the first record).
INSERT INTO kiln_hook_deliveries (hook, delivery_id, event, job_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
