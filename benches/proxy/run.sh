#!/usr/bin/env bash
# Proxy overhead: client → app directly, through one `mesh proxy` (inbound), through outbound
# + inbound proxies with mTLS, through nginx and haproxy as reverse proxies, and through two
# nginx with mTLS between them (the two-hop row's reference) — the method of
# ../../shared/BENCHMARKING.md (a private network namespace, WORKERS workers per proxy, wrk
# closed loop in interleaved rounds, oha at a fixed rate, CPU time per request from /proc,
# peak RSS from VmHWM, connections the app accepted during each run from nginx's
# stub_status). Then, unless skipped: allocations per request in each proxy (uprobes on libc's
# allocator with `perf probe`), memory held by IDLE idle keep-alive connections, and
# throughput and p99 at 1, 32, 256 and 1,024 connections. Needs root; installs nginx-light,
# haproxy and wrk from Debian and oha from crates.io where missing. Prints tables; nothing is
# asserted (speed lives here, not in tests).
#
#   sudo bash benches/proxy/run.sh            # ROUNDS=3 DURATION=10s WARMUP=3s RATE=2000
#   SKIP_OHA=1 sudo bash benches/proxy/run.sh # closed loop only, when oha cannot be installed
#   WORKERS=2 sudo bash benches/proxy/run.sh  # two workers (threads) in every proxy
#   SKIP_ALLOCS=1 SKIP_IDLE=1 SKIP_SCALING=1  # leave out the extra tables
#   MESH=/path/to/mesh                        # measure that binary instead of building one
#   ROWS="direct mesh-out+in-mtls nginx"      # measure only these rows (default: all)
#   QUIET_LOAD=0.6                            # each round waits (up to 3 min) for this load
#   PROFILE=DIR                               # also perf-record each mesh proxy under load:
#                                             # DIR/<proxy>.txt, CPU shares by component, and
#                                             # DIR/allocs-<proxy>.txt, who allocates
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
RATE=${RATE:-2000}
CONNS=${CONNS:-32}
WORKERS=${WORKERS:-1}
IDLE=${IDLE:-1024}
SCALE_DURATION=${SCALE_DURATION:-5s}
QUIET_LOAD=${QUIET_LOAD:-0.6}
NS=meshbench-$$
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

if [ "$(id -u)" != 0 ]; then echo "needs root (network namespace)"; exit 1; fi
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
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
[ -n "${SKIP_OHA:-}" ] && OHA=

if [ -z "${MESH:-}" ]; then
  cargo build --release --bin mesh --manifest-path "$root/Cargo.toml" >/dev/null
  MESH=$CARGO_TARGET_DIR/release/mesh
fi
# IDLE client connections, and as many upstream, may exceed the soft limit on fds: raise it.
ulimit -n "$(ulimit -Hn)"
# shellcheck source=../netns.sh
. "$root/benches/netns.sh"

# --- upstream, and nginx and haproxy as reverse proxies with WORKERS each -------------------
# The upstream has one worker whatever WORKERS is; its stub_status (port 8079) counts the
# connections it accepted, so the table shows a proxy that opens connections per request.
cat >"$work/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $work/upstream.pid; error_log $work/upstream.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:8080; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:8079; location / { stub_status; } } }
CONF
cat >"$work/nginx-proxy.conf" <<CONF
worker_processes $WORKERS; daemon off; pid $work/proxy.pid; error_log $work/proxy.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:8080; keepalive 64; }
  server { listen 127.0.0.1:8081; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
  maxconn 8192
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench
  bind 127.0.0.1:8082
  default_backend app
backend app
  server app 127.0.0.1:8080
CONF
nsbg nginx -c "$work/upstream.conf"; pids+=($!)
nsbg nginx -c "$work/nginx-proxy.conf"; pids+=($!)
nsbg haproxy -db -f "$work/haproxy.cfg"; pids+=($!); P_HAPROXY=$!

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

# --- nginx as the same two hops with mTLS, with the same certificates: the reference for the
# two-hop row (an outbound nginx verifying the server's identity, an inbound one requiring the
# client's certificate; TLS 1.3, keep-alive and session reuse between them).
server_name=server.default.serviceaccount.identity.linkerd.cluster.local
cat >"$work/nginx-mtls-out.conf" <<CONF
worker_processes $WORKERS; daemon off; pid $work/mtls-out.pid; error_log $work/mtls-out.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  upstream peer { server 127.0.0.1:8084; keepalive 64; }
  server { listen 127.0.0.1:8083; location / {
    proxy_pass https://peer; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_ssl_certificate $work/client/tls.crt; proxy_ssl_certificate_key $work/client/tls.key;
    proxy_ssl_trusted_certificate $work/client/ca.crt; proxy_ssl_verify on; proxy_ssl_verify_depth 3;
    proxy_ssl_name $server_name; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on; } } }
