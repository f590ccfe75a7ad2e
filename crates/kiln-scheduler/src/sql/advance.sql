-- Move a schedule's cursor from $2 to $3, only if nobody moved it meanwhile (and it is still
-- on): the guard that makes each tick fire at most once, whoever leads. $4 says whether a
-- job is being fired for $3; $5 ticks were passed over.
UPDATE kiln_schedules
SET fired_through = $3,
    last_fired_at = CASE WHEN $4::boolean THEN now() ELSE last_fired_at END,
    fired_count = fired_count + CASE WHEN $4::boolean THEN 1 ELSE 0 END,
    missed_count = missed_count + $5::bigint
WHERE name = $1 AND fired_through = $2 AND enabled
RETURNING name
