UPDATE kiln_schedulers SET leading_since = CASE WHEN $2::boolean THEN now() END WHERE id = $1
