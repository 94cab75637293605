#!/usr/bin/env bash
# The comparison: SoftHSM direct, p11-kit's RPC (p11-kit server +
# p11-kit-client.so, Unix socket) and kmsp11 (mTLS 1.3, policy, quotas,
# durable audit), interleaved op by op in one run of kmsp11-load, written
# to benches/RESULTS.md with the machine, the date, the commands and kmsd's
# CPU per call, RSS and threads. Never part of the test suite.
#
#   bash benches/compare.sh            # ~15 minutes on 2 cores
#   ITERATIONS=300 bash benches/compare.sh   # a quicker look
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --workspace --quiet
it=${ITERATIONS:-1000}
load=target/release/kmsp11-load
out=benches/RESULTS.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() { # name, tag for kmsp11-targets, then the load tool's arguments
  local name=$1 tag=$2
  shift 2
  echo "== $name: kmsp11-load $*" >&2
  {
    echo
    echo "### $name"
    echo
    echo '```'
    echo "\$ kmsp11-load $*"
    "$load" "$@" --json-to "$tmp/runs.jsonl" --tag "$tag"
    echo '```'
  } >>"$tmp/body"
}

# Before RESULTS.md is rewritten (which git would see as a local change).
commit="$(git rev-parse --short HEAD)$(git diff --quiet -- . ':!benches/RESULTS.md' || echo ' (with local changes)')"

run "Every operation, 1 and 2 threads, all three columns" all \
  --iterations "$it" --threads 1,2
run "Scaling: ECDSA P-256 sign, cryptoki style, 1 to 128 threads" scaling \
  --iterations $((it / 5)) --threads 1,2,8,32,128 --only "ECDSA P-256 sign (query)"
run "What durable audit costs: ECDSA P-256 sign at 2 threads, fsync off" fsync-off \
  --iterations "$it" --threads 2 --only "ECDSA P-256 sign (query)" --columns kmsp11 --fsync off
run "1,000 idle client connections: kmsd's RSS and threads, and 2 active threads beside them" idle \
  --iterations "$it" --threads 2 --only "ECDSA P-256 sign (query)" --columns kmsp11 --idle 1000

{
  echo "# kmsp11 performance: SoftHSM direct vs p11-kit RPC vs kmsp11"
  echo
  echo "The latest full run of \`bash benches/compare.sh\` (ITERATIONS=$it). Latencies in µs per"
  echo "operation as the load tool times it (each \"(presized)\" row is *Init and one call with a"
  echo "buffer of the right size; \"(query)\" is cryptoki's style: *Init, a length query, the"
  echo "call). ops/s is over all threads. \"srv CPU µs\" is the CPU time (user + system, all"
  echo "threads) of the server process per call: kmsd, or p11-kit server with its per-client"
  echo "children. p11-kit's \"(presized)\" rows are n/a: p11-kit-client.so gives every"
  echo "C_GetFunctionList its own module instance, so the load tool's direct calls cannot share"
  echo "cryptoki's session; p11-kit's RPC forwards neither AES-GCM nor Ed25519."
  echo "Machines are shared and noisy: compare within one run, quote medians."
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- commit: $commit"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
  echo "- SoftHSM $(softhsm2-util --version), p11-kit $(dpkg-query -W -f '${Version}' p11-kit 2>/dev/null || echo "?"), $(rustc --version)"
  echo "- kmsd: dev mode (policy on, quotas on with the daily limit off for load, audit fsync"
  echo "  \"batch\" unless the run says otherwise, TLS 1.3 with client certificates, loopback)"
  echo
  echo "## Targets"
  echo
  echo "Judged from this run by \`kmsp11-targets\` (benches/src/bin/kmsp11-targets.rs)."
  echo
  target/release/kmsp11-targets "$tmp/runs.jsonl"
  echo
  cat benches/targets.md
  echo
  echo "## The runs"
  cat "$tmp/body"
} >"$out"
echo "wrote $out"
