#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end
# suites (real kmsd, real SoftHSM tokens, the real libkmsp11.so), every real
# client through the proxy and against SoftHSM direct (interop/), then a
# short fuzz run of the decoders and kmsd's dispatch (fuzz/).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
cargo test --workspace
interop/run-all
fuzz/smoke.sh
