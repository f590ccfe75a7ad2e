-- A job of a finished pipeline run again by hand (it leaves its final state) reopens the
-- pipeline: verdict, score and merged result are cleared, and the pipeline settles again
-- when its jobs are all final. The function takes the pipeline's row lock before looking at
-- its state, the lock a settling transaction holds while it reads the jobs, so a retry and a
-- settle are ordered one way or the other.
CREATE FUNCTION kiln_reopen_pipeline() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM kiln_pipelines WHERE id = NEW.pipeline_id FOR UPDATE;
    UPDATE kiln_pipelines
    SET state = 'running', verdict = NULL, quality_score = NULL, result = NULL, finished_at = NULL
    WHERE id = NEW.pipeline_id AND state = 'finished';
    RETURN NULL;
END;
$$;

CREATE TRIGGER kiln_jobs_pipeline_reopen
    AFTER UPDATE OF state ON kiln_jobs
    FOR EACH ROW
    WHEN (NEW.pipeline_id IS NOT NULL AND OLD.finalized_at IS NOT NULL AND NEW.finalized_at IS NULL)
    EXECUTE FUNCTION kiln_reopen_pipeline();
