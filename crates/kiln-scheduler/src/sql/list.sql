SELECT * FROM kiln_schedules ORDER BY name
