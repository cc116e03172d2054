# syntax=docker/dockerfile:1
#
# opswire: multi-stage build.
#   builder  rust:1.95-slim-bookworm  compiles a release binary; the
#            dependency graph is built in its own layer first, so editing
#            src/ only recompiles opswire itself.
#   runtime  debian:bookworm-slim      glibc matches the builder; curl is
#            the only extra package (for HEALTHCHECK); runs as uid 10001.
#
#   docker build -t opswire .
#   docker run --rm -p 8080:8080 -e OPSWIRE_JWT_SECRET=$(openssl rand -hex 32) opswire
#
# The image binds 0.0.0.0:8080, which opswire only allows with an auth key:
# without OPSWIRE_JWT_SECRET (or auth.public_key_file) it exits with code 2
# and says so. There is deliberately no --insecure here.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- builder
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only: the real manifests with stub sources. This layer is
#    reused until Cargo.toml or Cargo.lock change.
#    The load generator is a workspace member: its manifest must be there
#    for cargo to load the workspace; its sources stay stubs (not built).
COPY Cargo.toml Cargo.lock ./
COPY bench/opswire-bench/Cargo.toml bench/opswire-bench/Cargo.toml
RUN mkdir -p src bench/opswire-bench/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo '' > src/lib.rs \
 && echo 'fn main() {}' > bench/opswire-bench/src/main.rs \
 && echo '' > bench/opswire-bench/src/lib.rs \
 && cargo build --release --locked -p opswire --bin opswire \
 && rm -rf src target/release/.fingerprint/opswire-* \
           target/release/deps/opswire-* target/release/deps/libopswire-* \
           target/release/opswire target/release/libopswire.*

# 2. The crate itself. `touch` so cargo never mistakes the stubs' build
#    for the real sources (COPY keeps the files' original mtimes).
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p opswire --bin opswire \
 && ./target/release/opswire --version

# ---------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 opswire \
 && useradd --system --uid 10001 --gid opswire --home-dir /nonexistent \
            --no-create-home --shell /usr/sbin/nologin opswire

COPY --from=builder /src/target/release/opswire /usr/local/bin/opswire

USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# Liveness. opswire has no health subcommand, so curl asks /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["/usr/local/bin/opswire"]
CMD ["serve", "--bind", "0.0.0.0:8080"]
