-- The live token with this hash (when it was marked used recently).
SELECT id, scopes FROM kiln_api_tokens WHERE token_hash = $1 AND revoked_at IS NULL
