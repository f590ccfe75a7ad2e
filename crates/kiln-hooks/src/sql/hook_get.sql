-- One webhook, with its secret (for verifying deliveries).
SELECT name, secret, template, events, created_at, updated_at FROM kiln_hooks WHERE name = $1
