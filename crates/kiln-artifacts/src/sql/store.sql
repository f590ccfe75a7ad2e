-- Stores an artifact once: a known digest keeps its first row (same content by definition).
INSERT INTO kiln_artifacts (digest, size_bytes, stored_bytes, files, data, source)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (digest) DO NOTHING
RETURNING digest
