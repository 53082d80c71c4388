# syntax=docker/dockerfile:1
#
# Deckhand container image.
#   docker build -t deckhand .
#   docker run --rm -p 8080:8080 -v deckhand-data:/data --env-file .env deckhand
#
# Stage 1 compiles the release binary; dependencies are built in their own layer so that
# editing src/ does not recompile every crate. Stage 2 is a small Debian runtime that runs
# the binary as an unprivileged user under tini (PID 1: forwards SIGTERM, reaps the child
# processes that job steps start).

############################################################################################
# Builder
############################################################################################
FROM rust:1-slim-bookworm AS builder
WORKDIR /build

# 1) Dependencies only: the manifest, the lock file and build.rs, with stub sources.
#    This layer is reused until Cargo.toml, Cargo.lock or build.rs change.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && echo '// dependency-cache stub' > src/lib.rs \
    && cargo build --release --locked

# 2) The real sources. src/config/catalog/ and src/config/ embed commands/*.toml and
#    deckhand.toml with include_str!, and src/store/ embeds migrations/ with
#    sqlx::migrate!, and src/support/chart.rs embeds assets/fonts/ with include_bytes!,
#    so all of them must be present before this build.
COPY src ./src
COPY assets ./assets
COPY migrations ./migrations
COPY commands ./commands
COPY deckhand.toml ./
# COPY keeps the files' original mtimes, which can be older than the stub build above;
# touch them so cargo rebuilds the crate instead of reusing the stub binary.
RUN find src build.rs -name '*.rs' -exec touch {} + \
    && cargo build --release --locked

############################################################################################
# Runtime
############################################################################################
FROM debian:bookworm-slim AS runtime

# ca-certificates: CA roots for the programs that job steps run (git, cloud CLIs, …);
# deckhand's own HTTPS client bundles its roots. tini: a tiny init for PID 1.
# Versions are deliberately not pinned: bookworm only ships security fixes for these two
# packages, and an exact pin breaks the build as soon as Debian publishes a fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 deckhand \
    && useradd --system --uid 10001 --gid deckhand --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin deckhand \
    && mkdir -p /app /data \
    && chown deckhand:deckhand /app /data

WORKDIR /app

COPY --from=builder /build/target/release/deckhand /usr/local/bin/deckhand
# Configuration and command files stay root-owned (read-only for the bot). The bot writes
# only to /app/.deckhand (data_dir in deckhand.toml) and to the database under /data.
COPY commands ./commands
COPY migrations ./migrations
COPY deckhand.toml ./deckhand.toml

# /data holds the SQLite file; mount a volume there (Fly.io: [mounts] in fly.toml).
# Set DATABASE_URL to a postgres:// URL to use PostgreSQL instead. DECKHAND_CONFIG is
# absolute so `deckhand run …` finds the same config from any working directory.
ENV DATABASE_URL=sqlite:///data/deckhand.db \
    DECKHAND_LISTEN=0.0.0.0:8080 \
    DECKHAND_CONFIG=/app/deckhand.toml

# The deckhand user, by number, so runtimes that check for a non-root user (Kubernetes
# runAsNonRoot) and that hand the volume to the image's user (Fly.io) need no lookup.
USER 10001:10001

EXPOSE 8080

# No curl in the slim image: the binary checks itself (GET /health on DECKHAND_LISTEN).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["deckhand", "healthcheck"]

ENTRYPOINT ["/usr/bin/tini", "--", "deckhand"]
CMD ["serve"]
