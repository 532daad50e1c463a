#!/usr/bin/env bash
# Soak run (issue 15; not in CI): mixed HTTP/1, HTTP/2 and opaque TCP load at a modest fixed
# rate through two proxies (outbound → mTLS → inbound → app) for DURATION, while
#  - the issuer signs short-lived certificates (LEAF_LIFETIME, default 85s: proxies renew at
#    70 % of it, so each rotates its certificate about every minute), and
#  - the client proxy's --config changes every 10 s (a route's weights flip between two
#    backends, both reaching the same server proxy).
# Every 10 s it samples RSS and open fds of both proxies. At the end it prints failed/total
# per protocol and the first-window vs last-window averages (window: 5 minutes, or a third
# of a shorter run), and exits non-zero on any failed request, on a window with no traffic,
# or on growth beyond the bounds: RSS last > first × (1 + RSS_GROWTH_PCT/100) + RSS_SLACK_KIB,
# fds last > first + FD_SLACK.
#
#   sudo bash benches/soak/run.sh                 # DURATION=30m RATE=10
#   DURATION=3m MESH=/path/to/mesh sudo -E bash benches/soak/run.sh
#
# Needs root (a private network namespace), curl with HTTP/2, python3 with `h2` (installed
# with pip when missing). Builds the release `mesh` unless MESH names a binary.
set -euo pipefail

DURATION=${DURATION:-30m}
RATE=${RATE:-10}
LEAF_LIFETIME=${LEAF_LIFETIME:-85s}
RSS_GROWTH_PCT=${RSS_GROWTH_PCT:-20}
RSS_SLACK_KIB=${RSS_SLACK_KIB:-8192}
FD_SLACK=${FD_SLACK:-16}
NS=meshsoak-$$
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

case $DURATION in
  *m) secs=$((${DURATION%m} * 60)) ;;
  *s) secs=${DURATION%s} ;;
  *) secs=$DURATION ;;
esac
window=$((secs / 3 < 300 ? secs / 3 : 300))

if [ "$(id -u)" != 0 ]; then echo "needs root (network namespace)"; exit 1; fi
curl -V | grep -q HTTP2 || { echo "curl without HTTP/2 support"; exit 1; }
python3 -c 'import h2' 2>/dev/null || pip install -q h2 || { echo "python3 needs the h2 package"; exit 1; }
if [ -z "${MESH:-}" ]; then
  cargo build --release --bin mesh --manifest-path "$root/Cargo.toml" >/dev/null
  MESH=$CARGO_TARGET_DIR/release/mesh
fi
echo "soak: $DURATION at $RATE req/s per protocol, leaf certificates of $LEAF_LIFETIME, binary $MESH"

# shellcheck source=../netns.sh
. "$root/benches/netns.sh"

nsbg python3 "$here/app.py" 8080 2>"$work/app.log"; pids+=($!)
for _ in $(seq 100); do nsx curl -s --max-time 1 http://127.0.0.1:8080/ >/dev/null && break; sleep 0.1; done

# --- the issuer, handing out short-lived certificates ----------------------------------------
"$MESH" identity init --trust-domain cluster.local --out "$work/ca" >/dev/null
printf 'tok-client default/client\ntok-server default/server\n' >"$work/tokens"
echo tok-client >"$work/client.tok"; echo tok-server >"$work/server.tok"
nsbg "$MESH" identity serve --dir "$work/ca" --listen 127.0.0.1:8443 --tokens "$work/tokens" \
  --leaf-lifetime "$LEAF_LIFETIME" 2>"$work/issuer.log"; pids+=($!)

# --- config: the server accepts any client; the client's Service splits between two backends
mkdir -p "$work/server-config" "$work/client-config"
cat >"$work/server-config/server.yaml" <<'EOF'
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: { name: anywhere, namespace: default }
spec: { networks: [{ cidr: 0.0.0.0/0 }] }
EOF
{
  printf 'apiVersion: v1\nkind: Service\nmetadata: { name: %s, namespace: default }\nspec: { ports: [{ name: http, port: 80 }] }\n---\n' bench bench-a bench-b
  for b in bench-a bench-b; do cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $b-1
  namespace: default
  labels: { kubernetes.io/service-name: $b }
  annotations: { mesh.io/service-account: server }
addressType: IPv4
ports: [{ name: http, port: 4243 }]
endpoints: [{ addresses: ["127.0.0.1"] }]
---
EOF
  done
} >"$work/client-config/services.yaml"
route() { # weight of bench-a, weight of bench-b
  cat >"$work/route.tmp" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: bench, namespace: default }
spec:
  parentRefs: [{ name: bench, kind: Service, port: 80 }]
  rules: [{ backendRefs: [{ name: bench-a, port: 80, weight: $1 }, { name: bench-b, port: 80, weight: $2 }] }]
EOF
  mv "$work/route.tmp" "$work/client-config/route.yaml" # atomic: never a half-written file
}
route 90 10

