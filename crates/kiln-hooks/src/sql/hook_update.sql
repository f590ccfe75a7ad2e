-- Change a webhook; NULL leaves a field as it is.
UPDATE kiln_hooks
SET secret = coalesce($2, secret),
    template = coalesce($3, template),
    events = coalesce($4, events),
    updated_at = now()
WHERE name = $1
RETURNING name, secret, template, events, created_at, updated_at
