-- Whether kiln_jobs is due a vacuum (at least $1 dead row versions, more than $2 times the
-- live rows, and no vacuum of the table, by any worker or autovacuum, in the last $3 seconds),
-- and if so (and $4 asks for it) whether this session took the fleet's vacuum lock
-- (session-level: released by the caller after the VACUUM, or with the connection).
WITH s AS (
    SELECT coalesce((SELECT n_dead_tup >= $1 AND n_dead_tup > n_live_tup * $2::float8
                            AND coalesce(greatest(last_vacuum, last_autovacuum)
                                         < now() - make_interval(secs => $3::float8), true)
                     FROM pg_stat_user_tables
                     WHERE relid = 'kiln_jobs'::regclass), false) AS due
)
SELECT due,
       CASE WHEN due AND $4 THEN pg_try_advisory_lock(hashtextextended('kiln.vacuum', 0)) ELSE false END AS locked
FROM s
