-- The chaos run's ledger: $1 the ids the API accepted, $2 the tag of the schedule's jobs.
-- Attempt rows that count are all but `interrupted` ones (a draining worker's hand-back keeps
-- the attempt number, see hand_back.sql): a job with `attempt` = n has exactly one such row
-- per number 1..n, and the last one's outcome is the job's.
WITH checked AS (
    SELECT a.id, false AS scheduled FROM unnest($1::bigint[]) a(id)
    UNION
    SELECT j.id, true FROM kiln_jobs j WHERE $2 = ANY (j.tags)
), per_job AS (
    SELECT c.id, c.scheduled, j.id IS NOT NULL AS present, j.state, j.attempt,
           j.finalized_at IS NOT NULL AS final,
           x.rows, x.numbers, x.successes, x.lost_rows, x.interrupted_rows, x.last_outcome
    FROM checked c
    LEFT JOIN kiln_jobs j ON j.id = c.id
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE a.outcome <> 'interrupted') AS rows,
               count(DISTINCT a.attempt) FILTER (WHERE a.outcome <> 'interrupted') AS numbers,
               count(*) FILTER (WHERE a.outcome = 'succeeded') AS successes,
               count(*) FILTER (WHERE a.outcome = 'lost') AS lost_rows,
               count(*) FILTER (WHERE a.outcome = 'interrupted') AS interrupted_rows,
               (array_agg(a.outcome::text ORDER BY a.attempt DESC, a.finished_at DESC)
                    FILTER (WHERE a.outcome <> 'interrupted'))[1] AS last_outcome
        FROM kiln_attempts a WHERE a.job_id = c.id
    ) x ON true
)
SELECT count(*)::bigint,
       count(*) FILTER (WHERE scheduled)::bigint,
       count(*) FILTER (WHERE NOT present OR NOT final)::bigint,
       count(*) FILTER (WHERE successes > 1 OR rows <> numbers)::bigint,
       count(*) FILTER (WHERE final AND (rows <> attempt OR numbers <> attempt OR NOT (
           (state = 'succeeded' AND last_outcome = 'succeeded')
           OR (state = 'failed' AND last_outcome IN ('failed', 'timed_out', 'lost'))
           OR (state = 'cancelled' AND last_outcome = 'cancelled'))))::bigint,
       count(*) FILTER (WHERE state = 'succeeded')::bigint,
       count(*) FILTER (WHERE state = 'failed')::bigint,
       coalesce(sum(lost_rows), 0)::bigint,
       coalesce(sum(interrupted_rows), 0)::bigint,
       (SELECT count(*) - count(DISTINCT idempotency_key) FROM kiln_jobs WHERE $2 = ANY (tags))::bigint
FROM per_job
