#!/usr/bin/env bash
# Installs what `npm run test:e2e:browser` needs from Debian when it is
# missing: nginx (/usr/sbin/nginx) and Chromium (/usr/bin/chromium). Idempotent:
# does nothing (and never touches apt) when both are present. Needs root, as
# on CI. The browser is Debian's; playwright-core never downloads one.
set -euo pipefail

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-browser-deps: nginx and chromium present"
  exit 0
fi

echo "ensure-browser-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
