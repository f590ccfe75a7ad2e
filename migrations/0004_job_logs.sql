-- Live and full logs of sandboxed attempts, appended in chunks while the attempt runs (the API
-- tails them over Server-Sent Events). Each stream is capped by the sandbox (1 MiB kept).
CREATE TABLE kiln_job_logs (
    job_id  bigint NOT NULL REFERENCES kiln_jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    seq     integer NOT NULL,
    stream  text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    data    text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt, seq)
);
