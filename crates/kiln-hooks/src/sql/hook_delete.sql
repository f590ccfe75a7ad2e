-- Remove a webhook (its delivery records go with it).
DELETE FROM kiln_hooks WHERE name = $1 RETURNING name
