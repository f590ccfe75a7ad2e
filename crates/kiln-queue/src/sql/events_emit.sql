-- Write events of the caller's transaction as one outbox row; their ids are reserved last, in
-- commit order. Returns the first id.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[])
        WITH ORDINALITY AS e(type, job_id, pipeline_id, queue, kind, data, ord)
), ev AS (
    SELECT kiln_event_ids((SELECT count(*) FROM input)) AS first_id
)
INSERT INTO kiln_events (first_id, last_id, types, job_ids, pipeline_ids, queues, kinds, data)
SELECT ev.first_id, ev.first_id + count(*) - 1,
       array_agg(i.type ORDER BY i.ord), array_agg(i.job_id ORDER BY i.ord),
       array_agg(i.pipeline_id ORDER BY i.ord), array_agg(i.queue ORDER BY i.ord),
       array_agg(i.kind ORDER BY i.ord), array_agg(i.data ORDER BY i.ord)
FROM input i CROSS JOIN ev
GROUP BY ev.first_id
RETURNING first_id
