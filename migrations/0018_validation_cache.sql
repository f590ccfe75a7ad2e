-- Validation results by content: a key over the job's kind, the workspace digest, the
-- projects, the images' ids, Kiln's tool scripts and rules and the suppression switch
-- (kiln_validate::cache). A repeated workspace is answered from here without running a tool.
CREATE TABLE kiln_validation_cache (
    key         text PRIMARY KEY,
    kind        text NOT NULL,
    workspace   text NOT NULL,
    result      jsonb NOT NULL,
    -- The job whose run produced the result (no foreign key: jobs are pruned sooner).
    source_job  bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    hits        bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz
);

CREATE INDEX kiln_validation_cache_used ON kiln_validation_cache (coalesce(last_hit_at, created_at));
