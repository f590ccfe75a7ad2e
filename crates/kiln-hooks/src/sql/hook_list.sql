-- Every webhook, by name.
SELECT name, secret, template, events, created_at, updated_at FROM kiln_hooks ORDER BY name
