-- One answered call in the cost ledger.
INSERT INTO kiln_llm_calls
    (provider, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
     cost_pico, pipeline_id, job_id, api_token_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id
