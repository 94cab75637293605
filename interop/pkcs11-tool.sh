#!/usr/bin/env bash
# OpenSC pkcs11-tool: the command set of shared/reference/client-behaviour.md §2a.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

list_slots() {
  pkcs11-tool --module "$MODULE" -L | tee out
  grep -q "token label *: $TOKEN" out
}
list_objects() {
  TL -O | tee out
  grep -q "Private Key Object; RSA" out && grep -q "Private Key Object; EC" out && grep -q "Secret Key Object; AES" out
  object_blocks < out > objects.txt
  # The same objects and attributes as SoftHSM shows for this very token.
  backend_tool -l -p "$PIN" -O | object_blocks > backend.txt
  diff objects.txt backend.txt
}
list_public_only() {
  T -O | tee out
  ! grep -q "Private Key Object" out
  grep -q "Public Key Object; RSA" out
}
list_mechanisms() {
  T -M > mechs.txt
  backend_tool -M > backend-mechs.txt
  diff mechs.txt backend-mechs.txt
  cp mechs.txt mech-listing.txt
}
keygen() { TL --keypairgen --key-type "$1" --id "$2" --label "$3" --usage-sign && contains "label: *$3" T -O; }
aes_keygen() { TL --keygen --key-type AES:32 --id 13 --label aes-gen && contains "label: *aes-gen" TL -O; }
sign_rsa_pkcs() {
  TL --sign -m RSA-PKCS --id 01 -i data.txt -o sig.rsapkcs
  contains "Signature is valid" T --verify -m RSA-PKCS --id 01 -i data.txt --signature-file sig.rsapkcs
  openssl pkeyutl -verifyrecover -pubin -inkey rsa.pub.pem -in sig.rsapkcs -out recovered
  cmp recovered data.txt
}
sign_sha256_pss() {
  TL --sign -m SHA256-RSA-PKCS-PSS --id 01 -i data.txt -o sig.pss
  contains "Signature is valid" T --verify -m SHA256-RSA-PKCS-PSS --id 01 -i data.txt --signature-file sig.pss
  openssl dgst -sha256 -verify rsa.pub.pem -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -signature sig.pss data.txt
}
sign_raw_pss() {
  TL --sign -m RSA-PKCS-PSS --hash-algorithm SHA256 --mgf MGF1-SHA256 --id 01 -i data.sha256 -o sig.pss2
  openssl pkeyutl -verify -pubin -inkey rsa.pub.pem -in data.sha256 -sigfile sig.pss2 -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32
}
sign_ecdsa() {
  TL --sign -m ECDSA --id 02 -i data.sha256 -o sig.ecdsa
  contains "Signature is valid" T --verify -m ECDSA --id 02 -i data.sha256 --signature-file sig.ecdsa
  TL --sign -m ECDSA --id 02 -i data.sha256 -o sig.ecdsa.der --signature-format openssl
  openssl dgst -sha256 -verify ec.pub.pem -signature sig.ecdsa.der data.txt
}
sign_big() {
  TL --sign -m SHA256-RSA-PKCS --id 01 -i big.bin -o big.sig
  openssl dgst -sha256 -verify rsa.pub.pem -signature big.sig big.bin
}
aes_cbc_pad() {
  TL --encrypt -m AES-CBC-PAD --id 03 --iv 000102030405060708090a0b0c0d0e0f -i data.txt -o enc.cbcpad
  [ "$(stat -c %s enc.cbcpad)" -eq 32 ]
  TL --decrypt -m AES-CBC-PAD --id 03 --iv 000102030405060708090a0b0c0d0e0f -i enc.cbcpad -o dec.cbcpad
  cmp dec.cbcpad data.txt
}
rsa_decrypt() {
  TL --decrypt -m RSA-PKCS --id 01 -i enc.rsapkcs -o dec.rsapkcs && cmp dec.rsapkcs secret.txt
  TL --decrypt -m RSA-PKCS-OAEP --hash-algorithm SHA-1 --mgf MGF1-SHA1 --id 01 -i enc.oaep -o dec.oaep && cmp dec.oaep secret.txt
}
# The unwrapped key must encrypt exactly as the key that was wrapped.
same_key() {
  TL --encrypt -m AES-CBC --id "$1" --iv 000102030405060708090a0b0c0d0e0f -i <(head -c 32 data.sha256) -o "a.$1"
  TL --encrypt -m AES-CBC --id 04 --iv 000102030405060708090a0b0c0d0e0f -i <(head -c 32 data.sha256) -o "b.$1"
  cmp "a.$1" "b.$1"
}
wrap_aes_kw() {
  TL --wrap -m AES-KEY-WRAP --id 03 --application-id 04 -o wrapped.aeskw
  [ "$(stat -c %s wrapped.aeskw)" -eq 24 ]
  TL --unwrap -m AES-KEY-WRAP --id 03 -i wrapped.aeskw --key-type AES: --application-id 05 --application-label unwrapped-aes
  same_key 05
}
wrap_rsa() {
  TL --wrap -m RSA-PKCS --id 01 --application-id 04 -o wrapped.rsa
  TL --unwrap -m RSA-PKCS --id 01 -i wrapped.rsa --key-type AES: --application-id 06 --application-label unwrapped-rsa
  same_key 06
}
ecdh() {
  TL --derive -m ECDH1-DERIVE --id 02 -i peer.pub.der -o derived.bin
  openssl pkeyutl -derive -inkey peer.key -peerkey ec.pub.pem -out expected.bin
  cmp derived.bin expected.bin
}
objects_rw() {
  T --read-object --type pubkey --id 01 -o x.der && cmp x.der rsa.pub.der
  T --read-object --type cert --id 01 -o c.der && cmp c.der rsa.cert.der
  openssl req -new -x509 -key peer.key -subj /CN=written -days 1 -outform DER -out w.der
  TL --write-object w.der --type cert --id 21 --label written
  T --read-object --type cert --id 21 -o r.der && cmp r.der w.der
  TL --write-object data.txt --type data --label mydata
  T --read-object --type data --label mydata -o d.out && cmp d.out data.txt
}
random() { T --generate-random 32 -o rnd.bin && [ "$(stat -c %s rnd.bin)" -eq 32 ]; }
hash() {
  T --hash -m SHA256 -i data.txt -o h.bin
  cmp h.bin data.sha256
}
selftest() {
  # SoftHSM 2.6 stops at SHA-256 OAEP (it supports SHA-1 OAEP only); everything before must pass.
  TL --test > t.out 2>&1 || true
  cat t.out
  grep -q "C_SeedRandom() and C_GenerateRandom():" t.out && grep -q "seems to be OK" t.out
  grep -q "all 4 digest functions seem to work" t.out
  grep -q "RSA-X-509: OK" t.out && grep -q "RSA-PKCS: OK" t.out
  ! grep -E "^ *[A-Z0-9-]+: (ERR|FAIL)" t.out
}
locking() { contains "token label *: $TOKEN" pkcs11-tool --module "$MODULE" -L --use-locking; }
init_token() {
  if [ "$COLUMN" = proxy ]; then
    # No free slot on a virtual token set: initialising kms-b must be refused.
    ! pkcs11-tool --module "$MODULE" --token-label kms-b --init-token --label adm-token --so-pin "$SO_PIN" > o 2>&1 || { cat o; return 1; }
    cat o; grep -q CKR_FUNCTION_NOT_SUPPORTED o
  else
    pkcs11-tool --module "$MODULE" --slot-index 1 --init-token --label adm-token --so-pin "$SO_PIN"
    contains "token label *: adm-token" pkcs11-tool --module "$MODULE" -L
  fi
}
init_pin() {
  if [ "$COLUMN" = proxy ]; then
    ! T --login --login-type so --so-pin "$SO_PIN" --init-pin --pin 111111 > o 2>&1 || { cat o; return 1; }
    cat o; grep -q CKR_USER_TYPE_INVALID o
  else
    pkcs11-tool --module "$MODULE" --token-label adm-token --login --login-type so --so-pin "$SO_PIN" --init-pin --pin 111111
  fi
}
change_pin() {
  if [ "$COLUMN" = proxy ]; then
    ! T --login --pin "$PIN" --change-pin --new-pin 222222 > o 2>&1 || { cat o; return 1; }
    cat o; grep -q CKR_FUNCTION_NOT_SUPPORTED o
    TL -O > /dev/null # the PIN is unchanged
  else
    pkcs11-tool --module "$MODULE" --token-label adm-token --login --pin 111111 --change-pin --new-pin 222222
    pkcs11-tool --module "$MODULE" --token-label adm-token --login --pin 222222 -O
  fi
}
delete_object() {
  TL --delete-object --type secrkey --id 13
  lacks "label: *aes-gen" TL -O
}

