SELECT data, size_bytes FROM kiln_artifacts WHERE digest = $1
