-- Records how much of job $1's attempt $2 went past the live-log cap $5 (counts only grow).
INSERT INTO kiln_job_log_drops (job_id, attempt, dropped_bytes, dropped_chunks, cap_bytes)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (job_id, attempt) DO UPDATE
SET dropped_bytes  = greatest(kiln_job_log_drops.dropped_bytes, excluded.dropped_bytes),
    dropped_chunks = greatest(kiln_job_log_drops.dropped_chunks, excluded.dropped_chunks),
    cap_bytes      = excluded.cap_bytes,
    at             = now()
