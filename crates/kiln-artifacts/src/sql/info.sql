SELECT digest, size_bytes, stored_bytes, files, source, created_at FROM kiln_artifacts WHERE digest = $1
