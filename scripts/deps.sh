#!/usr/bin/env bash
# Installs what kmsp11's dev mode and tests need on Debian 12, only when missing.
set -euo pipefail
need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool  >/dev/null || need+=(opensc)
command -v openssl      >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