identity=(--identity-issuer https://127.0.0.1:8443 --trust-anchors "$work/ca/ca.crt" --trust-domain cluster.local)
nsbg env MESH_POD_NAMESPACE=default MESH_SERVICE_ACCOUNT=server "$MESH" proxy --mode explicit \
  --config "$work/server-config" "${identity[@]}" --identity-token-file "$work/server.tok" \
  --inbound-addr 127.0.0.1:4243 --outbound-addr 127.0.0.1:4240 --admin-addr 127.0.0.1:4291 \
  --inbound-forward 127.0.0.1:8080 --default-inbound-policy all-unauthenticated \
  2>"$work/server.log"; pids+=($!); P_SRV=$!
nsbg env MESH_POD_NAMESPACE=default MESH_SERVICE_ACCOUNT=client "$MESH" proxy --mode explicit \
  --config "$work/client-config" --config-poll 1s "${identity[@]}" \
  --identity-token-file "$work/client.tok" \
  --inbound-addr 127.0.0.1:4343 --outbound-addr 127.0.0.1:4340 --admin-addr 127.0.0.1:4391 \
  --outbound-dst 127.0.0.1:4243 2>"$work/client.log"; pids+=($!); P_CLI=$!
metrics() { nsx curl -s --max-time 3 "http://127.0.0.1:$1/metrics"; }
for port in 4291 4391; do
  for _ in $(seq 100); do nsx curl -sf --max-time 1 "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
  nsx curl -sf --max-time 1 "http://127.0.0.1:$port/ready" >/dev/null ||
    { echo "the proxy with admin port $port is not ready; its log:"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
done
# Through both proxies, over mTLS, before the clock starts.
[ "$(nsx curl -s --max-time 5 -H 'Host: bench.default:80' http://127.0.0.1:4340/)" = ok ] ||
  { echo "no answer through the proxies:"; nsx curl -sv --max-time 5 -H "Host: bench.default:80" http://127.0.0.1:4340/ 2>&1 | tail -n 15; nsx curl -sv --max-time 5 http://127.0.0.1:4243/ 2>&1 | tail -n 5; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
# Read whole before grep: `grep -q` stops early, and under pipefail curl's SIGPIPE would fail it.
client_metrics=$(metrics 4391)
grep -q 'tls="true"' <<<"$client_metrics" || { echo "the client proxy does not speak mTLS to the server"; exit 1; }

# --- load, config flips, samples ---------------------------------------------------------------
nsbg python3 "$here/load.py" http://127.0.0.1:4340/ bench.default:80 4340 "$RATE" "$secs" \
  >"$work/load.out" 2>"$work/load.err"; LOAD=$!
sample() { # elapsed pid -> "elapsed rss_kib fds"
  echo "$1 $(awk '/VmRSS/{print $2}' "/proc/$2/status") $(ls "/proc/$2/fd" | wc -l)"
}
start=$(date +%s); flips=0
while kill -0 "$LOAD" 2>/dev/null; do
  sleep 10
  t=$(($(date +%s) - start))
  flips=$((flips + 1))
  if ((flips % 2)); then route 10 90; else route 90 10; fi
  kill -0 "$P_SRV" "$P_CLI" 2>/dev/null || { echo "a proxy died; see logs"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
  sample "$t" "$P_CLI" >>"$work/client.samples"
  sample "$t" "$P_SRV" >>"$work/server.samples"
  echo "$t s: client $(tail -1 "$work/client.samples" | cut -d' ' -f2-)  server $(tail -1 "$work/server.samples" | cut -d' ' -f2-)  (RSS KiB, fds)"
done
wait "$LOAD" || true

# --- report -------------------------------------------------------------------------------------
status=0
echo "== requests (failed/total)"
while read -r proto ok bad; do
  echo "$proto: $bad/$((ok + bad))"
  if ((bad > 0 || ok == 0)); then status=1; fi
done <"$work/load.out"
[ -s "$work/load.out" ] || { echo "the load generator reported nothing"; cat "$work/load.err"; status=1; }
[ -s "$work/load.err" ] && { echo "first failures:"; head -5 "$work/load.err"; }
echo "== config reloads (client proxy) and certificates issued"
metrics 4391 | grep '^config_reload_total' || true
echo "certificates issued: $(grep -c 'issued a certificate' "$work/issuer.log" || true) (both proxies: at start and at every rotation)"
echo "== first ${window}s vs last ${window}s (averages)"
for who in client server; do
  # The first and last n samples (one every 10 s), n covering the window.
  read -r r1 f1 r2 f2 < <(awk -v n="$(((window + 9) / 10))" '
    { rss[NR] = $2; fds[NR] = $3 }
    END { if (n > NR) n = NR
      for (i = 1; i <= n; i++) { r1 += rss[i]; f1 += fds[i]; r2 += rss[NR - n + i]; f2 += fds[NR - n + i] }
      printf "%d %d %d %d\n", r1 / n, f1 / n, r2 / n, f2 / n }' "$work/$who.samples")
  verdict=ok
  if ((r2 > r1 * (100 + RSS_GROWTH_PCT) / 100 + RSS_SLACK_KIB)); then verdict="RSS GREW"; status=1; fi
  if ((f2 > f1 + FD_SLACK)); then verdict="FDS GREW"; status=1; fi
  echo "$who proxy: RSS ${r1} → ${r2} KiB, fds ${f1} → ${f2}: $verdict"
done
echo "bounds: RSS last ≤ first × $((100 + RSS_GROWTH_PCT))% + ${RSS_SLACK_KIB} KiB; fds last ≤ first + $FD_SLACK"
((status == 0)) && echo "PASS" || echo "FAIL"
exit "$status"
