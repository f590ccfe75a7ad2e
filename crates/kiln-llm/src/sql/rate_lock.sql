-- Locks provider $1's buckets (in kind order: no deadlocks) and returns each level refilled
-- to now at its capacity per minute ($2 kinds, $3 capacities).
SELECT b.kind,
       least(t.cap, b.level + extract(epoch FROM clock_timestamp() - b.updated_at) * t.cap / 60.0) AS level
  FROM kiln_llm_rate_buckets b
  JOIN unnest($2::text[], $3::float8[]) AS t(kind, cap) ON t.kind = b.kind
 WHERE b.provider = $1
 ORDER BY b.kind
   FOR UPDATE OF b
