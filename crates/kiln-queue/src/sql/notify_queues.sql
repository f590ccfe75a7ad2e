-- Wake workers of these queues. A notification is not data: its transaction need not wait
-- for a WAL flush, so the database-wide NOTIFY lock is held only briefly.
SELECT set_config('synchronous_commit', 'off', true), count(pg_notify('kiln_jobs', q))
FROM unnest($1::text[]) AS q
