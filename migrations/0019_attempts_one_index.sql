-- One index on attempts instead of two (issue 10). Every completion inserted a row into both
-- the `id` primary key and `kiln_attempts_job (job_id, attempt)`; every read goes by job
-- (a job's attempts ordered by id, pruning by job, the generation verdict by job), so one key
-- (job_id, id) serves them all and keeps ids unique. Measured on Kiln's claim + complete SQL
-- from pgbench, 100,000 jobs at batch 1,000: WAL per job 1,364 -> 1,296 bytes, jobs/s +2-4 %.
-- Rebuilding the key locks the table for the time it takes to index the rows kept.
ALTER TABLE kiln_attempts DROP CONSTRAINT kiln_attempts_pkey;
DROP INDEX kiln_attempts_job;
ALTER TABLE kiln_attempts ADD CONSTRAINT kiln_attempts_pkey PRIMARY KEY (job_id, id);
