#!/usr/bin/env bash
# Creates a fresh SoftHSM2 token store for kmsp11 development and tests:
#   init-tokens.sh DIR LABEL [LABEL...]
# writes DIR/softhsm2.conf, initialises one token per LABEL with the fixed
# dev/test PINs below, and writes the user PIN to DIR/backend-pin.
# These PINs are for development and tests only, never for production.
set -euo pipefail
SO_PIN=87654321
USER_PIN=123456

dir=${1:?usage: init-tokens.sh DIR LABEL [LABEL...]}
shift
[ $# -ge 1 ] || { echo "init-tokens.sh: at least one token label" >&2; exit 2; }
command -v softhsm2-util >/dev/null || { echo "init-tokens.sh: softhsm2-util not found (apt-get install -y softhsm2)" >&2; exit 1; }

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
template="$here/softhsm2.conf.in"
if [ -f "$template" ]; then
  sed "s|@TOKENDIR@|$dir/tokens|" "$template" > "$dir/softhsm2.conf"
else
  # Run from a copy embedded in kmsd: the template travels in KMSP11_SOFTHSM_TEMPLATE.
  printf '%s\n' "${KMSP11_SOFTHSM_TEMPLATE:?template not found}" | sed "s|@TOKENDIR@|$dir/tokens|" > "$dir/softhsm2.conf"
fi
export SOFTHSM2_CONF="$dir/softhsm2.conf"
for label in "$@"; do
  softhsm2-util --init-token --free --label "$label" --so-pin "$SO_PIN" --pin "$USER_PIN" >/dev/null
done
printf '%s\n' "$USER_PIN" > "$dir/backend-pin"
chmod 600 "$dir/backend-pin"
echo "$SOFTHSM2_CONF"
