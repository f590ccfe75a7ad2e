-- Empties the cache.
DELETE FROM kiln_validation_cache
