#!/usr/bin/env bash
# Runs a command with the open-file limit raised to the hard limit (10,000
# connections need 10,000+ descriptors in the gateway and in the generators).
# Usage: bench/with-nofile.sh npm run bench -- connect-storm
set -euo pipefail
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
if [ "$(ulimit -n)" != "unlimited" ] && [ "$(ulimit -n)" -lt 12000 ] && command -v prlimit >/dev/null; then
  prlimit --pid $$ --nofile=65536:65536 2>/dev/null || echo "with-nofile: could not raise the limit beyond $(ulimit -n)" >&2
fi
exec "$@"
