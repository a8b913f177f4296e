#!/usr/bin/env bash
# shellcheck disable=SC2016  # the single-quoted sh -c / node -e scripts expand in their own shell
# Offline checks of the deployment artefacts: everything that can be verified
# without a container engine, a Kubernetes cluster or a network.
#
#   deploy/verify.sh             run every check whose tool is installed
#   VERIFY_STRICT=1 deploy/verify.sh   a missing tool is a failure, not a skip
#
# Tools, each optional unless VERIFY_STRICT=1 (Debian package in brackets):
#   node + npm ci'd node_modules (always needed), docker client [docker CLI,
#   no engine needed], nginx [nginx], promtool [prometheus], helm (on PATH or
#   HELM=/path/to/helm), shellcheck [shellcheck], yamllint [yamllint].
# What cannot be checked here: `docker build` (needs an engine), applying the
# chart to a cluster (needs an API server; `helm lint` + `helm template` are
# run instead), nginx >= 1.27.3 `resolve` when the local nginx is older.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
root=$(pwd)
strict=${VERIFY_STRICT:-0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
skipped=0
failures=()

section() { printf '\n== %s\n' "$1"; }
pass() { printf 'PASS %s\n' "$1"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s\n' "$1"; failed=$((failed + 1)); failures+=("$1"); }
skip() {
  if [ "$strict" = 1 ]; then
    fail "$1 (VERIFY_STRICT=1: $2)"
  else
    printf 'SKIP %s (%s)\n' "$1" "$2"
    skipped=$((skipped + 1))
  fi
}
# run NAME CMD...: runs CMD, output shown only when it fails.
run() {
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then
    pass "$name"
  else
    sed 's/^/    /' "$tmp/out"
    fail "$name"
  fi
}
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------
section "pure-node checks (test/unit/deploy-artifacts.test.ts: YAML/JSON parse, values references, metric names, env names)"
if [ -d node_modules/yaml ] && [ -d node_modules/tsx ]; then
  run "deploy-artifacts unit tests" node --import tsx --test test/unit/deploy-artifacts.test.ts
else
  fail "node_modules missing: run npm ci first"
fi

# ---------------------------------------------------------------------------
section "Docker Swarm stack"
if have docker; then
  run "docker stack config -c deploy/swarm/stack.yml" docker stack config -c deploy/swarm/stack.yml
else
  skip "docker stack config" "docker client not installed"
fi

# ---------------------------------------------------------------------------
section "container entrypoint (deploy/docker/entrypoint.sh)"
check_entrypoint() {
  local ep=deploy/docker/entrypoint.sh out
  printf 'sekret\n\n' >"$tmp/token"
  out=$(env -i PATH="$PATH" GATEWAY_PUBLISH_TOKEN_FILE="$tmp/token" sh "$ep" sh -c 'printf "%s|%s" "$GATEWAY_PUBLISH_TOKEN" "${GATEWAY_PUBLISH_TOKEN_FILE:-unset}"') || return 1
  [ "$out" = "sekret|unset" ] || { echo "file not read into the variable: $out"; return 1; }
  if env -i PATH="$PATH" GATEWAY_PUBLISH_TOKEN=x GATEWAY_PUBLISH_TOKEN_FILE="$tmp/token" sh "$ep" true 2>/dev/null; then
    echo "VAR and VAR_FILE both set was accepted"
    return 1
  fi
  if env -i PATH="$PATH" GATEWAY_REDIS_URL_FILE="$tmp/missing" sh "$ep" true 2>/dev/null; then
    echo "unreadable VAR_FILE was accepted"
    return 1
  fi
  out=$(env -i PATH="$PATH" GATEWAY_LOG_LEVEL=debug sh "$ep" sh -c 'printf %s "$GATEWAY_LOG_LEVEL"') || return 1
  [ "$out" = debug ] || { echo "environment not passed through"; return 1; }
}
run "entrypoint: *_FILE secrets, conflicts, pass-through, exec" check_entrypoint

# ---------------------------------------------------------------------------
section "nginx"
# Splits an example at its "---- server {} context" marker into an http part
# and a server part, and wraps them in a minimal nginx.conf.
wrap_example() {
  local src=$1 name=$2 dir="$tmp/nginx-$2"
  mkdir -p "$dir/tmp"
  awk '/^# ---- server \{\} context/{exit} {print}' "$src" >"$dir/http.conf"
  awk 'p{print} /^# ---- server \{\} context/{p=1}' "$src" >"$dir/server.conf"
  [ -s "$dir/server.conf" ] || { echo "$src: no server {} context marker"; return 1; }
  cat >"$dir/nginx.conf" <<EOF
pid $dir/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    include $dir/http.conf;
    server {
        listen 127.0.0.1:8080;
        server_name site1.local;
        include $dir/server.conf;
    }
}
EOF
  nginx -t -q -c "$dir/nginx.conf"
}
# The Swarm config is a whole http {} include. nginx before 1.27.3 lacks
# `server ... resolve`; then the slot names (which only resolve inside the
# overlay network anyway) become 127.0.0.1 and `resolve` is dropped.
wrap_swarm() {
  local dir="$tmp/nginx-swarm" conf=deploy/swarm/nginx-gateway.conf
  mkdir -p "$dir/tmp"
  if [ "$nginx_has_resolve" = 1 ]; then
    cp "$conf" "$dir/http.conf"
  else
    sed -E 's/server gateway-[0-9]+:9000 resolve/server 127.0.0.1:9000/' "$conf" >"$dir/http.conf"
  fi
  cat >"$dir/nginx.conf" <<EOF
pid $dir/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    include $dir/http.conf;
}
EOF
  nginx -t -q -c "$dir/nginx.conf"
}
if have nginx; then
  nginx_version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
  nginx_has_resolve=0
  if [ "$(printf '%s\n1.27.3\n' "$nginx_version" | sort -V | head -n1)" = 1.27.3 ]; then nginx_has_resolve=1; fi
  echo "nginx $nginx_version"
  run "nginx -t deploy/nginx/frappe-single-host.conf" wrap_example deploy/nginx/frappe-single-host.conf single
  run "nginx -t deploy/nginx/frappe-multi-host.conf" wrap_example deploy/nginx/frappe-multi-host.conf multi
  if [ "$nginx_has_resolve" = 1 ]; then
    run "nginx -t deploy/swarm/nginx-gateway.conf" wrap_swarm
  else
    run "nginx -t deploy/swarm/nginx-gateway.conf (nginx $nginx_version < 1.27.3: without 'resolve')" wrap_swarm
  fi
  run "nginx + Socket.IO behaviour on loopback (deploy/nginx/check-proxy.mjs)" node deploy/nginx/check-proxy.mjs
