-- Events after id $1, oldest first, at most $2, each filter optional (NULL matches all).
-- Ids are in commit order (see kiln_event_ids in migration 0010): a reader that resumes after
-- the last id it saw never misses an event.
SELECT id, type, at, job_id, pipeline_id, queue, kind, data
FROM kiln_events
WHERE id > $1
  AND ($3::text[] IS NULL OR type = ANY ($3::text[]))
  AND ($4::bigint IS NULL OR job_id = $4)
  AND ($5::bigint IS NULL OR pipeline_id = $5)
  AND ($6::text IS NULL OR queue = $6)
  AND ($7::text IS NULL OR kind = $7)
ORDER BY id
LIMIT $2
