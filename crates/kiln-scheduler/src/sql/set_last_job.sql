UPDATE kiln_schedules SET last_job_id = $2 WHERE name = $1
