# syntax=docker/dockerfile:1
#
# The eventfleet image: one binary, run as `eventfleet ingress` or `eventfleet worker` (ECS sets the command).
#
#   docker build --build-arg EVENTFLEET_GIT_SHA="$(git rev-parse --short HEAD)" -t eventfleet:"$(git rev-parse --short HEAD)" .
#
# Build stage: the workspace's release build. The rust image carries gcc, which the bundled SQLite needs.
# Runtime stage: debian slim with CA certificates (TLS to AWS and Slack) and curl (the container health check),
# a non-root user, no shell login, nothing else.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Reported by GET /version; .git is not in the build context, so pass it in.
ARG EVENTFLEET_GIT_SHA=unknown
ENV EVENTFLEET_GIT_SHA=${EVENTFLEET_GIT_SHA}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin eventfleet \
 && install -D -m 0755 target/release/eventfleet /out/eventfleet

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG EVENTFLEET_GIT_SHA=unknown
LABEL org.opencontainers.image.title="eventfleet" \
      org.opencontainers.image.description="Event ingress and worker fleet for SRE teams" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${EVENTFLEET_GIT_SHA}"

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 eventfleet \
 && useradd --system --uid 10001 --gid eventfleet --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin eventfleet \
 && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=build /out/eventfleet /usr/local/bin/eventfleet

# The embedded store (when the image runs with the default backend) lives in /data: mount a volume there.
# On AWS the root file system is read-only and nothing is written but /tmp.
ENV EVENTFLEET_DATA_DIR=/data \
    EVENTFLEET_LOG_FORMAT=json \
    HEALTHCHECK_URL=http://127.0.0.1:8080/health
WORKDIR /data
USER 10001:10001

# 8080: the ingress (EVENTFLEET_LISTEN). 9091: a worker's /metrics and /health (EVENTFLEET_METRICS_LISTEN).
EXPOSE 8080 9091

# Liveness of either process: the ingress answers /health on 8080; for a worker, set
# HEALTHCHECK_URL=http://127.0.0.1:9091/health. (ECS ignores this instruction and uses the task definition's
# healthCheck, which infra/terraform sets to the same command.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null --max-time 3 "$HEALTHCHECK_URL" || exit 1

ENTRYPOINT ["/usr/local/bin/eventfleet"]
CMD ["ingress"]
