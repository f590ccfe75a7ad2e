-- Queues whose name may be a metric label: configured ones and those any registered worker
-- serves (a bounded set, unlike the queue names clients may write into jobs).
SELECT name FROM kiln_queues
UNION
SELECT DISTINCT unnest(queues) FROM kiln_workers WHERE stopped_at IS NULL
LIMIT 1000
