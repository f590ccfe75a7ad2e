-- The breaker of $1/$2 (no row: closed and clean), and whether an open breaker's cool-down
-- ($3 seconds) has passed.
SELECT state, failures, state = 'open' AND opened_at + make_interval(secs => $3) <= now() AS cooled
  FROM kiln_llm_breakers
 WHERE provider = $1 AND model = $2
