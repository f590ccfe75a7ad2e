-- Store a new API token (its SHA-256 only).
INSERT INTO kiln_api_tokens (name, token_hash, scopes)
VALUES ($1, $2, $3)
RETURNING id, name, scopes, created_at, last_used_at, revoked_at
