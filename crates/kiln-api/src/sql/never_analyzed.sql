-- True when kiln_jobs has grown past $1 rows and was never analyzed (by hand or autovacuum).
SELECT coalesce(
    (SELECT last_analyze IS NULL AND last_autoanalyze IS NULL AND n_tup_ins >= $1
     FROM pg_stat_user_tables WHERE relid = 'kiln_jobs'::regclass),
    false) AS due
