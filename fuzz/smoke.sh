#!/usr/bin/env bash
# Short fuzz runs over the checked-in seeds (fuzz/seeds/<target>), as the test
# suite runs them: FUZZ_SECONDS (default 20) per target. For long runs see
# README.md. A crash leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# cargo-fuzz needs unstable compiler flags (sanitizers); the stable toolchain allows them so.
export RUSTC_BOOTSTRAP=1
# The dev profile (with the sanitizer): a smoke run needs coverage, not
# speed, and an optimised single-unit build of kmsd takes minutes.
cargo fuzz build --dev
for t in request_decode response_decode dispatch audit_verify rest_inputs; do
  corpus=$(mktemp -d)
  if ! cargo fuzz run --dev "$t" "$corpus" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 >"$corpus.log" 2>&1; then
    tail -60 "$corpus.log"
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)"
    exit 1
  fi
  echo "fuzz: $t: $(grep -E '^Done' "$corpus.log")"
  rm -rf "$corpus" "$corpus.log"
done
