#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end
# suites (real kmsd, real SoftHSM tokens, the real libkmsp11.so), then every
# real client through the proxy and against SoftHSM direct (interop/).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
cargo test --workspace
interop/run-all
