-- One round trip of the Postgres token bucket for provider $1: refill each of its buckets
-- ($2 kinds, $3 capacities per minute) to now, and take every need ($4) or nothing.
-- Returns the seconds to wait (0: granted) and how many buckets exist (fewer than $5: the
-- buckets must be created first, and nothing was taken). Buckets are throttling state, not
-- records: the commit does not wait for the disk.
WITH relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), want AS (
    SELECT * FROM unnest($2::text[], $3::float8[], $4::float8[]) AS t(kind, cap, need)
), cur AS (
    SELECT b.kind, w.cap, w.need,
           least(w.cap, b.level + extract(epoch FROM clock_timestamp() - b.updated_at) * w.cap / 60.0) AS level
      FROM kiln_llm_rate_buckets b
      JOIN want w ON w.kind = b.kind
     WHERE b.provider = $1
     ORDER BY b.kind
       FOR UPDATE OF b
), verdict AS (
    SELECT coalesce(max(CASE WHEN level < need THEN (need - level) * 60.0 / cap END), 0)::float8 AS wait,
           count(*)::int AS found
      FROM cur
), taken AS (
    UPDATE kiln_llm_rate_buckets b
       SET level = c.level - CASE WHEN v.wait = 0 THEN c.need ELSE 0 END,
           updated_at = clock_timestamp()
      FROM cur c, verdict v
     WHERE b.provider = $1 AND b.kind = c.kind AND v.found = $5
    RETURNING 1
)
SELECT v.wait, v.found, (SELECT count(*) FROM taken) AS updated, (SELECT count(*) FROM relaxed) AS relaxed
  FROM verdict v
