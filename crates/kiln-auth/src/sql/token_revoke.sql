-- Revoke a token; revoking twice keeps the first time. Returns its hash so caches can drop it.
UPDATE kiln_api_tokens
SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1
RETURNING token_hash
