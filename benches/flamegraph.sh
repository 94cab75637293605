#!/usr/bin/env bash
# Flame graphs of one operation under load, both sides of the wire: kmsd,
# and the client process (the load tool with libkmsp11 loaded). Needs perf
# (Debian's linux-perf) and inferno (cargo install inferno).
#
#   bash benches/flamegraph.sh "ECDSA P-256 sign (presized)"
#
# Writes benches/flamegraphs/<name>-kmsd.svg and <name>-client.svg, with
# one client thread, audit fsync "batch" unless FSYNC says, SECONDS_PROFILED (10) of it.
set -euo pipefail
cd "$(dirname "$0")/.."
op=${1:-"C_GenerateRandom 32 B"}
secs=${SECONDS_PROFILED:-10}
command -v perf >/dev/null || { echo "perf not found: apt-get install -y linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || { echo "inferno not found: cargo install inferno" >&2; exit 1; }
cargo build --release --workspace --quiet
name=$(echo "$op" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')
out=benches/flamegraphs
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'kill $load 2>/dev/null || true; rm -rf "$tmp"' EXIT
target/release/kmsp11-load --iterations 1000000 --threads 1 --columns kmsp11 \
  --fsync "${FSYNC:-batch}" --only "$op" >"$tmp/load.log" 2>&1 &
load=$!
# kmsd is up (the newest kmsd the tool started: dev setup runs others
# briefly) and the operation running once the warm-up is under way.
sleep 6
kmsd=$(pgrep -n -P "$load" -x kmsd || true)
[ -n "$kmsd" ] || { cat "$tmp/load.log"; echo "kmsd did not start" >&2; exit 1; }
perf record -F 999 --call-graph dwarf,16384 -p "$kmsd" -o "$tmp/kmsd.data" -- sleep "$secs" >"$tmp/kmsd.rec" 2>&1 &
pk=$!
perf record -F 999 --call-graph dwarf,16384 -p "$load" -o "$tmp/client.data" -- sleep "$secs" >/dev/null 2>&1
wait "$pk" || { cat "$tmp/kmsd.rec"; exit 1; }
for side in kmsd client; do
  perf script -i "$tmp/$side.data" 2>"$tmp/$side.err" | inferno-collapse-perf >"$tmp/$side.folded" || { cat "$tmp/$side.err"; exit 1; }
  inferno-flamegraph --minwidth 0.5 --title "$op: $side" <"$tmp/$side.folded" >"$out/$name-$side.svg"
  echo "wrote $out/$name-$side.svg"
done