step "list slots (-L)" list_slots
step "list objects (-O), same as the backend token" list_objects
listing objects objects.txt
step "list objects without login" list_public_only
step "list mechanisms (-M), same as the backend token" list_mechanisms
listing mechanisms mech-listing.txt
step "keygen RSA-2048" keygen rsa:2048 11 rsa-gen
step "keygen EC P-256" keygen EC:prime256v1 12 ec-gen
step "keygen AES-256" aes_keygen
step "sign/verify RSA-PKCS (OpenSSL verifies)" sign_rsa_pkcs
step "sign/verify SHA256-RSA-PKCS-PSS (OpenSSL verifies)" sign_sha256_pss
step "sign RSA-PKCS-PSS with hash and MGF (OpenSSL verifies)" sign_raw_pss
step "sign/verify ECDSA (OpenSSL verifies)" sign_ecdsa
step "multi-part sign of 100 KB (OpenSSL verifies)" sign_big
step "AES-CBC-PAD encrypt/decrypt" aes_cbc_pad
step "RSA-PKCS and OAEP decrypt of OpenSSL ciphertexts" rsa_decrypt
step "wrap/unwrap AES-KEY-WRAP" wrap_aes_kw
step "wrap/unwrap RSA-PKCS" wrap_rsa
step "ECDH derive equals openssl pkeyutl -derive" ecdh
step "read/write objects and certificates" objects_rw
step "generate random" random
step "hash SHA256 equals OpenSSL" hash
step "--test" selftest
step "-L --use-locking" locking
step "admin: init-token" init_token
step "admin: init-pin" init_pin
step "admin: change-pin" change_pin
step "admin: delete object" delete_object
