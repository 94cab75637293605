#!/usr/bin/env bash
# OpenSSL 3.0 with the libp11 engine and pkcs11: URIs (client-behaviour.md §2b).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
export OPENSSL_CONF=$W/openssl.cnf
K="pkcs11:token=$TOKEN;object=rsa2048;type=private;pin-value=$PIN"
KE="pkcs11:token=$TOKEN;object=ecp256;type=private;pin-value=$PIN"
E=(-engine pkcs11 -keyform engine)

rsa_pkcs1() {
  openssl pkeyutl "${E[@]}" -inkey "$K" -sign -in data.sha256 -pkeyopt digest:sha256 -out s1
  OPENSSL_CONF= openssl pkeyutl -verify -pubin -inkey rsa.pub.pem -in data.sha256 -sigfile s1 -pkeyopt digest:sha256
}
rsa_pss() {
  openssl pkeyutl "${E[@]}" -inkey "$K" -sign -in data.sha256 -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 -out s2
  OPENSSL_CONF= openssl pkeyutl -verify -pubin -inkey rsa.pub.pem -in data.sha256 -sigfile s2 -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32
}
ecdsa() {
  openssl pkeyutl "${E[@]}" -inkey "$KE" -sign -in data.sha256 -out s3
  OPENSSL_CONF= openssl pkeyutl -verify -pubin -inkey ec.pub.pem -in data.sha256 -sigfile s3
}
by_id() {
  openssl pkeyutl "${E[@]}" -inkey "pkcs11:token=$TOKEN;id=%01;type=private" -passin "pass:$PIN" -sign -in data.sha256 -pkeyopt digest:sha256 -out s4
  OPENSSL_CONF= openssl pkeyutl -verify -pubin -inkey rsa.pub.pem -in data.sha256 -sigfile s4 -pkeyopt digest:sha256
}
decrypt() {
  openssl pkeyutl "${E[@]}" -inkey "$K" -decrypt -in enc.rsapkcs -out dec
  cmp dec secret.txt
}
derive() {
  openssl pkeyutl "${E[@]}" -inkey "$KE" -derive -peerkey peer.pub.pem -out ecdh.bin
  OPENSSL_CONF= openssl pkeyutl -derive -inkey peer.key -peerkey ec.pub.pem -out ecdh.expected
  cmp ecdh.bin ecdh.expected
}
dgst_sign() {
  openssl dgst -sha256 "${E[@]}" -sign "$K" -out s5 data.txt
  OPENSSL_CONF= openssl dgst -sha256 -verify rsa.pub.pem -signature s5 data.txt
  openssl dgst -sha256 "${E[@]}" -sign "$KE" -out s6 data.txt
  OPENSSL_CONF= openssl dgst -sha256 -verify ec.pub.pem -signature s6 data.txt
}
req_x509() {
  openssl req -new -x509 "${E[@]}" -key "$K" -subj "/CN=probe-rsa" -days 30 -sha256 -out req.rsa.pem
  openssl req -new -x509 "${E[@]}" -key "$KE" -subj "/CN=probe-ec" -days 30 -sha256 -out req.ec.pem
  OPENSSL_CONF= openssl verify -CAfile req.rsa.pem req.rsa.pem
  OPENSSL_CONF= openssl verify -CAfile req.ec.pem req.ec.pem
  # The certificate carries the token's public key.
  diff <(OPENSSL_CONF= openssl x509 -in req.rsa.pem -noout -pubkey) rsa.pub.pem
}
csr() {
  openssl req -new "${E[@]}" -key "$K" -subj "/CN=probe-csr" -sha256 -out csr.pem
  OPENSSL_CONF= openssl req -in csr.pem -noout -verify
  diff <(OPENSSL_CONF= openssl req -in csr.pem -noout -pubkey) rsa.pub.pem
}
pubout() {
  openssl pkey -engine pkcs11 -inform engine -in "pkcs11:token=$TOKEN;object=rsa2048;type=public" -pubin -pubout -out pub.pem
  diff pub.pem rsa.pub.pem
}
tls() {
  local port; port=$(free_port)
  openssl s_server -engine pkcs11 -keyform engine -key "$K" -cert rsa.cert.pem -accept "127.0.0.1:$port" -naccept 1 -www > server.log 2>&1 &
  local pid=$!
  for _ in $(seq 50); do grep -q ACCEPT server.log && break; sleep 0.1; done
  echo | OPENSSL_CONF= timeout 20 openssl s_client -connect "127.0.0.1:$port" -CAfile rsa.cert.pem -verify_return_error -servername rsa2048 > client.log 2>&1
  wait "$pid" || true
  cat client.log
  grep -q "Verify return code: 0 (ok)" client.log
}

step "pkeyutl -sign RSA PKCS#1 (OpenSSL verifies)" rsa_pkcs1
step "pkeyutl -sign RSA-PSS (OpenSSL verifies)" rsa_pss
step "pkeyutl -sign ECDSA (OpenSSL verifies)" ecdsa
step "pkeyutl -sign by id with -passin" by_id
step "pkeyutl -decrypt RSA" decrypt
step "pkeyutl -derive ECDH equals software" derive
step "dgst -sign RSA and EC (OpenSSL verifies)" dgst_sign
step "req -new -x509 RSA and EC (openssl verify)" req_x509
step "req -new CSR (openssl req -verify)" csr
step "pkey -pubout equals the token's public key" pubout
step "TLS: s_server key in the token, s_client verifies" tls