CONF
cat >"$work/nginx-mtls-in.conf" <<CONF
worker_processes $WORKERS; daemon off; pid $work/mtls-in.pid; error_log $work/mtls-in.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:8080; keepalive 64; }
  server { listen 127.0.0.1:8084 ssl; ssl_protocols TLSv1.3;
    ssl_certificate $work/server/tls.crt; ssl_certificate_key $work/server/tls.key;
    ssl_client_certificate $work/server/ca.crt; ssl_verify_client on; ssl_verify_depth 3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
nsbg nginx -c "$work/nginx-mtls-out.conf"; pids+=($!)
nsbg nginx -c "$work/nginx-mtls-in.conf"; pids+=($!)

# --- the proxies: real policy work inbound, a route with a split and a balancer outbound ----
# (2) one inbound proxy in front of the app, plaintext, as a kubelet-probed sidecar sees it.
nsbg "$MESH" proxy --mode explicit --workers "$WORKERS" --config "$here/server.yaml" \
  --inbound-addr 127.0.0.1:4143 --outbound-addr 127.0.0.1:4140 --admin-addr 127.0.0.1:4191 \
  --inbound-forward 127.0.0.1:8080 2>"$work/inbound.log"; pids+=($!); P_IN=$!
# (3) outbound proxy → mTLS → inbound proxy → app.
nsbg "$MESH" proxy --mode explicit --workers "$WORKERS" --config "$here/server.yaml" --identity-dir "$work/server" \
  --inbound-addr 127.0.0.1:4243 --outbound-addr 127.0.0.1:4240 --admin-addr 127.0.0.1:4291 \
  --inbound-forward 127.0.0.1:8080 2>"$work/server.log"; pids+=($!); P_SRV=$!
nsbg "$MESH" proxy --mode explicit --workers "$WORKERS" --config "$here/client.yaml" --identity-dir "$work/client" \
  --inbound-addr 127.0.0.1:4343 --outbound-addr 127.0.0.1:4340 --admin-addr 127.0.0.1:4391 \
  2>"$work/client.log"; pids+=($!); P_CLI=$!
fetch() { nsx python3 -c "import urllib.request,sys; r=urllib.request.Request(sys.argv[1], headers={'Host': sys.argv[2]}); print(urllib.request.urlopen(r,timeout=3).read().decode())" "$1" "${2:-x}"; }
# Every proxy must be ready and serving its config, not the default policy: a refused config
# would measure a proxy doing less work than the table claims.
for port in 4191 4291 4391; do
  ready=
  for _ in $(seq 100); do fetch "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && { ready=1; break; }; sleep 0.1; done
  [ -n "$ready" ] || { echo "the proxy with admin port $port is not ready after 10 s; see $work/*.log"; exit 1; }
  metrics=$(fetch "http://127.0.0.1:$port/metrics")
  if grep -q 'config_reload_total{result="invalid"}' <<<"$metrics" || ! grep -q 'config_reload_total{result="ok"}' <<<"$metrics"; then
    echo "the proxy with admin port $port refused its config; see $work/*.log"; exit 1
  fi
done
nginx_workers=$(pgrep -f "nginx: worker process" -P "$(cat "$work/proxy.pid")" | tr '\n' ' ' || true)
# Every process of an nginx instance (master and workers), by its pid file.
nginx_pids() { local m; m=$(cat "$work/$1.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }

# target name, URL, Host header, pids whose CPU and memory count
targets=(
  "direct|http://127.0.0.1:8080/|app|"
  "mesh-inbound|http://127.0.0.1:4143/|app|$P_IN"
  "mesh-out+in-mtls|http://127.0.0.1:4340/|bench.default:80|$P_CLI $P_SRV"
  "nginx|http://127.0.0.1:8081/|app|$(cat "$work/proxy.pid") $nginx_workers"
  "nginx-out+in-mtls|http://127.0.0.1:8083/|app|$(nginx_pids mtls-out) $(nginx_pids mtls-in)"
  "haproxy|http://127.0.0.1:8082/|app|$P_HAPROXY"
)
if [ -n "${ROWS:-}" ]; then
  chosen=()
  for t in "${targets[@]}"; do [[ " $ROWS " == *" ${t%%|*} "* ]] && chosen+=("$t"); done
  ((${#chosen[@]})) || { echo "ROWS=$ROWS names no row"; exit 1; }
  targets=("${chosen[@]}")
fi
cpu_ticks() { local t=0; for p in $1; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
hwm_kib() { local m=0; for p in $1; do [ -r "/proc/$p/status" ] && m=$((m + $(awk '/VmHWM/{print $2}' "/proc/$p/status"))); done; echo $m; }
# Connections the app has accepted so far (stub_status: "server accepts handled requests").
app_accepts() { fetch http://127.0.0.1:8079/ | awk 'NR==3{print $1}'; }

for t in "${targets[@]}"; do IFS='|' read -r name url host _ <<<"$t"
  body=$(fetch "$url" "$host")
  [ "$body" = ok ] || { echo "$name does not answer: $body"; exit 1; }
done

# Each round starts on a quiet machine: the 1-minute load average below QUIET_LOAD.
wait_quiet() {
  for _ in $(seq 180); do
    awk -v q="$QUIET_LOAD" '{exit !($1 < q)}' /proc/loadavg && break
    sleep 1
  done
  echo "round $1: load $(cut -d' ' -f1-3 /proc/loadavg)"
}

results=$work/results.txt; : >"$results"
for round in $(seq "$ROUNDS"); do
  wait_quiet "$round"
  for t in "${targets[@]}"; do IFS='|' read -r name url host p <<<"$t"
    nsx wrk -t2 -c"$CONNS" -d"$WARMUP" -H "Host: $host" "$url" >/dev/null
    before=$(cpu_ticks "$p"); accepts=$(app_accepts)
    out=$(nsx wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Host: $host" "$url")
    after=$(cpu_ticks "$p")
    # The app's new connections during the run; the stub_status query itself is one of them.
    opened=$(( $(app_accepts) - accepts - 1 ))
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    p50=$(awk '$1=="50%"{print $2}' <<<"$out"); p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    echo "wrk $name $round $rps $reqs $((after - before)) $p50 $p99 $opened" >>"$results"
  done
done
if [ -n "$OHA" ]; then
  for t in "${targets[@]}"; do IFS='|' read -r name url host _ <<<"$t"
    j=$(nsx "$OHA" -z "$DURATION" -q "$RATE" -c "$CONNS" --latency-correction --no-tui --output-format json -H "Host: $host" "$url" 2>/dev/null || true)
    echo "oha $name $(python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); p=d["latencyPercentiles"]; print(p["p50"]*1000, p["p99"]*1000, p["p99.9"]*1000)' <<<"$j" 2>/dev/null || echo "- - -")" >>"$results"
  done
fi
for t in "${targets[@]}"; do IFS='|' read -r name _ _ p <<<"$t"; echo "rss $name $(hwm_kib "$p")" >>"$results"; done

# --- allocations per request: uprobes on the allocator's entry points in libc ----------------
if [ -z "${SKIP_ALLOCS:-}" ] && command -v perf >/dev/null; then
  libc=$(ldconfig -p | awk '/libc.so.6 \(libc6,x86-64\)/{l = $NF} END {print l}')
  fns=(malloc calloc realloc posix_memalign aligned_alloc)
  events=()
  for f in "${fns[@]}"; do
    perf probe -q -x "$libc" --add "meshbench_$f=$f" 2>/dev/null || true
    events+=(-e "probe_libc:meshbench_$f")
  done
  # row, URL, Host header, the one pid counted (each proxy of the two-hop path on its own)
  for a in "mesh-inbound|http://127.0.0.1:4143/|app|$P_IN" \
           "mesh-out+in-mtls: outbound|http://127.0.0.1:4340/|bench.default:80|$P_CLI" \
           "mesh-out+in-mtls: inbound|http://127.0.0.1:4340/|bench.default:80|$P_SRV" \
           "nginx (worker)|http://127.0.0.1:8081/|app|${nginx_workers%% *}" \
           "haproxy|http://127.0.0.1:8082/|app|$P_HAPROXY"; do
    IFS='|' read -r name url host p <<<"$a"
    nsx wrk -t1 -c8 -d2s -H "Host: $host" "$url" >/dev/null
    perf stat -x, "${events[@]}" -p "$p" -o "$work/perf.out" -- sleep 5 &
    perf_pid=$!; sleep 0.5
    out=$(nsx wrk -t1 -c8 -d4s -H "Host: $host" "$url")
    wait "$perf_pid"
    allocs=$(awk -F, '$1 ~ /^[0-9]+$/ {n += $1} END {print n + 0}' "$work/perf.out")
    echo "allocs ${name// /_} $allocs $(awk '/requests in/{print $1}' <<<"$out")" >>"$results"
    # With PROFILE: who asks for each mesh proxy's allocations (call graphs of the same probes).
    if [ -n "${PROFILE:-}" ] && [[ $name == mesh* ]]; then
      file=$PROFILE/allocs-${name//[^a-z+-]/_}
      # Every allocation is a sample with an 8 KiB stack copy: a short, light load, and a
      # large buffer so that none is lost.
      perf record -q "${events[@]}" --call-graph dwarf,8192 -m 4096 -p "$p" -o "$file.data" -- sleep 2 2>/dev/null &
      perf_pid=$!; sleep 0.5
      out=$(nsx wrk -t1 -c4 -d1s -H "Host: $host" "$url")
      wait "$perf_pid"
      perf script -i "$file.data" 2>/dev/null \
        | python3 "$here/alloc_callers.py" "$(awk '/requests in/{print $1}' <<<"$out")" >"$file.txt"
    fi
  done
  for f in "${fns[@]}"; do perf probe -q -d "probe_libc:meshbench_$f" 2>/dev/null || true; done
fi

# --- memory held by IDLE idle keep-alive connections, each after one request ---------------
if [ -z "${SKIP_IDLE:-}" ]; then
  for t in "${targets[@]}"; do IFS='|' read -r name url host p <<<"$t"
    [ "$name" = direct ] && continue
    echo "idle $name $(nsx python3 "$here/idle.py" "$url" "$host" "$IDLE" $p)" >>"$results"
  done
fi

# --- scaling: throughput and p99 at 1, 32, 256 and 1,024 connections ------------------------
if [ -z "${SKIP_SCALING:-}" ]; then
  for c in 1 32 256 1024; do
    for t in "${targets[@]}"; do IFS='|' read -r name url host _ <<<"$t"
      threads=$(( c < 2 ? 1 : 2 ))
      nsx wrk -t"$threads" -c"$c" -d2s -H "Host: $host" "$url" >/dev/null
      out=$(nsx wrk -t"$threads" -c"$c" -d"$SCALE_DURATION" --latency -H "Host: $host" "$url")
      echo "scale $name $c $(awk '/Requests\/sec/{print $2}' <<<"$out") $(awk '$1=="99%"{print $2}' <<<"$out")" >>"$results"
    done
  done
fi

# --- profiles: where each mesh proxy's CPU goes under the closed-loop load ------------------
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$PROFILE"
  for a in "inbound|http://127.0.0.1:4143/|app|$P_IN" \
           "two-hop-outbound|http://127.0.0.1:4340/|bench.default:80|$P_CLI" \
           "two-hop-inbound|http://127.0.0.1:4340/|bench.default:80|$P_SRV"; do
    IFS='|' read -r name url host p <<<"$a"
    nsx wrk -t2 -c"$CONNS" -d"$DURATION" -H "Host: $host" "$url" >/dev/null &
    load=$!; sleep 1
    perf record -q -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$p" -o "$PROFILE/$name.data" -- sleep 5 2>/dev/null
    wait "$load"
    perf report -q -i "$PROFILE/$name.data" --no-children --sort dso,sym --stdio -F overhead,dso,sym 2>/dev/null \
      | python3 "$here/shares.py" >"$PROFILE/$name.txt"
    perf report -q -i "$PROFILE/$name.data" --no-children --sort sym --stdio -g none 2>/dev/null \
      | sed -n 1,60p >"$PROFILE/$name.top.txt"
  done
  echo "profiles: $PROFILE/{inbound,two-hop-outbound,two-hop-inbound}.txt (and .top.txt)"
fi

echo "workers per proxy: $WORKERS; wrk -t2 -c$CONNS -d$DURATION, $ROUNDS rounds interleaved"
python3 "$here/report.py" "$results" "$(getconf CLK_TCK)"
if [ -n "${PROFILE:-}" ]; then cp "$results" "$PROFILE/results.txt"; fi
