-- Append log chunks (bytes) of job $1's attempt $2 and wake whoever tails it (payload: the job id).
WITH ins AS (
    INSERT INTO kiln_job_logs (job_id, attempt, seq, stream, data)
    SELECT $1, $2, c.seq, c.stream, c.data
    FROM unnest($3::int[], $4::text[], $5::bytea[]) AS c(seq, stream, data)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) AS written, pg_notify('kiln_logs', $1::text) IS NULL AS notified FROM ins
