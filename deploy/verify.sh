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
#   no engine needed], docker-compose [docker-compose], nginx [nginx],
#   promtool [prometheus], go + sprig [golang-go
#   golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev] for
#   tools/helm-render, npm registry access once (the Kubernetes models of
#   @kubernetes/client-node, cached in tools/.cache), helm (optional extra:
#   on PATH or HELM=/path/to/helm), shellcheck [shellcheck], yamllint [yamllint].
# What cannot be checked here: `docker build` (needs an engine), applying the
# chart to a cluster (needs an API server: the rendered objects are checked
# against strict schemas instead), nginx >= 1.27.3 `resolve` when the local
# nginx is older.
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
section "local compose stack (deploy/compose.yaml)"
if have docker-compose; then
  # docker-compose validates against its bundled Compose Specification schema
  # (unknown keys and wrong types are errors).
  run "docker-compose config -q -f deploy/compose.yaml" docker-compose -f deploy/compose.yaml config -q
else
  skip "docker-compose config" "docker-compose not installed: apt-get install docker-compose"
fi
if have docker; then
  run "docker stack config -c deploy/compose.yaml (Swarm v3 format overlap)" docker stack config -c deploy/compose.yaml
else
  skip "docker stack config -c deploy/compose.yaml" "docker client not installed"
fi
run "node --check deploy/compose/fake-backend.mjs" node --check deploy/compose/fake-backend.mjs
check_compose_invariants() {
  node -e '
    const { parse } = require("yaml");
    const c = parse(require("fs").readFileSync("deploy/compose.yaml", "utf8"), { merge: true });
    const conf = require("fs").readFileSync("deploy/compose/nginx.conf", "utf8");
    const slots = Object.keys(c.services).filter((s) => /^gateway-\d+$/.test(s));
    let bad = 0;
    const no = (m) => { console.error(m); bad++; };
    if (slots.length < 2) no("fewer than two gateway replicas");
    for (const s of slots) {
      const svc = c.services[s], env = svc.environment;
      const stop = Number(/^(\d+)s$/.exec(svc.stop_grace_period)?.[1]);
      if (!(Number(env.GATEWAY_DRAIN_MS) < Number(env.GATEWAY_SHUTDOWN_GRACE_MS))) no(s + ": drain >= grace");
      if (!(stop * 1000 > Number(env.GATEWAY_SHUTDOWN_GRACE_MS))) no(s + ": stop_grace_period <= GATEWAY_SHUTDOWN_GRACE_MS");
      if (!new RegExp("server " + s + ":9000\\b").test(conf)) no(s + " is not an nginx upstream");
    }
    if (!/hash \$rtgw_affinity_key consistent;/.test(conf)) no("nginx is not sticky");
    for (const s of ["redis", "backend", "nginx", "prometheus", "grafana"]) if (!c.services[s]) no("no " + s + " service");
    process.exit(bad ? 1 : 0);
  '
}
run "compose: two sticky gateway replicas, grace > drain, stop_grace_period > grace" check_compose_invariants

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
# The compose proxy config is a whole nginx.conf; pid, temp paths and the
# upstream names (resolved by Docker's DNS at run time) are made local.
wrap_compose() {
  local dir="$tmp/nginx-compose"
  mkdir -p "$dir/tmp"
  sed -E -e 's/server gateway-([0-9]+):9000/server 127.0.0.1:900\1/' \
    -e "s|^http \{|pid $dir/nginx.pid;\nerror_log stderr;\nhttp {\n    client_body_temp_path $dir/tmp;\n    proxy_temp_path $dir/tmp;\n    fastcgi_temp_path $dir/tmp;\n    uwsgi_temp_path $dir/tmp;\n    scgi_temp_path $dir/tmp;|" \
    deploy/compose/nginx.conf >"$dir/nginx.conf"
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
  run "nginx -t deploy/compose/nginx.conf (gateway-N as 127.0.0.1)" wrap_compose
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
    const groups = [];
    for (const f of process.argv.slice(1)) {
      const d = require(f);
      const rules = [];
      for (const p of d.panels) for (const t of p.targets || []) {
        const expr = t.expr.replace(/\$__rate_interval/g, "5m").replace(/\$\{?(job|namespace|pod|instance)\}?/g, ".+");
        rules.push({ record: "dashboard:panel" + p.id + ":" + t.refId, expr });
      }
      groups.push({ name: d.uid, rules });
    }
    // JSON is YAML.
    process.stdout.write(JSON.stringify({ groups }, null, 1));
  ' "$root"/deploy/grafana/dashboards/*.json >"$tmp/dashboard-rules.yml" && promtool check rules "$tmp/dashboard-rules.yml"
}
# The compose stack's Prometheus config, with its container paths pointed at
# the repository's files.
compose_prometheus() {
  sed "s|/etc/prometheus/alerts.yml|$root/deploy/prometheus/alerts.yml|" deploy/compose/prometheus.yml >"$tmp/compose-prometheus.yml" &&
    promtool check config "$tmp/compose-prometheus.yml"
}
if have promtool; then
  run "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
  run "promtool test rules deploy/prometheus/alerts.test.yml" promtool test rules deploy/prometheus/alerts.test.yml
  run "promtool check config deploy/prometheus/prometheus-swarm.yml" promtool check config deploy/prometheus/prometheus-swarm.yml
  run "promtool check config deploy/compose/prometheus.yml" compose_prometheus
  run "promtool: every Grafana dashboard query is valid PromQL (deploy/grafana/dashboards/*.json)" dashboard_rules
