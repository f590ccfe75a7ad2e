-- Jobs per queue and state, with each queue's settings.
SELECT q.queue, q.state, q.count, coalesce(s.paused, false) AS paused, s.max_running
FROM (SELECT queue, state::text AS state, count(*) AS count FROM kiln_jobs GROUP BY queue, state) q
LEFT JOIN kiln_queues s ON s.name = q.queue
UNION ALL
SELECT s.name, NULL, 0, s.paused, s.max_running FROM kiln_queues s
WHERE NOT EXISTS (SELECT 1 FROM kiln_jobs j WHERE j.queue = s.name)
ORDER BY 1, 2
