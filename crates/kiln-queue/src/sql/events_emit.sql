-- Write events of the caller's transaction; their ids are reserved last, in commit order.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[])
        WITH ORDINALITY AS e(type, job_id, pipeline_id, queue, kind, data, ord)
), ev AS (
    SELECT kiln_event_ids((SELECT count(*) FROM input)) AS first_id
)
INSERT INTO kiln_events (id, type, job_id, pipeline_id, queue, kind, data)
SELECT ev.first_id + i.ord - 1, i.type, i.job_id, i.pipeline_id, i.queue, i.kind, i.data
FROM input i CROSS JOIN ev
RETURNING id