else
  skip "promtool checks" "promtool not installed: apt-get install prometheus"
fi

# ---------------------------------------------------------------------------
section "Helm chart (tools/helm-render: Go text/template + sprig + Helm's functions)"
chart=helm/realtime-gateway
# The renderer binary, cached by the hash of its source.
build_renderer() {
  local hash
  hash=$(sha256sum <tools/helm-render/main.go | cut -c1-16)
  renderer="$root/tools/helm-render/bin/helm-render-$hash"
  [ -x "$renderer" ] && return 0
  mkdir -p tools/helm-render/bin
  rm -f tools/helm-render/bin/helm-render-*
  (cd tools/helm-render && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS="" GOCACHE="${GOCACHE:-$root/tools/.cache/go-build}" \
    go build -o "$renderer.tmp" . && mv "$renderer.tmp" "$renderer")
}
# Kubernetes models of @kubernetes/client-node (field names, types, required
# fields, generated from the Kubernetes OpenAPI), fetched once with `npm
# pack` (the tarball only, no install) into a git-ignored cache.
client_node_version=1.4.0
models="$root/tools/.cache/client-node-$client_node_version/package/dist/gen/models"
fetch_models() {
  [ -f "$models/V1Deployment.js" ] && return 0
  local dir="$root/tools/.cache/client-node-$client_node_version"
  mkdir -p "$dir" &&
    (cd "$dir" && npm pack --silent "@kubernetes/client-node@$client_node_version" >/dev/null &&
      tar -xzf "kubernetes-client-node-$client_node_version.tgz" package/dist/gen/models package/package.json &&
      rm -f "kubernetes-client-node-$client_node_version.tgz") &&
    [ -f "$models/V1Deployment.js" ]
}
# Value sets: the defaults plus every ci/*-values.yaml.
value_sets=(default "$chart"/ci/*-values.yaml)
render_set() { # render_set NAME OUT [extra helm-render args]
  local set=$1 out=$2
  shift 2
  if [ "$set" = default ]; then
    "$renderer" --strict -n frappe --values-out "$out.values.json" "$@" "$chart" >"$out"
  else
    "$renderer" --strict -n frappe --values-out "$out.values.json" -f "$set" "$@" "$chart" >"$out"
  fi
}
helm_render_all() {
  local set ok=0 n=0
  mkdir -p "$tmp/chart"
  for set in "${value_sets[@]}"; do
    n=$((n + 1))
    echo "-- $set"
    render_set "$set" "$tmp/chart/$n.yaml" || ok=1
    grep '^# Source:' "$tmp/chart/$n.yaml" | sed 's|^# Source: [^/]*/|   |'
  done
  # The renderer's NOTES.txt must render too.
  "$renderer" --strict --notes "$chart" >/dev/null || ok=1
  return $ok
}
values_schema_all() {
  node tools/helm-render/check-values.mjs "$chart/values.schema.json" "$tmp"/chart/*.yaml.values.json
}
k8s_validate_all() {
  node tools/k8s-validate/validate.mjs --models "$models" "$tmp"/chart/*.yaml
}
# Kinds each value set must produce (a template that silently renders nothing
# would pass the schema checks).
expect_kinds() {
  local want k
  check() { grep -q "^kind: $2\$" "$tmp/chart/$1.yaml" || { echo "value set $1 rendered no $2"; return 1; }; }
  local i=0 ok=0 set
  for set in "${value_sets[@]}"; do
    i=$((i + 1))
    case $set in
      default) want="Deployment Service ServiceAccount PodDisruptionBudget Pod" ;;
      *sentinel-values.yaml) want="Deployment Secret" ;;
      *hpa-values.yaml) want="HorizontalPodAutoscaler" ;;
      *httproute-values.yaml) want="HTTPRoute" ;;
      *ingress-*-values.yaml) want="Ingress" ;;
      *monitoring-values.yaml) want="ServiceMonitor PrometheusRule ConfigMap NetworkPolicy" ;;
      *) want="Deployment" ;;
    esac
    for k in $want; do check "$i" "$k" || ok=1; done
  done
  grep -q 'GATEWAY_REDIS_SENTINEL_PASSWORD' "$tmp"/chart/*.yaml || { echo "no value set sets GATEWAY_REDIS_SENTINEL_PASSWORD"; ok=1; }
  grep -q 'type: Pods' "$tmp"/chart/*.yaml || { echo "no HPA on a Pods (connections) metric"; ok=1; }
  return $ok
}
# Configurations the chart must refuse, each with the message it must give.
refusals() {
  local ok=0 out
  expect_refusal() { # expect_refusal PATTERN ARGS...
    local pattern=$1
    shift
    if out=$("$renderer" "$@" "$chart" 2>&1 >/dev/null); then
      echo "rendered, expected a refusal: $*"
      ok=1
    elif ! grep -q -- "$pattern" <<<"$out"; then
      echo "refused without '$pattern': $* -> $out"
      ok=1
    fi
  }
  expect_refusal "without Redis" --set replicaCount=3
  expect_refusal "without Redis" --set autoscaling.enabled=true
  expect_refusal "86400" --set replicaCount=1 --set service.sessionAffinityTimeoutSeconds=1000000
  expect_refusal "drainMs must be shorter" --set gateway.drainMs=40000
  expect_refusal "sentinel needs" --set gateway.redis.mode=sentinel
  expect_refusal "ingress.hosts" --set ingress.enabled=true
  expect_refusal "parentRefs" --set httpRoute.enabled=true
  # ... and values.schema.json must refuse what the templates cannot see.
  printf '{"service":{"sessionAffinityTimeoutSeconds":1000000},"replicaCount":"two","gateway":{"redis":{"mode":"sentinal"}}}\n' >"$tmp/bad-values.json"
  if out=$(node tools/helm-render/check-values.mjs "$chart/values.schema.json" "$tmp/bad-values.json" 2>&1); then
    echo "values.schema.json accepted wrong values"
    ok=1
  else
    for p in sessionAffinityTimeoutSeconds replicaCount mode; do grep -q "$p" <<<"$out" || { echo "schema did not flag $p"; ok=1; }; done
  fi
  # What the issue reported as broken must render.
  "$renderer" --set podDisruptionBudget.minAvailable=1 "$chart" | grep -q 'minAvailable: 1' || { echo "minAvailable=1 did not render"; ok=1; }
  return $ok
}
if have go && [ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] && [ -d /usr/share/gocode/src/sigs.k8s.io/yaml ]; then
  if run "build tools/helm-render (cached by source hash)" build_renderer; then
    run "helm-render --strict: defaults and every ci/*-values.yaml render" helm_render_all
    run "values.schema.json accepts every value set (ajv)" values_schema_all
    if run "Kubernetes models (@kubernetes/client-node@$client_node_version, npm pack, cached)" fetch_models; then
      run "rendered objects valid against strict Kubernetes / Prometheus Operator / Gateway API schemas" k8s_validate_all
    fi
    run "each value set renders the objects it exists for" expect_kinds
    run "the chart refuses broken configurations with a clear message" refusals
    run "helm/realtime-gateway/README.md lists every value (values-table.mjs --check)" node tools/helm-render/values-table.mjs --check
  fi
else
  skip "helm-render (chart rendering and schema validation)" "apt-get install golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev"
fi

helm_bin=${HELM:-helm}
helm_checks() {
  local f ok=0
  for f in "$chart"/ci/*-values.yaml; do
    echo "-- $f"
    "$helm_bin" lint --strict "$chart" -f "$f" || ok=1
    "$helm_bin" template rt "$chart" -f "$f" >/dev/null || ok=1
  done
  "$helm_bin" template rt "$chart" >/dev/null || ok=1
  return $ok
}
# A real helm is an extra, not a requirement (none is packaged for Debian).
if have "$helm_bin"; then
  run "helm lint --strict + helm template (real helm)" helm_checks
else
  printf 'note: no helm binary; tools/helm-render stands in for it\n'
fi

# ---------------------------------------------------------------------------
section "shell and YAML style"
if have shellcheck; then
  run "shellcheck deploy/verify.sh deploy/docker/entrypoint.sh" shellcheck -x deploy/verify.sh deploy/docker/entrypoint.sh
else
  skip "shellcheck" "shellcheck not installed: apt-get install shellcheck"
fi
if have yamllint; then
  # Errors only (syntax, duplicate keys); style is the files' own.
  yamllint_files=(deploy/swarm/stack.yml deploy/compose.yaml deploy/compose/prometheus.yml deploy/grafana/provisioning/*/*.yaml deploy/prometheus/*.yml helm/realtime-gateway/Chart.yaml helm/realtime-gateway/values.yaml helm/realtime-gateway/ci/*.yaml)
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
