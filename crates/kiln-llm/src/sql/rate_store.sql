-- Stores provider $1's bucket levels ($2 kinds, $3 levels) as of now.
UPDATE kiln_llm_rate_buckets b
   SET level = t.level, updated_at = clock_timestamp()
  FROM unnest($2::text[], $3::float8[]) AS t(kind, level)
 WHERE b.provider = $1 AND b.kind = t.kind
