#!/usr/bin/env bash
# Runs every fuzz target for a fixed budget (default 120 s each) and prints, per target, the
# executions run and the crashes found. Not in CI. Seeds the corpora first (seed.sh).
# Builds land in $CARGO_TARGET_DIR (default /var/cache/mesh-fuzz), never in the checkout.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-120}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/mesh-fuzz}"
command -v cargo-fuzz >/dev/null || { echo "cargo install cargo-fuzz --locked" >&2; exit 2; }
./seed.sh
targets=$(cargo fuzz list)
summary=""
for t in $targets; do
  mkdir -p "artifacts/$t" logs
  before=$(find "artifacts/$t" -type f | wc -l)
  # A crash ends the run early; its input lands in artifacts/<target>/ (replay with
  # `cargo fuzz run <target> <file>`).
  cargo fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 \
    > "logs/$t.log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  line="$t: ${execs:-?} executions in ${secs} s, $crashes crashes"
  echo "$line"
  summary+="$line"$'\n'
done
echo "== summary"
printf '%s' "$summary"
