-- Every token, newest first (revoked ones included, for the record).
SELECT id, name, scopes, created_at, last_used_at, revoked_at
FROM kiln_api_tokens
ORDER BY id DESC
