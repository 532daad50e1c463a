#!/usr/bin/env bash
# Proxy overhead: client → app directly, through one `mesh proxy` (inbound), through outbound
# + inbound proxies with mTLS, and through nginx as a reverse proxy — the method of
# ../../shared/BENCHMARKING.md (a private network namespace, one worker per proxy, wrk
# closed loop in interleaved rounds, oha at a fixed rate, CPU time per request from /proc,
# peak RSS from VmHWM). Needs root; installs nginx-light and wrk from Debian and oha from
# crates.io where missing. Prints a table; nothing is asserted (speed lives here, not in tests).
#
#   sudo bash benches/proxy/run.sh            # ROUNDS=3 DURATION=10s WARMUP=3s RATE=2000
#   SKIP_OHA=1 sudo bash benches/proxy/run.sh # closed loop only, when oha cannot be installed
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
RATE=${RATE:-2000}
CONNS=${CONNS:-32}
NS=meshbench-$$
root=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

if [ "$(id -u)" != 0 ]; then echo "needs root (network namespace)"; exit 1; fi
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
OHA=$(command -v oha || true)
if [ -z "$OHA" ] && [ -x "${OHA_ROOT:-/tmp/oha-root}/bin/oha" ]; then OHA=${OHA_ROOT:-/tmp/oha-root}/bin/oha; fi
if [ -z "$OHA" ] && [ -z "${SKIP_OHA:-}" ]; then
  echo "installing oha (about 4 minutes; plain 'cargo install oha' fails on this toolchain, --locked works)"
  cargo install oha --locked --root "${OHA_ROOT:-/tmp/oha-root}" >/dev/null 2>&1 && OHA=${OHA_ROOT:-/tmp/oha-root}/bin/oha || echo "oha unavailable: skipping the fixed-rate column"
fi

cargo build --release --bin mesh --manifest-path "$root/Cargo.toml" >/dev/null
MESH=$CARGO_TARGET_DIR/release/mesh
# shellcheck source=../netns.sh
. "$root/benches/netns.sh"

# --- upstream and nginx reverse proxy, one worker each --------------------------------------
cat >"$work/upstream.conf" <<EOF
worker_processes 1; daemon off; pid $work/upstream.pid; error_log $work/upstream.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:8080; location / { return 200 "ok"; } } }
EOF
cat >"$work/nginx-proxy.conf" <<EOF
worker_processes 1; daemon off; pid $work/proxy.pid; error_log $work/proxy.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:8080; keepalive 64; }
  server { listen 127.0.0.1:8081; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
nsbg nginx -c "$work/upstream.conf"; pids+=($!)
nsbg nginx -c "$work/nginx-proxy.conf"; pids+=($!)

# --- identities from a real issuer ----------------------------------------------------------
"$MESH" identity init --trust-domain cluster.local --out "$work/ca" >/dev/null
printf 'tok-client default/client\ntok-server default/server\n' >"$work/tokens"
echo tok-client >"$work/client.tok"; echo tok-server >"$work/server.tok"
nsbg "$MESH" identity serve --dir "$work/ca" --listen 127.0.0.1:8443 --tokens "$work/tokens" 2>/dev/null; pids+=($!)
for who in client server; do
  for _ in $(seq 50); do
    nsx "$MESH" identity issue --issuer https://127.0.0.1:8443 --token-file "$work/$who.tok" \
      --trust-anchors "$work/ca/ca.crt" --out "$work/$who" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

# --- the mesh's config: real policy work on the inbound side (a Server with a route and an
# AuthorizationPolicy), a Service with an HTTPRoute and an endpoint on the outbound side.
cat >"$work/server.yaml" <<'EOF'
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: bench-http, namespace: default }
spec: { podSelector: { matchLabels: {} }, port: 8080, proxyProtocol: HTTP/1 }
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: { name: bench-all, namespace: default }
spec:
  parentRefs: [{ name: bench-http, kind: Server, group: policy.linkerd.io }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: / } }] }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: { name: anywhere, namespace: default }
