-- Stores a result ($4) under key $1; the first writer of a key wins.
INSERT INTO kiln_validation_cache (key, kind, workspace, result, source_job)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key) DO NOTHING
