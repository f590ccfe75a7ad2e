-- Record the end of a batch of attempts by worker $1. Guarded by worker and attempt
-- number, so a repeated or late completion changes nothing and writes no attempt row.
--
-- The plan is pinned by the statement's shape, not left to statistics, which lag far behind a
-- burn-down (they say no row is running or locked): `held` looks each job up by primary key in
-- a LATERAL subquery that `OFFSET 0` keeps from being flattened into a join, and `state::text`
-- keeps the partial `kiln_jobs_running` index out of that lookup; the UPDATE then fetches
-- exactly the ids it was given (`= ANY ($2)`, by primary key) and hashes them against `held`.
-- Joining the input to kiln_jobs under guards the planner misjudged gave a nested loop over
-- every running row per completed job: 625 ms per 1,000 completions at 100k jobs, against
-- 28-60 ms now; an UPDATE … FROM the input rescanned the input once per job (2.4 s per 1,000).
-- The lookup takes no row lock (it used to, `FOR NO KEY UPDATE`: one more WAL record per job,
-- 54 bytes): the UPDATE repeats every guard, and READ COMMITTED re-checks them on the row's
-- newest version when another transaction changed it meanwhile (a heartbeat passes them, a
-- rescue does not), so what it writes was decided on the version it replaces. (Matching rows
-- by ctid would skip a row that a heartbeat moved after this statement's snapshot.)
WITH done AS (
    SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[], $5::jsonb[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::jsonb[])
        AS d(id, attempt, outcome, result, error, started_at, finished_at, retry_at, details)
), held AS (
    SELECT d.*, j.max_attempts, $1::text AS worker, 'running'::text AS held_state,
           (CASE
               WHEN d.outcome = 'succeeded' THEN 'succeeded'
               WHEN d.outcome = 'cancelled' THEN 'cancelled'
               WHEN d.retry_at IS NULL OR d.attempt >= j.max_attempts THEN 'failed'
               ELSE 'retryable'
           END)::kiln_job_state AS next_state
    FROM done d
    CROSS JOIN LATERAL (
        SELECT max_attempts FROM kiln_jobs
        WHERE id = d.id AND attempt = d.attempt AND locked_by = $1 AND state::text = 'running'
        OFFSET 0
    ) j
), upd AS (
    UPDATE kiln_jobs j
    SET state = h.next_state,
        finalized_at = CASE WHEN h.next_state IN ('succeeded', 'failed', 'cancelled')
                            THEN h.finished_at END,
        run_at = CASE WHEN h.next_state = 'retryable' THEN h.retry_at ELSE j.run_at END,
        locked_by = NULL,
        lease_expires_at = NULL,
        result = coalesce(h.result, j.result),
        last_error = h.error
    FROM held h
    WHERE j.id = ANY ($2::bigint[]) AND j.id = h.id
      -- The guards again, as join clauses: as filters on kiln_jobs the planner, whose
      -- statistics say no row is locked, would expect one row and loop over `held` per job.
      AND j.attempt = h.attempt AND j.max_attempts = h.max_attempts AND j.locked_by = h.worker
      AND j.state::text = h.held_state
    RETURNING j.id, j.state, j.queue, j.kind, j.pipeline_id
), attempts AS (
    -- `details` is what the attempt's kind reported (the sandbox report for validation). Only
    -- jobs the UPDATE really changed get a row: `held` read without a lock.
    INSERT INTO kiln_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error, result, details)
    SELECT h.id, h.attempt, $1, h.started_at, h.finished_at, h.outcome::kiln_attempt_outcome, h.error, h.result,
           h.details
    FROM upd u JOIN held h USING (id)
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
), ev AS (
    -- Ids are reserved last (see kiln_event_ids): this runs after the statement's own row locks.
    SELECT kiln_event_ids((SELECT count(*) FROM upd)) AS first_id
), events AS (
    -- One outbox row for the whole batch (see migration 0010), one event per job in it.
    INSERT INTO kiln_events (first_id, last_id, types, job_ids, pipeline_ids, queues, kinds, data)
    SELECT ev.first_id, ev.first_id + count(*) - 1,
           array_agg('job.' || u.state::text ORDER BY u.id), array_agg(u.id ORDER BY u.id),
           array_agg(u.pipeline_id ORDER BY u.id), array_agg(u.queue ORDER BY u.id),
           array_agg(u.kind ORDER BY u.id), array_agg(jsonb_strip_nulls(jsonb_build_object('attempt', h.attempt, 'outcome', h.outcome, 'error', left(h.error, 1024), 'retry_at', CASE WHEN u.state = 'retryable' THEN h.retry_at END)) ORDER BY u.id)
    FROM upd u JOIN held h USING (id) CROSS JOIN ev
    GROUP BY ev.first_id
)
SELECT u.id, u.state::text AS state,
       (SELECT count(*) FROM (SELECT pg_notify('kiln_jobs', q.queue)
                              FROM (SELECT DISTINCT queue FROM released) q) n) AS released_queues
FROM upd u
