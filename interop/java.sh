#!/usr/bin/env bash
# Java 17 SunPKCS11: keytool, a probe program, jarsigner (client-behaviour.md §2c).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
cat > "$W/java.cfg" <<CFG
name = kmsp11
library = $MODULE
slot = $(slot_id "$TOKEN")
CFG
KS=(-keystore NONE -storetype PKCS11 -providerClass sun.security.pkcs11.SunPKCS11 -providerArg "$W/java.cfg" -storepass "$PIN")

keytool_list() {
  keytool -list "${KS[@]}" | tee out
  grep -q "rsa2048, PrivateKeyEntry" out && grep -q "ecp256, PrivateKeyEntry" out
}
chain() {
  keytool -list -v -alias chained "${KS[@]}" | tee out
  grep -q "Certificate chain length: 2" out
  grep -q "Owner: CN=chained" out && grep -q "Owner: CN=Interop CA" out
}
probe() {
  mkdir -p classes
  javac -d classes "$here/java/P11Probe.java"
  java -cp classes P11Probe "$W/java.cfg" "$PIN" | tee out
  grep -q "ALL OK" out
}
jarsign() {
  rm -f app.jar signed.jar
  jar cf app.jar data.txt
  jarsigner "${KS[@]}" -signedjar signed.jar app.jar rsa2048
  jarsigner -verify -verbose -certs signed.jar | tee out
  grep -q "jar verified" out
  grep -q "CN=rsa2048" out
}

step "keytool -list shows the key+certificate pairs" keytool_list
step "keytool sees a key with its CA chain (imported with kmsctl on the proxy)" chain
step "P11Probe: sign/verify, decrypt, keygen, AES CBC+GCM, random, digest, setEntry" probe
step "jarsigner signs with the token key, jarsigner -verify" jarsign
