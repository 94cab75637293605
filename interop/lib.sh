# Shared by the interop scripts; sourced, not run.
#
# Each client script runs once per column with:
#   COLUMN   direct | proxy
#   MODULE   the PKCS#11 module the client loads (libsofthsm2.so or libkmsp11.so)
#   TOKEN    the token label clients name (kms-a in both columns)
#   PIN, SO_PIN
#   W        this column's work folder (keys, data, logs)
#   RESULTS  the results file (client, step, column, result, note)
#   BACKEND_MODULE, BACKEND_CONF, BACKEND_TOKEN
#            SoftHSM direct on the very token the client sees (for the proxy
#            column: kmsd's backend token), to compare listings and keys.
# plus SOFTHSM2_CONF (direct) or KMSP11_CONFIG (proxy) so the module finds its token.

CLIENT=${CLIENT:-$(basename "$0" .sh)}
mkdir -p "$W/logs" "$W/listings"

# step NAME FUNCTION [ARGS...]: runs the function (errexit on) in a subshell
# in $W; passes if it returns 0. The function must check the output itself.
step() {
  local name=$1; shift
  local log="$W/logs/$CLIENT.$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log"
  if ( cd "$W" && set -eo pipefail && "$@" ) >"$log" 2>&1; then
    printf '%s\t%s\t%s\tpass\t\n' "$CLIENT" "$name" "$COLUMN" >>"$RESULTS"
    printf '  %-7s %-58s pass\n' "$COLUMN" "$name"
  else
    printf '%s\t%s\t%s\tFAIL\t%s\n' "$CLIENT" "$name" "$COLUMN" "$log" >>"$RESULTS"
    printf '  %-7s %-58s FAIL (%s)\n' "$COLUMN" "$name" "$log"
    sed 's/^/      | /' "$log" | tail -15
  fi
}

# listing NAME FILE: keeps a listing to compare across columns (run-all does).
listing() {
  cp "$W/$2" "$W/listings/$CLIENT.$1"
}

# object_blocks: reads a pkcs11-tool -O listing, keeps the object headers and
# the label/ID/usage/access lines, and sorts whole objects (enumeration order
# is the module's business).
object_blocks() {
  python3 -c '
import re, sys
blocks, cur = [], None
for line in sys.stdin:
    if re.match(r"^(Public|Private|Secret|Certificate|Data) .*[Oo]bject", line):
        cur = [line.rstrip()]
        blocks.append(cur)
    elif cur is not None and re.match(r"^\s+(label|ID|Usage|Access):", line):
        cur.append(line.rstrip())
print("\n".join("\n".join(b) for b in sorted(blocks)))
'
}

# expect_refused_on_proxy WHY COMMAND...: in the proxy column the command must
# fail (virtual tokens refuse SO functions); in the direct column it must succeed.
expect_refused_on_proxy() {
  local why=$1; shift
  if [ "$COLUMN" = proxy ]; then
    if "$@"; then echo "expected a refusal: $why"; return 1; fi
    echo "refused as expected: $why"
  else
    "$@"
  fi
}

# contains PATTERN CMD...: CMD succeeds and its output (stdout and stderr)
# matches the extended regex. lacks: CMD succeeds and its output does not.
# (Not `cmd | grep -q`: under pipefail grep's early exit fails the writer.)
contains() {
  local p=$1 o; shift
  o=$("$@" 2>&1) || { printf '%s\n' "$o"; return 1; }
  grep -Eq -- "$p" <<<"$o" || { printf '%s\n' "$o"; echo "no match for: $p"; return 1; }
}
lacks() {
  local p=$1 o; shift
  o=$("$@" 2>&1) || { printf '%s\n' "$o"; return 1; }
  ! grep -Eq -- "$p" <<<"$o" || { printf '%s\n' "$o"; echo "unexpected match for: $p"; return 1; }
}

# slot_id LABEL: the decimal slot id of the token with that label (as the module numbers it).
slot_id() {
  local hex
  hex=$(pkcs11-tool --module "$MODULE" -L | awk -v l="$1" '/^Slot [0-9]+ \(0x/ {id=$3; gsub(/[():]/,"",id)} $0 ~ "token label *: "l"$" {print id; exit}')
  [ -n "$hex" ] && printf '%d\n' "$hex"
}

# The same command against SoftHSM direct on the token this column's client sees.
backend_tool() {
  SOFTHSM2_CONF=$BACKEND_CONF pkcs11-tool --module "$BACKEND_MODULE" --token-label "$BACKEND_TOKEN" "$@"
}

T() { pkcs11-tool --module "$MODULE" --token-label "$TOKEN" "$@"; }
TL() { T -l -p "$PIN" "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
