# Sourced by the bench scripts that run proxies in a private network namespace: sets up $NS
# with loopback up, a scratch dir $work, and a cleanup on exit that stops every pid in
# $pids and whatever else still runs in the namespace. Needs root.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
nsx() { ip netns exec "$NS" "$@"; }
# Backgrounds a command in the namespace so that $! is its own pid (`ip netns exec` execs it),
# not a subshell's: CPU, memory and fds are read from /proc/$!.
nsbg() { ip netns exec "$NS" "$@" & }
