-- A call to $1/$2 succeeded: reset the failure count; a half-open breaker closes after
-- $3 successes. An open breaker stays open (the success began before it opened).
INSERT INTO kiln_llm_breakers AS b (provider, model) VALUES ($1, $2)
ON CONFLICT (provider, model) DO UPDATE SET
    failures = 0,
    successes = CASE WHEN b.state = 'half_open' THEN b.successes + 1 ELSE 0 END,
    state = CASE WHEN b.state = 'half_open' AND b.successes + 1 >= $3 THEN 'closed' ELSE b.state END,
    updated_at = now()
RETURNING state
