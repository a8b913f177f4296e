#!/bin/sh
# Container entrypoint of realtime-gateway (runs under tini, see Dockerfile).
#
# Secrets are better mounted as files than passed as environment variables
# (Docker Swarm secrets, Kubernetes secret volumes): for each VAR listed
# below, VAR_FILE=/path makes this script read the file into VAR before the
# gateway starts. Trailing newlines are dropped (`echo x | docker secret
# create` adds one). VAR_FILE is removed from the environment afterwards so
# the gateway's config schema never sees it. Setting both VAR and VAR_FILE
# is an error, as is an unreadable file: fail loudly rather than start with
# no token.
set -eu

for var in GATEWAY_PUBLISH_TOKEN GATEWAY_SOCKET_SECRET GATEWAY_REDIS_URL; do
  eval "file=\${${var}_FILE:-}"
  [ -n "$file" ] || continue
  eval "current=\${${var}:-}"
  if [ -n "$current" ]; then
    echo "entrypoint: both ${var} and ${var}_FILE are set; set only one" >&2
    exit 64
  fi
  if [ ! -r "$file" ]; then
    echo "entrypoint: ${var}_FILE=${file} is not a readable file" >&2
    exit 66
  fi
  value=$(cat "$file")
  export "${var}=${value}"
  unset "${var}_FILE"
done

# exec so that node replaces this shell and is the direct child of tini,
# which forwards SIGTERM to it.
exec "$@"
