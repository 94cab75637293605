#!/usr/bin/env bash
# Puts the keys, data and certificates every client needs on a fresh token
# (shared/reference/client-behaviour.md, step 1), through the column's module.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$W"

TL --keypairgen --key-type rsa:2048 --id 01 --label rsa2048 --usage-sign --usage-decrypt
TL --keypairgen --key-type EC:prime256v1 --id 02 --label ecp256 --usage-sign --usage-derive
TL --keygen --key-type AES:32 --id 03 --label aes256 --usage-decrypt --usage-wrap --extractable
TL --keygen --key-type AES:16 --id 04 --label aes128-tobewrapped --usage-decrypt --extractable
T --read-object --type pubkey --id 01 -o rsa.pub.der
T --read-object --type pubkey --id 02 -o ec.pub.der
openssl pkey -pubin -inform DER -in rsa.pub.der -out rsa.pub.pem
openssl pkey -pubin -inform DER -in ec.pub.der -out ec.pub.pem

printf 'kmsp11 interop data\n' > data.txt
openssl dgst -sha256 -binary -out data.sha256 data.txt
head -c 102400 /dev/urandom > big.bin
printf 'secret message\n' > secret.txt
openssl pkeyutl -encrypt -pubin -inkey rsa.pub.pem -in secret.txt -out enc.rsapkcs
openssl pkeyutl -encrypt -pubin -inkey rsa.pub.pem -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -in secret.txt -out enc.oaep
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out peer.key
openssl pkey -in peer.key -pubout -out peer.pub.pem
openssl pkey -in peer.key -pubout -outform DER -out peer.pub.der

# OpenSSL engine configuration for this column's module.
cat > openssl.cnf <<CNF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
MODULE_PATH = $MODULE
init = 0
CNF

# Self-signed certificates made with the token keys, written back with the
# keys' IDs: Java's keystore, NSS and p11tool pair keys with certificates.
export OPENSSL_CONF=$W/openssl.cnf
openssl req -new -x509 -engine pkcs11 -keyform engine -key "pkcs11:token=$TOKEN;object=rsa2048;type=private;pin-value=$PIN" -subj "/CN=rsa2048" -days 30 -sha256 -out rsa.cert.pem
openssl req -new -x509 -engine pkcs11 -keyform engine -key "pkcs11:token=$TOKEN;object=ecp256;type=private;pin-value=$PIN" -subj "/CN=ecp256" -days 30 -sha256 -out ec.cert.pem
unset OPENSSL_CONF
openssl x509 -in rsa.cert.pem -outform DER -out rsa.cert.der
openssl x509 -in ec.cert.pem -outform DER -out ec.cert.der
TL --write-object rsa.cert.der --type cert --id 01 --label rsa2048
TL --write-object ec.cert.der --type cert --id 02 --label ecp256
# A key with a CA-issued certificate chain (client-behaviour.md: Java builds
# a key's chain from the token's certificates by subject). Direct: the two
# certificates written with pkcs11-tool. Proxy: imported with kmsctl, which
# checks the chain and the key first.
TL --keypairgen --key-type EC:prime256v1 --id 21 --label chained --usage-sign
T --read-object --type pubkey --id 21 -o chained.pub.der
openssl pkey -pubin -inform DER -in chained.pub.der -out chained.pub.pem
# One CA for both columns (its CKA_ID follows from its key: the listings match).
ca=$(dirname "$W")/interop-ca
[ -f "$ca.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca.key" \
  -subj "/CN=Interop CA" -days 30 -addext basicConstraints=critical,CA:TRUE -out "$ca.pem"
cp "$ca.pem" interop-ca.pem
cp "$ca.key" interop-ca.key
openssl x509 -new -CA interop-ca.pem -CAkey interop-ca.key -force_pubkey chained.pub.pem \
  -subj "/CN=chained" -days 30 -out chained.cert.pem
if [ "$COLUMN" = proxy ]; then
  cat chained.cert.pem interop-ca.pem > chain.pem
  KMSCTL_CONFIG="$(dirname "$W")/kmsd/kmsctl-admin.toml" "$(dirname "$MODULE")/kmsctl" \
    certs import chain.pem --for-key chained
else
  openssl x509 -in chained.cert.pem -outform DER -out chained.cert.der
  openssl x509 -in interop-ca.pem -outform DER -out interop-ca.der
  TL --write-object chained.cert.der --type cert --id 21 --label chained
  # The CKA_ID kmsd gives an authority certificate: SHA-256 of its public key info, 20 bytes.
  ca_id=$(openssl x509 -in interop-ca.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -c1-40)
  TL --write-object interop-ca.der --type cert --id "$ca_id" --label "Interop CA"
fi
echo "token $TOKEN ready in $COLUMN column"
