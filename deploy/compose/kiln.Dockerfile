# The `kiln` binary for docker-compose.yml, on Kiln's own Debian base (no registry): built by
# scripts/compose-images, which compiles kiln on the host and passes BASE (kiln-base:<tag>).
# Jobs run as sibling containers on the engine whose socket is mounted.
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/*
COPY kiln /usr/local/bin/kiln
COPY workers.toml /etc/kiln/workers.toml
WORKDIR /var/lib/kiln
ENTRYPOINT ["kiln"]
