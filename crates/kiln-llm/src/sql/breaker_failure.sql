-- A call to $1/$2 failed: $3 consecutive failures open the breaker; any failure while
-- half-open reopens it (with a fresh cool-down).
INSERT INTO kiln_llm_breakers AS b (provider, model, failures) VALUES ($1, $2, 1)
ON CONFLICT (provider, model) DO UPDATE SET
    failures = b.failures + 1,
    successes = 0,
    state = CASE WHEN b.state = 'half_open' OR b.failures + 1 >= $3 THEN 'open' ELSE b.state END,
    opened_at = CASE
        WHEN b.state = 'half_open' OR (b.state = 'closed' AND b.failures + 1 >= $3) THEN now()
        ELSE b.opened_at END,
    updated_at = now()
RETURNING state
