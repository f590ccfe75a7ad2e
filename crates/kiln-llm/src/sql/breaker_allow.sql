-- Whether a call may go to $1/$2; an open breaker whose cool-down ($3 seconds) has passed
-- becomes half-open here. Returns the state after the check.
WITH seed AS (
    INSERT INTO kiln_llm_breakers (provider, model) VALUES ($1, $2)
    ON CONFLICT (provider, model) DO NOTHING
), cooled AS (
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
