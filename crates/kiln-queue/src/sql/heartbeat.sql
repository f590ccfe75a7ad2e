-- Extend the leases worker $1 holds on jobs $2 by $3 seconds. Rows not returned are no
-- longer this worker's (rescued or finished elsewhere); `cancel` asks the holder to stop.
UPDATE kiln_jobs
SET lease_expires_at = now() + make_interval(secs => $3::float8)
WHERE id = ANY ($2::bigint[]) AND locked_by = $1 AND state::text = 'running'
RETURNING id, cancel_requested_at IS NOT NULL AS cancel
