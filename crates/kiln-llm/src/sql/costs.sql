-- Calls, tokens and cost in [$2, $3), grouped by $1: provider | model | token | day (UTC);
-- only API token $4's calls when $4 is not NULL.
SELECT
    CASE $1
        WHEN 'provider' THEN provider
        WHEN 'model' THEN provider || '/' || model
        WHEN 'token' THEN coalesce(api_token_id::text, 'none')
        ELSE to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
    END AS key,
    count(*) AS calls,
    sum(input_tokens)::bigint AS input_tokens,
    sum(output_tokens)::bigint AS output_tokens,
    sum(cache_read_tokens)::bigint AS cache_read_tokens,
    sum(cache_write_tokens)::bigint AS cache_write_tokens,
    sum(cost_pico)::bigint AS cost_pico
FROM kiln_llm_calls
WHERE at >= $2 AND at < $3 AND ($4::bigint IS NULL OR api_token_id = $4)
GROUP BY 1
ORDER BY 1
