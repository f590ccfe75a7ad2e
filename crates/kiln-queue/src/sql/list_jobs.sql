-- A page of jobs, newest first, after the keyset cursor $8 (an id; NULL starts at the newest).
-- Every filter is optional (NULL matches all).
SELECT id, queue, kind::text AS kind, state::text AS state, payload, priority, run_at,
       attempt, max_attempts, timeout_ms, unique_key, idempotency_key, tags, pipeline_id, depends_on,
       created_at, attempted_at, finalized_at, locked_by, lease_expires_at, cancel_requested_at,
       result, last_error
FROM kiln_jobs
WHERE ($1::text IS NULL OR queue = $1)
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::text[] IS NULL OR state = ANY ($3::kiln_job_state[]))
  AND ($4::text IS NULL OR tags @> ARRAY[$4::text])
  AND ($5::timestamptz IS NULL OR created_at >= $5)
  AND ($6::timestamptz IS NULL OR created_at < $6)
  AND ($7::bigint IS NULL OR pipeline_id = $7)
  AND ($8::bigint IS NULL OR id < $8)
ORDER BY id DESC
LIMIT $9
