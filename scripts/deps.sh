#!/usr/bin/env bash
# Installs what kmsp11's dev mode and tests need on Debian 12, only when missing.
set -euo pipefail
need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool  >/dev/null || need+=(opensc)
command -v openssl      >/dev/null || need+=(openssl)
command -v curl         >/dev/null || need+=(curl)
# the README's REST examples read JSON with jq
command -v jq           >/dev/null || need+=(jq)
# interop clients
[ -e /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] || need+=(libengine-pkcs11-openssl)
command -v certutil     >/dev/null || need+=(libnss3-tools)
command -v p11tool      >/dev/null || need+=(gnutls-bin)
command -v p11-kit      >/dev/null || need+=(p11-kit)
# p11-kit's RPC client, for the benchmark comparison (benches/compare.sh)
ls /usr/lib/*/pkcs11/p11-kit-client.so >/dev/null 2>&1 || need+=(p11-kit-modules)
command -v ssh-keygen   >/dev/null || need+=(openssh-client)
command -v javac        >/dev/null || need+=(openjdk-17-jdk-headless)
command -v python3      >/dev/null || need+=(python3)
# the dashboard's browser test
command -v chromium     >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# test.sh runs rustfmt and clippy: add them to a minimal toolchain.
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
    rustup component add "$c"
  fi
done
