-- An open breaker of $1/$2 whose cool-down ($3 seconds) has passed becomes half-open.
-- Returns the state after the check (another worker may have moved it first).
WITH cooled AS (
    UPDATE kiln_llm_breakers
       SET state = 'half_open', successes = 0, updated_at = now()
     WHERE provider = $1 AND model = $2 AND state = 'open'
       AND opened_at + make_interval(secs => $3) <= now()
    RETURNING state
)
SELECT coalesce(
    (SELECT state FROM cooled),
    (SELECT state FROM kiln_llm_breakers WHERE provider = $1 AND model = $2),
    'closed'
) AS state
