# The `kiln` binary in an image, for docker-compose.yml. Jobs run as sibling containers on
# the host's engine (the socket is mounted), so the job images must exist there
# (scripts/build-images on the host).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN SQLX_OFFLINE=true cargo build --release -p kiln-cli --bin kiln

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
COPY workers.toml /etc/kiln/workers.toml
ENTRYPOINT ["kiln"]
