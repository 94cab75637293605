#!/usr/bin/env bash
# NSS 3.87: modutil and certutil with the module in an NSS database (client-behaviour.md §2d).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
DB=sql:$W/nssdb
C=(-d "$DB" -h "$TOKEN" -f "$W/pin.txt")

add_module() {
  rm -rf nssdb && mkdir nssdb
  certutil -N -d "$DB" --empty-password
  modutil -dbdir "$DB" -add kmsp11 -libfile "$MODULE" -force
  modutil -dbdir "$DB" -list | tee out
  grep -q "kmsp11" out && grep -q "token: $TOKEN" out
}
list_certs() {
  printf '%s\n' "$PIN" > pin.txt
  certutil -L "${C[@]}" | tee out
  grep -q "$TOKEN:rsa2048" out && grep -q "$TOKEN:ecp256" out
}
list_chain() {
  certutil -L "${C[@]}" | tee out
  grep -q "$TOKEN:chained" out && grep -q "$TOKEN:Interop CA" out
}
list_keys() {
  certutil -K "${C[@]}" | tee out
  grep -q "rsa2048" out && grep -q "ecp256" out
}
self_signed() {
  head -c 64 /dev/urandom > noise.bin
  certutil -S "${C[@]}" -z noise.bin -n "nss-$1" -s "CN=nss-$1" -x -t "CT,," "${@:2}" -Z SHA256 -v 12
  certutil -L "${C[@]}" -n "$TOKEN:nss-$1" -a -o "nss-$1.pem"
  openssl verify -CAfile "nss-$1.pem" "nss-$1.pem"
  # The key is on the token: pkcs11-tool sees it.
  contains "label: *nss-$1" TL -O
}
csr() {
  certutil -R "${C[@]}" -z noise.bin -k nss-rsa -s "CN=nss-csr" -Z SHA256 -a -o nss-csr.pem
  openssl req -in nss-csr.pem -noout -verify
  diff <(openssl req -in nss-csr.pem -noout -pubkey) <(openssl x509 -in nss-rsa.pem -noout -pubkey)
}
validate() {
  certutil -V "${C[@]}" -n nss-rsa -u V -e | tee out
  grep -q "certificate is valid" out
}
delete_module() {
  modutil -dbdir "$DB" -delete kmsp11 -force
  lacks kmsp11 modutil -dbdir "$DB" -list
}

step "modutil -add and -list" add_module
step "certutil -L lists the token's certificates" list_certs
step "certutil -L lists a chain imported with kmsctl (proxy) or pkcs11-tool" list_chain
step "certutil -K lists the token's keys" list_keys
step "certutil -S self-signed RSA-2048 on the token (openssl verify)" self_signed rsa -k rsa -g 2048
step "certutil -S self-signed EC P-256 on the token (openssl verify)" self_signed ec -k ec -q nistp256
step "certutil -R CSR with the token key (openssl req -verify)" csr
step "certutil -V" validate
step "modutil -delete" delete_module
