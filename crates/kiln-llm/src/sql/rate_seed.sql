-- Creates provider $1's buckets full ($2 = kinds, $3 = their capacities) if they are missing.
INSERT INTO kiln_llm_rate_buckets (provider, kind, level)
SELECT $1, k, c FROM unnest($2::text[], $3::float8[]) AS t(k, c)
ON CONFLICT (provider, kind) DO NOTHING
