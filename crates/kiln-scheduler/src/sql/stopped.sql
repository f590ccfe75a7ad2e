UPDATE kiln_schedulers SET stopped_at = now(), last_seen_at = now(), leading_since = NULL WHERE id = $1
