-- Attempt rows are written only by statements that hold their job's row (completion, rescue,
-- hand-back) and deleted with their job by pruning, so the foreign key only re-checked what
-- those statements guarantee: its per-row trigger was a quarter of a batch completion's time
-- (42-48 -> 32 ms per 1,000 at 100k jobs). The index on job_id stays for reads and pruning.
ALTER TABLE kiln_attempts DROP CONSTRAINT kiln_attempts_job_id_fkey;
