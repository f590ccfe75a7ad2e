-- The live token with this hash, marking it used (at most once a minute, to spare writes).
UPDATE kiln_api_tokens
SET last_used_at = now()
WHERE token_hash = $1 AND revoked_at IS NULL
  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
RETURNING id, scopes
