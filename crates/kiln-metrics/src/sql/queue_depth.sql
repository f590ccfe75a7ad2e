-- Jobs per queue and state, plus configured queues that have none (their states read 0).
SELECT queue, state::text AS state, count(*) AS count FROM kiln_jobs GROUP BY queue, state
UNION ALL
SELECT s.name, NULL, 0 FROM kiln_queues s
WHERE NOT EXISTS (SELECT 1 FROM kiln_jobs j WHERE j.queue = s.name)
