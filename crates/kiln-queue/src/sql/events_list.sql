-- Events after id $1, oldest first, at most $2, each filter optional (NULL matches all). Rows
-- hold blocks of events (one per writing statement); event `first_id + i - 1` is element i.
-- Ids are in commit order (see kiln_event_ids in migration 0010): a reader that resumes after
-- the last id it saw never misses an event.
SELECT b.first_id + e.o - 1 AS id, e.type, b.at, e.job_id, e.pipeline_id, e.queue, e.kind, e.data
FROM kiln_events b
CROSS JOIN LATERAL unnest(b.types, b.job_ids, b.pipeline_ids, b.queues, b.kinds, b.data)
    WITH ORDINALITY AS e(type, job_id, pipeline_id, queue, kind, data, o)
WHERE b.last_id > $1
  AND b.first_id + e.o - 1 > $1
  AND ($3::text[] IS NULL OR e.type = ANY ($3::text[]))
  AND ($4::bigint IS NULL OR e.job_id = $4)
  AND ($5::bigint IS NULL OR e.pipeline_id = $5)
  AND ($6::text IS NULL OR e.queue = $6)
  AND ($7::text IS NULL OR e.kind = $7)
ORDER BY b.last_id, e.o
LIMIT $2
