-- A new webhook.
INSERT INTO kiln_hooks (name, secret, template, events)
VALUES ($1, $2, $3, $4)
RETURNING name, secret, template, events, created_at, updated_at
