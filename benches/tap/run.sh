#!/usr/bin/env bash
# Tap under load: N (50,000) requests through one `mesh proxy` (explicit mode, loopback, its
# inbound side in front of a small keep-alive app), in interleaved rounds without tap and with
# a tap whose reader is slow (`mesh tap -o json` piped into a reader that sleeps 5 ms a line, so
# the proxy's per-subscriber queue fills and events are dropped). Prints p50/p99/max latency
# per request as the load client saw it, the proxy's RSS (VmRSS, and VmHWM: the peak), and the
# events the proxy dropped. Nothing is asserted: speed lives in benches, not in tests.
#
#   bash benches/tap/run.sh            # N=50000 ROUNDS=2 CLIENTS=4 READER_SLEEP=0.005
set -euo pipefail

N=${N:-50000}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-4}
READER_SLEEP=${READER_SLEEP:-0.005}
root=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# MESH_BIN: an already built binary (e.g. a debug one, to check the script itself).
if [ -z "${MESH_BIN:-}" ]; then
  cargo build --release --bin mesh --manifest-path "$root/Cargo.toml" >/dev/null
fi
MESH=${MESH_BIN:-$CARGO_TARGET_DIR/release/mesh}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Certificates from a real issuer: the proxy (default/api) and the tap client (linkerd/mesh-tap,
# which the proxy's default --tap-allow admits).
"$MESH" identity init --trust-domain cluster.local --out "$work/ca" >/dev/null
printf 'tok-api default/api\ntok-tap linkerd/mesh-tap\n' >"$work/tokens"
ISSUER=127.0.0.1:$(port)
"$MESH" identity serve --dir "$work/ca" --listen "$ISSUER" --tokens "$work/tokens" 2>/dev/null &
pids+=($!)
for sa in api tap; do
  printf 'tok-%s' "$sa" >"$work/$sa.token"
  for _ in $(seq 100); do
    "$MESH" identity issue --issuer "https://$ISSUER" --token-file "$work/$sa.token" \
      --trust-anchors "$work/ca/ca.crt" --out "$work/$sa" 2>/dev/null && break
    sleep 0.1
  done
done

# The app: HTTP/1.1 keep-alive, "ok" to everything.
APP=$(port)
python3 - "$APP" <<'PY' &
import sys, http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        # One write: split small writes meet Nagle and delayed ACKs (40 ms a request).
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)

IN=$(port); OUT=$(port); ADMIN=$(port); TAP=$(port)
"$MESH" proxy --mode explicit --inbound-addr "127.0.0.1:$IN" --outbound-addr "127.0.0.1:$OUT" \
  --admin-addr "127.0.0.1:$ADMIN" --inbound-forward "127.0.0.1:$APP" \
  --identity-dir "$work/api" --namespace default --workload deployment/api \
  --tap-addr "127.0.0.1:$TAP" 2>"$work/proxy.log" &
PROXY=$!
pids+=($PROXY)
for _ in $(seq 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$ADMIN/ready')" 2>/dev/null && break
  sleep 0.1
done

# The load: CLIENTS keep-alive connections sending N requests in all; per-request latency.
load() {
  python3 - "$IN" "$N" "$CLIENTS" <<'PY'
import sys, threading, time, http.client
port, n, clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lat, lock = [], threading.Lock()
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    mine = []
    for i in range(k):
        t = time.perf_counter()
        c.request("GET", "/books/%d" % (i % 100), headers={"Host": "api.default"})
        r = c.getresponse(); r.read()
        mine.append(time.perf_counter() - t)
    with lock: lat.extend(mine)
start = time.perf_counter()
ts = [threading.Thread(target=run, args=(n // clients,)) for _ in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
took = time.perf_counter() - start
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
print("%6d req  %7.0f rps  p50 %.3f ms  p99 %.3f ms  max %.1f ms" % (len(lat), len(lat) / took, q(0.5), q(0.99), lat[-1] * 1e3))
PY
}
rss() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$PROXY/status"; echo; }
dropped() {
  python3 -c "import urllib.request; t=urllib.request.urlopen('http://127.0.0.1:$ADMIN/metrics').read().decode(); print(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith('tap_events_dropped_total')))"
}

echo "warm-up"; N=2000 load >/dev/null
for r in $(seq "$ROUNDS"); do
  echo "round $r, no tap:";  load; rss
  rm -f "$work/events"; mkfifo "$work/events"
  "$MESH" tap deploy/api --proxy "default/api=127.0.0.1:$TAP" --identity-dir "$work/tap" -o json \
    >"$work/events" 2>"$work/tap.err" &
  tapper=$!
  python3 -c "
import sys, time
for line in sys.stdin: time.sleep($READER_SLEEP)" <"$work/events" &
  reader=$!
  pids+=($tapper $reader)
  for _ in $(seq 100); do grep -q tapping "$work/tap.err" && break; sleep 0.1; done
  echo "round $r, tapped by a slow reader:"; load; rss
  echo "  events dropped so far: $(dropped)"
  kill "$tapper" "$reader" 2>/dev/null || true
  sleep 0.5
done