else
  skip "nginx -t and proxy behaviour checks" "nginx not installed: apt-get install nginx"
fi

# ---------------------------------------------------------------------------
section "Prometheus"
# The dashboard's queries as recording rules, so promtool parses their PromQL
# (Grafana variables replaced by plain values).
dashboard_rules() {
  node -e '
    const d = require(process.argv[1]);
    const rules = [];
    for (const p of d.panels) for (const t of p.targets || []) {
      const expr = t.expr.replace(/\$__rate_interval/g, "5m").replace(/\$\{?(job|instance)\}?/g, ".+");
      rules.push({ record: "dashboard:panel" + p.id + ":" + t.refId, expr });
    }
    // JSON is YAML.
    process.stdout.write(JSON.stringify({ groups: [{ name: "dashboard", rules }] }, null, 1));
  ' "$root/deploy/grafana/realtime-gateway.json" >"$tmp/dashboard-rules.yml" && promtool check rules "$tmp/dashboard-rules.yml"
}
if have promtool; then
  run "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
  run "promtool test rules deploy/prometheus/alerts.test.yml" promtool test rules deploy/prometheus/alerts.test.yml
  run "promtool check config deploy/prometheus/prometheus-swarm.yml" promtool check config deploy/prometheus/prometheus-swarm.yml
  run "promtool: every Grafana dashboard query is valid PromQL" dashboard_rules
else
  skip "promtool checks" "promtool not installed: apt-get install prometheus"
fi

# ---------------------------------------------------------------------------
section "Helm chart"
helm_bin=${HELM:-helm}
helm_checks() {
  local chart=helm/realtime-gateway f ok=0
  for f in "$chart"/ci/*-values.yaml; do
    echo "-- $f"
    "$helm_bin" lint --strict "$chart" -f "$f" || ok=1
    "$helm_bin" template rt "$chart" -f "$f" >"$tmp/rendered.yaml" || ok=1
    # The rendered manifests must be YAML, with the same parser as the unit test.
    node -e '
      const { parseAllDocuments } = require("yaml");
      const docs = parseAllDocuments(require("fs").readFileSync(process.argv[1], "utf8"));
      const bad = docs.flatMap((d) => d.errors.map((e) => e.message));
      if (bad.length) { console.error(bad.join("\n")); process.exit(1); }
      console.log(docs.filter((d) => d.contents).map((d) => d.get("kind")).join(" "));
    ' "$tmp/rendered.yaml" || ok=1
  done
  # The standalone guard must refuse several replicas without Redis.
  if "$helm_bin" template rt "$chart" --set replicaCount=3 >/dev/null 2>&1; then
    echo "3 replicas without Redis rendered, expected a failure"
    ok=1
  fi
  return $ok
}
if have "$helm_bin"; then
  run "helm lint --strict + helm template (helm/realtime-gateway/ci/*-values.yaml)" helm_checks
else
  skip "helm lint/template" "helm not installed (set HELM=/path/to/helm)"
fi

# ---------------------------------------------------------------------------
section "shell and YAML style"
if have shellcheck; then
  run "shellcheck deploy/verify.sh deploy/docker/entrypoint.sh" shellcheck deploy/verify.sh deploy/docker/entrypoint.sh
else
  skip "shellcheck" "shellcheck not installed: apt-get install shellcheck"
fi
if have yamllint; then
  # Errors only (syntax, duplicate keys); style is the files' own.
  yamllint_files=(deploy/swarm/stack.yml deploy/prometheus/*.yml helm/realtime-gateway/Chart.yaml helm/realtime-gateway/values.yaml helm/realtime-gateway/ci/*.yaml)
  run "yamllint (errors only)" yamllint -d '{extends: relaxed, rules: {line-length: disable, indentation: disable}}' --no-warnings "${yamllint_files[@]}"
else
  skip "yamllint" "yamllint not installed: apt-get install yamllint"
fi

# ---------------------------------------------------------------------------
printf '\n%d passed, %d failed' "$passed" "$failed"
[ "$skipped" -gt 0 ] && printf ', %d skipped' "$skipped"
printf '\n'
if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
  exit 1
fi
echo "Not checked offline: docker build/run (needs an engine), the chart against a live API server."
