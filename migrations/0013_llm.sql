-- LLM provider layer (issue 11): the cost ledger, fleet-wide circuit breakers and the
-- Postgres rate-limit buckets (used when Redis is not configured or unreachable).

-- One row per call a provider answered. No foreign keys: the ledger outlives pruned jobs,
-- pipelines and revoked tokens.
CREATE TABLE kiln_llm_calls (
    id                 bigserial PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    provider           text NOT NULL,
    model              text NOT NULL,
    input_tokens       bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens      bigint NOT NULL CHECK (output_tokens >= 0),
    cache_read_tokens  bigint NOT NULL CHECK (cache_read_tokens >= 0),
    cache_write_tokens bigint NOT NULL CHECK (cache_write_tokens >= 0),
    -- Exact cost in pico-USD (10^-12 USD): usage × configured prices, integer arithmetic.
    cost_pico          bigint NOT NULL CHECK (cost_pico >= 0),
    pipeline_id        bigint,
    job_id             bigint,
    api_token_id       bigint
);
CREATE INDEX kiln_llm_calls_pipeline ON kiln_llm_calls (pipeline_id) WHERE pipeline_id IS NOT NULL;
CREATE INDEX kiln_llm_calls_token_at ON kiln_llm_calls (api_token_id, at) WHERE api_token_id IS NOT NULL;
CREATE INDEX kiln_llm_calls_at ON kiln_llm_calls (at);

-- A circuit breaker per provider/model, shared by the fleet.
CREATE TABLE kiln_llm_breakers (
    provider   text NOT NULL,
    model      text NOT NULL,
    state      text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures   integer NOT NULL DEFAULT 0,
    successes  integer NOT NULL DEFAULT 0,
    opened_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);

-- Token buckets per provider and kind ('requests' | 'tokens'), refilled continuously.
CREATE TABLE kiln_llm_rate_buckets (
    provider   text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('requests', 'tokens')),
    level      double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, kind)
);
