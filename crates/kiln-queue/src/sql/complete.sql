-- Record the end of a batch of attempts by worker $1. Guarded by worker and attempt
-- number, so a repeated or late completion changes nothing and writes no attempt row.
-- The jobs are found by primary key; `state::text` keeps the planner off the
-- partial `kiln_jobs_running` index, whose statistics lag during a burn-down and once made
-- this a nested loop over every running row per completed job (280 ms per 1,000 at 100k rows).
WITH done AS (
    SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[], $5::jsonb[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::jsonb[])
        AS d(id, attempt, outcome, result, error, started_at, finished_at, retry_at, details)
), decided AS (
    SELECT d.*,
           (CASE
               WHEN d.outcome = 'succeeded' THEN 'succeeded'
               WHEN d.outcome = 'cancelled' THEN 'cancelled'
               WHEN d.retry_at IS NULL OR j.attempt >= j.max_attempts THEN 'failed'
               ELSE 'retryable'
           END)::kiln_job_state AS next_state
    FROM done d
    JOIN kiln_jobs j ON j.id = d.id
    WHERE j.attempt = d.attempt AND j.locked_by = $1 AND j.state::text = 'running'
), upd AS (
    UPDATE kiln_jobs j
    SET state = d.next_state,
        finalized_at = CASE WHEN d.next_state IN ('succeeded', 'failed', 'cancelled')
                            THEN d.finished_at END,
        run_at = CASE WHEN d.next_state = 'retryable' THEN d.retry_at ELSE j.run_at END,
        locked_by = NULL,
        lease_expires_at = NULL,
        result = coalesce(d.result, j.result),
        last_error = d.error
    FROM decided d
    WHERE j.id = d.id AND j.attempt = d.attempt AND j.locked_by = $1 AND j.state::text = 'running'
    RETURNING j.id, j.state
), attempts AS (
    -- `details` is null for kinds that run no container; it fills the sandbox columns.
    INSERT INTO kiln_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error, result,
                               exit_code, container_id, image_digest, peak_memory_bytes, cpu_time_ms,
                               stdout_head, stdout_tail, stderr_head, stderr_tail,
                               diff, diff_files, diff_insertions, diff_deletions, timings)
    SELECT d.id, d.attempt, $1, d.started_at, d.finished_at, d.outcome::kiln_attempt_outcome, d.error, d.result,
           x.exit_code, x.container_id, x.image_digest, x.peak_memory_bytes, x.cpu_time_ms,
           x.stdout_head, x.stdout_tail, x.stderr_head, x.stderr_tail,
           x.diff, x.diff_files, x.diff_insertions, x.diff_deletions, x.timings
    FROM done d JOIN upd USING (id)
    LEFT JOIN LATERAL jsonb_to_record(d.details) AS x(
        exit_code int, container_id text, image_digest text, peak_memory_bytes bigint, cpu_time_ms bigint,
        stdout_head text, stdout_tail text, stderr_head text, stderr_tail text,
        diff text, diff_files int, diff_insertions int, diff_deletions int, timings jsonb) ON true
), released AS (
    -- Children whose last unfinished parent just succeeded become runnable.
    UPDATE kiln_jobs c
    SET state = CASE WHEN c.run_at > now() THEN 'scheduled' ELSE 'available' END::kiln_job_state
    WHERE c.state = 'pending'
      AND c.depends_on && ARRAY(SELECT id FROM upd WHERE state = 'succeeded')
      AND NOT EXISTS (
          SELECT 1 FROM kiln_jobs p
          WHERE p.id = ANY (c.depends_on) AND p.state <> 'succeeded'
            AND p.id NOT IN (SELECT id FROM upd WHERE state = 'succeeded'))
    RETURNING c.queue
)
SELECT u.id, u.state::text AS state,
       (SELECT count(*) FROM (SELECT pg_notify('kiln_jobs', q.queue)
                              FROM (SELECT DISTINCT queue FROM released) q) n) AS released_queues
FROM upd u
