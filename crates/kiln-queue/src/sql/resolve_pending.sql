-- Settle jobs waiting for parents: runnable once every parent succeeded, cancelled
-- as soon as one parent failed or was cancelled (which then cascades on the next pass).
WITH waiting AS (
    SELECT c.id,
           bool_and(p.state = 'succeeded') AS all_succeeded,
           bool_or(p.state IN ('failed', 'cancelled')) AS any_dead,
           count(p.id) AS found,
           cardinality(c.depends_on) AS wanted
    FROM kiln_jobs c
    LEFT JOIN kiln_jobs p ON p.id = ANY (c.depends_on)
    WHERE c.state = 'pending'
    GROUP BY c.id
), upd AS (
    UPDATE kiln_jobs c
    SET state = CASE
            WHEN w.any_dead OR w.found < w.wanted THEN 'cancelled'
            WHEN c.run_at > now() THEN 'scheduled'
            ELSE 'available' END::kiln_job_state,
        finalized_at = CASE WHEN w.any_dead OR w.found < w.wanted THEN now() END,
        last_error = CASE WHEN w.any_dead OR w.found < w.wanted
                          THEN 'a parent job failed, was cancelled or no longer exists' END
    FROM waiting w
    WHERE c.id = w.id AND c.state = 'pending'
      AND (w.any_dead OR w.found < w.wanted OR w.all_succeeded)
    RETURNING c.id, c.state, c.queue, c.kind, c.pipeline_id, c.last_error
), ev AS (
    SELECT kiln_event_ids((SELECT count(*) FROM upd WHERE state = 'cancelled')) AS first_id
), events AS (
    INSERT INTO kiln_events (first_id, last_id, types, job_ids, pipeline_ids, queues, kinds, data)
    SELECT ev.first_id, ev.first_id + count(*) - 1,
           array_agg('job.cancelled'::text ORDER BY u.id), array_agg(u.id ORDER BY u.id),
           array_agg(u.pipeline_id ORDER BY u.id), array_agg(u.queue ORDER BY u.id),
           array_agg(u.kind ORDER BY u.id), array_agg(jsonb_build_object('error', u.last_error) ORDER BY u.id)
    FROM upd u CROSS JOIN ev
    WHERE u.state = 'cancelled'
    GROUP BY ev.first_id
)
SELECT count(*) FILTER (WHERE state <> 'cancelled') AS released,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled
FROM upd
