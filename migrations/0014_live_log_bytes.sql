-- Live logs are stored as the bytes the job wrote: NUL bytes and invalid UTF-8 were refused
-- (NUL) or replaced (invalid UTF-8) by a text column. Each attempt's live log is capped (the
-- forwarder's cap, 8 MiB by default); what came past the cap is counted here, not stored.
ALTER TABLE kiln_job_logs ALTER COLUMN data TYPE bytea USING convert_to(data, 'UTF8');

CREATE TABLE kiln_job_log_drops (
    job_id         bigint NOT NULL REFERENCES kiln_jobs (id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    dropped_bytes  bigint NOT NULL CHECK (dropped_bytes >= 0),
    dropped_chunks bigint NOT NULL CHECK (dropped_chunks >= 0),
    cap_bytes      bigint NOT NULL CHECK (cap_bytes >= 0),
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
