# syntax=docker/dockerfile:1
#
# realtime-gateway container image.
#
#   docker build -t realtime-gateway:dev .
#   docker run --rm -p 9000:9000 -p 9090:9090 \
#     -e GATEWAY_REDIS_URL=redis://redis:6379 realtime-gateway:dev
#
# Three stages: `build` compiles TypeScript with the dev dependencies,
# `deps` installs the runtime dependencies only, and the final stage copies
# dist/ and the production node_modules onto a clean slim base. Nothing from
# the build toolchain (typescript, tsx, eslint, ...) reaches the final image.
#
# For reproducible production builds pin the base image by digest
# (node:20-bookworm-slim@sha256:...); the tag is kept here so that the file
# keeps getting Node 20 security updates when rebuilt.

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile src/ to dist/ -------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The cache mount keeps npm's download cache between builds, not in a layer.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only ------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --no-audit --no-fund

# --- runtime -----------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

# OCI image annotations. Pass the build's facts in:
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) --build-arg SOURCE=https://git.example.com/rtgw .
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="realtime-gateway" \
      org.opencontainers.image.description="Horizontally scalable Socket.IO gateway for Frappe (drop-in replacement for its realtime server)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"

# PID 1 and signals. The gateway's primary process implements the whole
# SIGTERM sequence itself (readiness false, stop accepting, release
# leadership, drain clients in jittered batches, exit within
# GATEWAY_SHUTDOWN_GRACE_MS), so PID 1 must deliver SIGTERM to the primary
# and to nothing else:
# - node as PID 1 would work for SIGTERM (it installs a handler) but does not
#   reap orphaned zombies, and signals it has no handler for (SIGINT from
#   `docker run -it` + Ctrl-C) would be ignored by the kernel.
# - dumb-init forwards to the whole process group by default (setsid mode), so
#   the cluster workers would get SIGTERM directly and tear down their
#   sockets at once, racing the primary's orchestrated drain.
# - tini (without -g) forwards only to its direct child, the primary, and
#   reaps zombies. `docker run --init` is the same tini, but Kubernetes has no
#   such flag, so the image carries its own.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# NODE_OPTIONS: the V8 flags of every gateway process (V8_FLAGS in
# src/cluster/supervisor.ts, which also gives them to the workers; a unit
# test keeps the two equal). The young generation capped at 4 MiB
# semi-spaces: under a flood of events V8 would otherwise grow it to 32 MB
# in the leader; 2 MiB cost 15-30% more CPU per delivery (BENCHMARKS.md,
# "Memory under junk and Redis restarts").
# An operator's NODE_OPTIONS replaces this line: keep the flag in it.
# MALLOC_ARENA_MAX=2: two glibc malloc arenas instead of up to 8 per core;
# lowers the memory a connect burst leaves behind (BENCHMARKS.md, idle
# memory). The primary forks its workers with the same value unless set.
ENV NODE_ENV=production \
    NODE_OPTIONS=--max-semi-space-size=4 \
    GATEWAY_PORT=9000 \
    GATEWAY_OPS_PORT=9090 \
    MALLOC_ARENA_MAX=2

WORKDIR /app
# Code and dependencies stay root-owned and read-only for the runtime user:
# the gateway writes nothing to its own tree, which also makes
# readOnlyRootFilesystem possible in Kubernetes.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/gateway-entrypoint

# The `node` user of the official image, by number: Kubernetes can only
# verify runAsNonRoot against a numeric USER.
USER 1000:1000

EXPOSE 9000 9090

# Liveness only: /readyz turns 503 while Redis is unreachable, and a
# container that Docker marks unhealthy for that would be restarted by Swarm
# for a fault that is not its own. No curl in the slim image, so node probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const p=process.env.GATEWAY_OPS_PORT||9090;require('http').get({host:'127.0.0.1',port:p,path:'/livez',timeout:4000},r=>process.exit(r.statusCode===200?0:1)).on('timeout',()=>process.exit(1)).on('error',()=>process.exit(1))"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gateway-entrypoint"]
# node directly, never `npm start`: npm would rebuild, and it does not pass
# SIGTERM on reliably.
CMD ["node", "dist/main.js"]
