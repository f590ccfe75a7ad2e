-- Phase timings of an attempt as the sandbox measured them (container start, run, readback),
-- in milliseconds by name.
ALTER TABLE kiln_attempts ADD COLUMN timings jsonb;
