-- A scheduler is alive; rows of schedulers gone for a day are dropped.
WITH gone AS (
    DELETE FROM kiln_schedulers WHERE last_seen_at < now() - interval '1 day' AND id <> $1
)
UPDATE kiln_schedulers SET last_seen_at = now() WHERE id = $1
