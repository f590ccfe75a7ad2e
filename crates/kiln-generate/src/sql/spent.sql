-- Tokens and exact cost (pico-USD) the ledger holds for a pipeline.
SELECT coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,
       coalesce(sum(cache_read_tokens), 0)::bigint, coalesce(sum(cache_write_tokens), 0)::bigint,
       coalesce(sum(cost_pico), 0)::bigint
FROM kiln_llm_calls WHERE pipeline_id = $1