spec: { networks: [{ cidr: 0.0.0.0/0 }, { cidr: "::/0" }] }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: bench-any, namespace: default }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: bench-http }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: NetworkAuthentication, name: anywhere }]
EOF
cat >"$work/client.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: { name: bench, namespace: default }
spec: { ports: [{ name: http, port: 80 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: bench, namespace: default }
spec:
  parentRefs: [{ name: bench, kind: Service, port: 80 }]
  rules: [{ backendRefs: [{ name: bench, port: 80 }] }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  namespace: default
  labels: { kubernetes.io/service-name: bench }
  annotations: { mesh.io/service-account: server }
addressType: IPv4
ports: [{ name: http, port: 4243 }]
endpoints: [{ addresses: ["127.0.0.1"] }]
EOF
# (2) one inbound proxy in front of the app, plaintext, as a kubelet-probed sidecar sees it.
nsbg "$MESH" proxy --mode explicit --workers 1 --config "$work/server.yaml" \
  --inbound-addr 127.0.0.1:4143 --outbound-addr 127.0.0.1:4140 --admin-addr 127.0.0.1:4191 \
  --inbound-forward 127.0.0.1:8080 2>"$work/inbound.log"; pids+=($!); P_IN=$!
# (3) outbound proxy → mTLS → inbound proxy → app.
nsbg "$MESH" proxy --mode explicit --workers 1 --config "$work/server.yaml" --identity-dir "$work/server" \
  --inbound-addr 127.0.0.1:4243 --outbound-addr 127.0.0.1:4240 --admin-addr 127.0.0.1:4291 \
  --inbound-forward 127.0.0.1:8080 2>"$work/server.log"; pids+=($!); P_SRV=$!
nsbg "$MESH" proxy --mode explicit --workers 1 --config "$work/client.yaml" --identity-dir "$work/client" \
  --inbound-addr 127.0.0.1:4343 --outbound-addr 127.0.0.1:4340 --admin-addr 127.0.0.1:4391 \
  2>"$work/client.log"; pids+=($!); P_CLI=$!
# Every proxy must be ready and serving its config, not the default policy: a refused config
# would measure a proxy doing less work than the table claims.
for port in 4191 4291 4391; do
  ready=
  for _ in $(seq 100); do nsx python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/ready',timeout=1)" 2>/dev/null && { ready=1; break; }; sleep 0.1; done
  [ -n "$ready" ] || { echo "the proxy with admin port $port is not ready after 10 s; see $work/*.log"; exit 1; }
  metrics=$(nsx python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics',timeout=3).read().decode())")
  if grep -q 'config_reload_total{result="invalid"}' <<<"$metrics" || ! grep -q 'config_reload_total{result="ok"}' <<<"$metrics"; then
    echo "the proxy with admin port $port refused its config; see $work/*.log"; exit 1
  fi
done
nginx_worker=$(pgrep -f "nginx: worker process" -P "$(cat "$work/proxy.pid")" | head -1 || true)
nginx_pids="$(cat "$work/proxy.pid") ${nginx_worker}"

# target name, URL, Host header, pids whose CPU counts
targets=(
  "direct|http://127.0.0.1:8080/|app|"
  "mesh-inbound|http://127.0.0.1:4143/|app|$P_IN"
  "mesh-out+in-mtls|http://127.0.0.1:4340/|bench.default:80|$P_CLI $P_SRV"
  "nginx|http://127.0.0.1:8081/|app|$nginx_pids"
)
cpu_ticks() { local t=0; for p in $1; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
hwm_kib() { local m=0; for p in $1; do [ -r "/proc/$p/status" ] && m=$((m + $(awk '/VmHWM/{print $2}' "/proc/$p/status"))); done; echo $m; }

# Sanity: every target answers.
for t in "${targets[@]}"; do IFS='|' read -r name url host _ <<<"$t"
  body=$(nsx python3 -c "import urllib.request; r=urllib.request.Request('$url', headers={'Host':'$host'}); print(urllib.request.urlopen(r,timeout=3).read().decode())")
  [ "$body" = ok ] || { echo "$name does not answer: $body"; exit 1; }
done

results=$work/results.txt; : >"$results"
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do IFS='|' read -r name url host p <<<"$t"
    nsx wrk -t2 -c"$CONNS" -d"$WARMUP" -H "Host: $host" "$url" >/dev/null
    before=$(cpu_ticks "$p")
    nsx wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Host: $host" "$url" >"$work/wrk.out" &
    wrk_pid=$!
    # Half-way through: how many connections reach the app (no target should be churning).
    sleep "$(( ${DURATION%s} / 2 ))"
    upstream_conns=$(nsx ss -tnH state established '( dport = :8080 )' | wc -l)
    wait "$wrk_pid"
    out=$(cat "$work/wrk.out")
    after=$(cpu_ticks "$p")
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    p50=$(awk '$1=="50%"{print $2}' <<<"$out"); p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    echo "wrk $name $round $rps $reqs $((after - before)) $p50 $p99 $upstream_conns" >>"$results"
  done
done
if [ -n "$OHA" ]; then
  for t in "${targets[@]}"; do IFS='|' read -r name url host _ <<<"$t"
    j=$(nsx "$OHA" -z "$DURATION" -q "$RATE" -c "$CONNS" --latency-correction --no-tui --output-format json -H "Host: $host" "$url" 2>/dev/null || true)
    echo "oha $name $(python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); p=d["latencyPercentiles"]; print(p["p50"]*1000, p["p99"]*1000, p["p99.9"]*1000)' <<<"$j" 2>/dev/null || echo "- - -")" >>"$results"
  done
fi
for t in "${targets[@]}"; do IFS='|' read -r name _ _ p <<<"$t"; echo "rss $name $(hwm_kib "$p")" >>"$results"; done

python3 - "$results" "$(getconf CLK_TCK)" <<'EOF'
import sys, statistics, collections
rows = [l.split() for l in open(sys.argv[1])]
hz = float(sys.argv[2])
def ms(v):
    v = v.strip()
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[:-len(unit)]) * f
    return float(v)
wrk = collections.defaultdict(list)
oha, rss = {}, {}
for r in rows:
    if r[0] == "wrk": wrk[r[1]].append(r[3:])
    elif r[0] == "oha": oha[r[1]] = r[2:]
    elif r[0] == "rss": rss[r[1]] = int(r[2])
names = list(wrk)
base = statistics.mean(float(x[0]) for x in wrk["direct"])
print(f"\n{'target':<18} {'req/s':>9} {'× direct':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>11} {'peak RSS':>9} {'@%s rps p50/p99/p99.9 ms' % 'fixed':>26} {'upstream conns':>15}")
for n in names:
    runs = wrk[n]
    rps = statistics.mean(float(x[0]) for x in runs)
    p50 = statistics.median(ms(x[3]) for x in runs); p99 = statistics.median(ms(x[4]) for x in runs)
    cpu = [int(x[2]) / hz * 1e6 / max(int(x[1]), 1) for x in runs]
    cpu_s = "-" if n == "direct" else f"{statistics.mean(cpu):.1f}"
    r = "-" if n == "direct" else f"{rss.get(n, 0)/1024:.1f} MiB"
    o = oha.get(n)
    o_s = "-" if not o or o[0] == "-" else f"{float(o[0]):.2f} / {float(o[1]):.2f} / {float(o[2]):.2f}"
    print(f"{n:<18} {rps:>9.0f} {rps/base:>9.2f} {p50:>7.2f} {p99:>7.2f} {cpu_s:>11} {r:>9} {o_s:>26} {runs[-1][5]:>15}")
EOF
