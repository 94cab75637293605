#!/usr/bin/env bash
# OpenSSH: ssh-keygen -D lists the token's public keys.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

keys() { awk '{print $1, $2}' | sort; }
ssh_keygen() {
  ssh-keygen -D "$MODULE" > out
  cat out
  keys < out > ssh.txt
  # The same keys as SoftHSM direct shows for this very token ...
  SOFTHSM2_CONF=$BACKEND_CONF ssh-keygen -D "$BACKEND_MODULE" | keys > backend.txt
  diff ssh.txt backend.txt
  # ... including the RSA and EC keys exported with pkcs11-tool.
  grep -qF "$(ssh-keygen -i -m PKCS8 -f rsa.pub.pem | awk '{print $1, $2}')" ssh.txt
  grep -qF "$(ssh-keygen -i -m PKCS8 -f ec.pub.pem | awk '{print $1, $2}')" ssh.txt
}

step "ssh-keygen -D prints the token's public keys" ssh_keygen
