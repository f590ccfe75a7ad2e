-- Jobs already holding an idempotency key, or a unique key while still live.
SELECT id, unique_key, idempotency_key
FROM kiln_jobs
WHERE idempotency_key = ANY ($1::text[])
   OR (unique_key = ANY ($2::text[]) AND state NOT IN ('succeeded', 'failed', 'cancelled'))
