#!/usr/bin/env bash
# Builds kmsp11 and runs kmsd in dev mode over a SoftHSM token (./kmsd-dev),
# printing how to point a PKCS#11 client at it. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/deps.sh
cargo build --release --workspace
exec target/release/kmsd --dev kmsd-dev "$@"
