-- The stored request fields of jobs returned for an idempotency key, to compare with a repeat.
SELECT id, idempotency_key, queue, kind::text AS kind, payload, priority, max_attempts, attempt,
       timeout_ms, unique_key, tags, depends_on
FROM kiln_jobs WHERE id = ANY($1)
