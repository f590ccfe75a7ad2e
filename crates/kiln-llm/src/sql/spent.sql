-- Pico-USD spent so far by pipeline $1 and, this calendar month in UTC, by API token $2.
SELECT
    coalesce(sum(cost_pico) FILTER (WHERE pipeline_id = $1), 0)::bigint AS pipeline,
    coalesce(sum(cost_pico) FILTER (
        WHERE api_token_id = $2
          AND at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)::bigint AS token
FROM kiln_llm_calls
WHERE pipeline_id = $1
   OR (api_token_id = $2 AND at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
