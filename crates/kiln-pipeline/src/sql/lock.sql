-- The settling transaction's lock on its pipeline (a hand retry of one of its jobs takes it too).
SELECT id FROM kiln_pipelines WHERE id = $1 FOR UPDATE
