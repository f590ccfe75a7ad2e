-- Cancel a job: at once when it is not running (with its `job.cancelled` event); a running job
-- is marked and its worker told (NOTIFY now, heartbeat otherwise) so it stops and records the
-- attempt, whose completion writes the event.
WITH upd AS (
    UPDATE kiln_jobs
    SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
        finalized_at = CASE WHEN state = 'running' THEN NULL ELSE now() END,
        cancel_requested_at = now(),
        last_error = CASE WHEN state = 'running' THEN last_error ELSE 'cancelled by request' END
    WHERE id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')
    RETURNING id, state, queue, kind, pipeline_id, attempt
), ev AS (
    SELECT kiln_event_ids((SELECT count(*) FROM upd WHERE state = 'cancelled')) AS first_id
), events AS (
    INSERT INTO kiln_events (first_id, last_id, types, job_ids, pipeline_ids, queues, kinds, data)
    SELECT ev.first_id, ev.first_id + count(*) - 1,
           array_agg('job.cancelled'::text ORDER BY u.id), array_agg(u.id ORDER BY u.id),
           array_agg(u.pipeline_id ORDER BY u.id), array_agg(u.queue ORDER BY u.id),
           array_agg(u.kind ORDER BY u.id), array_agg(jsonb_build_object('attempt', u.attempt) ORDER BY u.id)
    FROM upd u CROSS JOIN ev
    WHERE u.state = 'cancelled'
    GROUP BY ev.first_id
)
SELECT state::text AS state, pg_notify('kiln_cancel', id::text) IS NULL AS notified FROM upd
