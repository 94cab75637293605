//! The REST crypto API (`/kms/v1`) against a real kmsd and SoftHSM token,
//! as curl calls it with the dev identities' certificates: every endpoint's
//! success and its refusals (policy, quota, revoked key, pending approval),
//! receipts checked offline (Ed25519 signature with the published key, the
//! record's line in the audit log), keys made here used through PKCS#11
//! and keys made through PKCS#11 used here.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use kmsp11_tests::{ck, through_library, Kmsd};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A call as `who` (a dev identity's certificate): status and JSON body.
fn api(kmsd: &Kmsd, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (code, text) = kmsd.admin_api(who, method, &format!("/kms/v1{path}"), body.as_deref(), &[]);
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

/// A call that must succeed.
fn ok(kmsd: &Kmsd, who: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (code, v) = api(kmsd, who, method, path, body);
    assert!(
        (200..300).contains(&code),
        "{method} {path} as {who}: {code} {v}"
    );
    v
}

/// A POST that must be refused with `status` and error code `code`.
fn refused(kmsd: &Kmsd, who: &str, path: &str, body: Value, status: u16, code: &str) -> Value {
    let (got, v) = api(kmsd, who, "POST", path, Some(body));
    assert_eq!(
        (got, v["error"].as_str().unwrap_or_default()),
        (status, code),
        "POST {path} as {who}: {v}"
    );
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

fn post(kmsd: &Kmsd, who: &str, path: &str, body: Value) -> Value {
    ok(kmsd, who, "POST", path, Some(body))
}

fn get(kmsd: &Kmsd, who: &str, path: &str) -> Value {
    ok(kmsd, who, "GET", path, None)
}

/// Appends `text` to the dev policy and reloads it.
fn add_policy(kmsd: &Kmsd, text: &str) {
    let policy = std::fs::read_to_string(kmsd.dir.join("policy.cedar")).unwrap() + text;
    std::fs::write(kmsd.dir.join("policy.cedar"), policy).unwrap();
    let (code, out) = kmsd.kmsctl("kmsctl-admin.toml", &["policy", "reload"]);
    assert_eq!(code, 0, "{out}");
}

/// A policy that puts signing with key `label` under dual control.
fn two_approvals_to_sign(label: &str) -> String {
    format!("\n@id(\"{label}-needs-two\") @approvals(\"2\")\npermit (principal, action == Kms::Action::\"sign\", resource is Kms::Key) when {{ resource.label == \"{label}\" }};\n")
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap()
}

fn create(kmsd: &Kmsd, name: &str, kind: &str) -> Value {
    post(
        kmsd,
        "dev-admin",
        "/keys",
        json!({"name": name, "type": kind}),
    )
}

/// Checks a receipt as a client would offline: the signature with the
/// published key, then the record it names in kmsd's audit log (whose
/// line hashes to `record_hash`). Answers that record.
fn check_receipt(kmsd: &Kmsd, receipt: &Value) -> Value {
    let key = get(kmsd, "dev-user", "/receipt-key");
    let seq = receipt["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no receipt: {receipt}"));
    let hash = receipt["record_hash"].as_str().unwrap();
    let msg = format!("kmsp11-audit-receipt\n{seq}\n{hash}");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, unb64(&key["public_key"]))
        .verify(msg.as_bytes(), &unb64(&receipt["signature"]))
        .expect("the receipt's signature verifies with the published key");
    let log = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("\"seq\":{seq},")))
        .unwrap_or_else(|| panic!("no audit record {seq}"));
    assert_eq!(
        hex::encode(Sha256::digest(line.as_bytes())),
        hash,
        "the receipt names this line"
    );
    serde_json::from_str(line).unwrap()
}

// The served OpenAPI document lists exactly the API's endpoints, each is
// routed (no "no such API path"), and errors are JSON with a code.
#[test]
fn openapi_document_matches_the_routes() {
    let kmsd = Kmsd::start();
    let doc = get(&kmsd, "dev-user", "/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "/kms/v1/decrypt",
            "/kms/v1/derive",
            "/kms/v1/encrypt",
            "/kms/v1/health",
            "/kms/v1/keys",
            "/kms/v1/keys/{name}",
            "/kms/v1/keys/{name}/revoke",
            "/kms/v1/keys/{name}/rotate",
            "/kms/v1/keys/{name}/versions",
            "/kms/v1/metrics",
            "/kms/v1/random",
            "/kms/v1/receipt-key",
            "/kms/v1/sign",
            "/kms/v1/trust-anchors",
            "/kms/v1/verify",
        ]
    );
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let path = path
                .trim_start_matches("/kms/v1")
                .replace("{name}", "absent");
            let body = (method == "post").then(|| json!({}));
            let (code, v) = api(&kmsd, "dev-auditor", &method.to_uppercase(), &path, body);
            assert_ne!(code, 405, "{method} {path}");
            assert!(
                !v["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no such API path"),
                "{method} {path} is documented but not routed: {v}"
            );
            if code >= 400 {
                assert!(v["error"].is_string(), "{method} {path}: {code} {v}");
            }
        }
    }
    let (code, v) = api(&kmsd, "dev-user", "GET", "/nothing-here", None);
    assert_eq!((code, v["error"].as_str()), (404, Some("not_found")), "{v}");
    let h = get(&kmsd, "dev-user", "/health");
    assert_eq!(h["status"], "alive");
}

// ECDSA: sign as a user, verify here and offline with the public key the
// API gives; a changed message does not verify; both answers carry
// receipts naming the C_Sign and C_Verify records of that user.
#[test]
fn sign_verify_with_receipts() {
    let kmsd = Kmsd::start();
    let made = create(&kmsd, "signer", "ec-p256");
    assert_eq!(made["key"]["key_type"], "EC", "{made}");
    let rec = check_receipt(&kmsd, &made["receipt"]);
    assert_eq!(rec["op"], "C_GenerateKeyPair");
    let msg = b"release 1.0";
    let s = post(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "signer", "input": b64(msg)}),
    );
    assert_eq!(
        (s["algorithm"].as_str(), s["version"].as_u64()),
        (Some("ecdsa-sha256"), Some(1))
    );
    let rec = check_receipt(&kmsd, &s["receipt"]);
    assert_eq!(
        (
            rec["op"].as_str(),
            rec["identity"].as_str(),
            rec["rv"].as_str()
        ),
        (Some("C_Sign"), Some("dev-user"), Some("CKR_OK"))
    );
    let key = get(&kmsd, "dev-user", "/keys/signer");
    let spki = unb64(&key["public_key"]);
    let point = &spki[spki.len() - 65..];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(msg, &unb64(&s["signature"]))
        .expect("the DER ECDSA signature verifies offline");
    let v = post(
        &kmsd,
        "dev-user",
        "/verify",
        json!({"key": "signer", "input": b64(msg), "signature": s["signature"]}),
    );
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(check_receipt(&kmsd, &v["receipt"])["op"], "C_Verify");
    let v = post(
        &kmsd,
        "dev-user",
        "/verify",
        json!({"key": "signer", "input": b64(b"release 1.1"), "signature": s["signature"]}),
    );
    assert_eq!(v["valid"], false, "{v}");
    let v = post(
        &kmsd,
        "dev-user",
        "/verify",
        json!({"key": "signer", "input": b64(msg), "signature": b64(b"not DER")}),
    );
    assert_eq!(v["valid"], false, "{v}");
}

// RSA: PKCS#1 v1.5 and PSS signatures, OAEP encryption round trip; Ed25519
// signs and verifies.
#[test]
fn rsa_and_ed25519() {
    let kmsd = Kmsd::start();
    create(&kmsd, "rsa", "rsa-2048");
    create(&kmsd, "ed", "ed25519");
    for (key, alg) in [
        ("rsa", "rsa-pkcs1-sha256"),
        ("rsa", "rsa-pss-sha256"),
        ("ed", "ed25519"),
    ] {
        let s = post(
            &kmsd,
            "dev-user",
            "/sign",
            json!({"key": key, "input": b64(b"m"), "algorithm": alg}),
        );
        let v = post(
            &kmsd,
            "dev-user",
            "/verify",
            json!({"key": key, "input": b64(b"m"), "signature": s["signature"], "algorithm": alg}),
        );
        assert_eq!(v["valid"], true, "{alg}: {v}");
    }
    let spki = unb64(&get(&kmsd, "dev-user", "/keys/ed")["public_key"]);
    let s = post(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "ed", "input": b64(b"m")}),
    );
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &spki[spki.len() - 32..])
        .verify(b"m", &unb64(&s["signature"]))
        .expect("Ed25519 verifies offline");
    // SoftHSM 2.6 does OAEP with SHA-1 only: the default, SHA-256, is
    // refused as it refuses it.
    let v = refused(
        &kmsd,
        "dev-user",
        "/encrypt",
        json!({"key": "rsa", "plaintext": b64(b"secret")}),
        400,
        "bad_request",
    );
    assert_eq!(v["rv"], "CKR_ARGUMENTS_BAD");
    let sha1 = "rsa-oaep-sha1";
    let e = post(
        &kmsd,
        "dev-user",
        "/encrypt",
        json!({"key": "rsa", "plaintext": b64(b"secret"), "algorithm": sha1}),
    );
    assert!(
        e["ciphertext"].as_str().unwrap().starts_with("kmsp11:v1:"),
        "{e}"
    );
    let d = post(
        &kmsd,
        "dev-user",
        "/decrypt",
        json!({"key": "rsa", "ciphertext": e["ciphertext"], "algorithm": sha1}),
    );
    assert_eq!(unb64(&d["plaintext"]), b"secret");
    refused(
        &kmsd,
        "dev-user",
        "/encrypt",
        json!({"key": "rsa", "plaintext": b64(b"s"), "aad": b64(b"a"), "algorithm": sha1}),
        400,
        "bad_request",
    );
    refused(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "ed", "input": b64(b"m"), "algorithm": "rsa-pss-sha256"}),
        400,
        "key_unsuitable",
    );
}

// AES-GCM with AAD across a rotation: each ciphertext names its version
// and decrypts after the rotation; a wrong AAD or a changed byte is
// invalid_ciphertext; a disabled old version refuses decrypt.
#[test]
fn aes_gcm_across_rotation() {
    let kmsd = Kmsd::start();
    create(&kmsd, "data", "aes-256");
    let enc = |pt: &[u8]| {
        post(
            &kmsd,
            "dev-user",
            "/encrypt",
            json!({"key": "data", "plaintext": b64(pt), "aad": b64(b"ctx")}),
        )
    };
    let dec = |ct: &Value, aad: &[u8]| {
        api(
            &kmsd,
            "dev-user",
            "POST",
            "/decrypt",
            Some(json!({"key": "data", "ciphertext": ct, "aad": b64(aad)})),
        )
    };
    let one = enc(b"first");
    assert!(
        one["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("kmsp11:v1:"),
        "{one}"
    );
    refused(
        &kmsd,
        "dev-user",
        "/keys/data/rotate",
        json!({}),
        403,
        "forbidden",
    );
    let r = post(&kmsd, "dev-admin", "/keys/data/rotate", json!({}));
    assert_eq!(check_receipt(&kmsd, &r["receipt"])["op"], "keys.rotate");
    let two = enc(b"second");
    assert!(
        two["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("kmsp11:v2:"),
        "{two}"
    );
    for (ct, pt) in [(&one, &b"first"[..]), (&two, &b"second"[..])] {
        let (code, d) = dec(&ct["ciphertext"], b"ctx");
        assert_eq!(code, 200, "{d}");
        assert_eq!(unb64(&d["plaintext"]), pt);
    }
    let (code, d) = dec(&two["ciphertext"], b"other");
    assert_eq!(
        (code, d["error"].as_str()),
        (400, Some("invalid_ciphertext")),
        "{d}"
    );
    let text = two["ciphertext"].as_str().unwrap();
    let (prefix, body) = text.split_at("kmsp11:v2:".len());
    let mut bytes = B64.decode(body).unwrap();
    bytes[20] ^= 1;
    let changed = Value::String(format!("{prefix}{}", b64(&bytes)));
    let (code, d) = dec(&changed, b"ctx");
    assert_eq!(
        (code, d["error"].as_str()),
        (400, Some("invalid_ciphertext")),
        "a changed byte: {d}"
    );
    let versions = get(&kmsd, "dev-user", "/keys/data/versions");
    let v: Vec<(u64, &str)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["version"].as_u64().unwrap(), k["name"].as_str().unwrap()))
        .collect();
    assert_eq!(v, [(2, "data"), (1, "data@v1")]);
    let listed = get(&kmsd, "dev-user", "/keys");
    let mut l: Vec<(u64, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["version"].as_u64().unwrap(), k["name"].as_str().unwrap()))
        .collect();
    l.sort_unstable();
    assert_eq!(
        l,
        [(1, "data@v1"), (2, "data")],
        "the listing numbers versions too"
    );
    let old = versions[1]["id"].as_str().unwrap();
    let (code, out) = kmsd.kmsctl("kmsctl-admin.toml", &["keys", "disable", old]);
    assert_eq!(code, 0, "{out}");
    let (code, d) = dec(&one["ciphertext"], b"ctx");
    assert_eq!(
        (code, d["error"].as_str()),
        (403, Some("key_disabled")),
        "{d}"
    );
    assert_eq!(check_receipt(&kmsd, &d["receipt"])["decision"], "deny");
    let (code, d) = dec(&two["ciphertext"], b"ctx");
    assert_eq!(code, 200, "the current version still decrypts: {d}");
}

// Refusals: policy (a user may not make keys), a revoked key, an identity
// over its rate, and a use the policy puts under dual control.
#[test]
fn refusals_policy_revoked_quota_pending() {
    let kmsd = Kmsd::start();
    refused(
        &kmsd,
        "dev-user",
        "/keys",
        json!({"name": "mine", "type": "aes-256"}),
        403,
        "policy_denied",
    );
    create(&kmsd, "gone", "ec-p256");
    refused(
        &kmsd,
        "dev-user",
        "/keys/gone/revoke",
        json!({"reason": "x"}),
        403,
        "forbidden",
    );
    let r = post(
        &kmsd,
        "dev-admin",
        "/keys/gone/revoke",
        json!({"reason": "compromised"}),
    );
    assert_eq!(check_receipt(&kmsd, &r["receipt"])["op"], "keys.revoke");
    let v = refused(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "gone", "input": b64(b"m")}),
        403,
        "key_revoked",
    );
    assert_eq!(v["rv"], "CKR_KEY_FUNCTION_NOT_PERMITTED");
    assert_eq!(check_receipt(&kmsd, &v["receipt"])["reason"], "key-revoked");
    let verify = json!({"key": "gone", "input": b64(b"m"), "signature": b64(&[0x30, 0])});
    refused(&kmsd, "dev-user", "/verify", verify, 403, "key_revoked");
    let (code, v) = api(&kmsd, "dev-user", "GET", "/keys/absent", None);
    assert_eq!((code, v["error"].as_str()), (404, Some("not_found")), "{v}");
    refused(
        &kmsd,
        "dev-user",
        "/keys",
        json!({"name": "signer2", "type": "nope"}),
        400,
        "bad_request",
    );
    create(&kmsd, "dup", "aes-256");
    refused(
        &kmsd,
        "dev-admin",
        "/keys",
        json!({"name": "dup", "type": "aes-256"}),
        409,
        "exists",
    );
    refused(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "absent", "input": b64(b"m")}),
        404,
        "not_found",
    );

    add_policy(&kmsd, &two_approvals_to_sign("release"));
    create(&kmsd, "release", "ec-p256");
    let v = refused(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "release", "input": b64(b"m")}),
        403,
        "approval_pending",
    );
    let id = v["approval"].as_str().unwrap();
    for admin in ["kmsctl-admin.toml", "kmsctl-admin2.toml"] {
        let (code, out) = kmsd.kmsctl(admin, &["approvals", "approve", id]);
        assert_eq!(code, 0, "{out}");
    }
    post(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "release", "input": b64(b"m")}),
    );
}

#[test]
fn identity_rate_answers_quota_exceeded() {
    let kmsd =
        Kmsd::start_edited(|t, _| kmsp11_tests::set_in(&t, "quotas", "identity_rate = \"4/m\""));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (code, v) = api(
            &kmsd,
            "dev-user",
            "POST",
            "/random",
            Some(json!({"bytes": 8})),
        );
        seen.push((code, v["error"].as_str().unwrap_or("ok").to_string()));
    }
    assert!(seen.contains(&(429, "quota_exceeded".into())), "{seen:?}");
}

// A key made here is used through PKCS#11 (libkmsp11): what AES-GCM
// encrypts there, decrypt here decrypts; a key made through PKCS#11 signs
// here.
#[test]
fn rest_keys_and_pkcs11_keys_are_the_same_keys() {
    let kmsd = Kmsd::start();
    create(&kmsd, "both", "aes-256");
    let iv = [9u8; 12];
    let ct = through_library(&kmsd.client_config(), |_, s| {
        let key = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(b"both".to_vec()),
            ])
            .unwrap();
        assert_eq!(key.len(), 1, "the REST key is visible through PKCS#11");
        let mut iv = iv;
        let params = GcmParams::new(&mut iv, b"", 128.into()).unwrap();
        let r = s.encrypt(&Mechanism::AesGcm(params), key[0], b"via pkcs11");
        assert_eq!(ck(&r), "Ok");
        r.unwrap()
    });
    let ciphertext = format!("kmsp11:v1:{}", b64(&[&iv[..], &ct].concat()));
    let d = post(
        &kmsd,
        "dev-user",
        "/decrypt",
        json!({"key": "both", "ciphertext": ciphertext}),
    );
    assert_eq!(unb64(&d["plaintext"]), b"via pkcs11");

    let out = kmsd.ec_pair("77", "tooled");
    assert!(out.contains("Key pair generated"), "{out}");
    let s = post(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "tooled", "input": b64(b"m")}),
    );
    let v = post(
        &kmsd,
        "dev-user",
        "/verify",
        json!({"key": "tooled", "input": b64(b"m"), "signature": s["signature"]}),
    );
    assert_eq!(v["valid"], true);
    let listed = get(&kmsd, "dev-user", "/keys");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"both") && names.contains(&"tooled"),
        "{names:?}"
    );
}

// ECDH (P-256) and DH (2048-bit MODP): each side derives from its key and
// the other's public key; what one derived key encrypts the other
// decrypts, here and through PKCS#11.
#[test]
fn derive_agrees_on_both_sides() {
    let kmsd = Kmsd::start();
    for (kind, a, b) in [("ec-p256", "alice", "bob"), ("dh-2048", "dh-a", "dh-b")] {
        create(&kmsd, a, kind);
        create(&kmsd, b, kind);
        let public = |n: &str| get(&kmsd, "dev-user", &format!("/keys/{n}"))["public_key"].clone();
        let (pa, pb) = (public(a), public(b));
        let ab = format!("{a}-{b}");
        let ba = format!("{b}-{a}");
        // The dev policy lets users use keys, not make them.
        refused(
            &kmsd,
            "dev-user",
            "/derive",
            json!({"key": a, "public_key": pb, "name": ab}),
            403,
            "policy_denied",
        );
        let made = post(
            &kmsd,
            "dev-admin",
            "/derive",
            json!({"key": a, "public_key": pb, "name": ab}),
        );
        assert_eq!(check_receipt(&kmsd, &made["receipt"])["op"], "C_DeriveKey");
        post(
            &kmsd,
            "dev-admin",
            "/derive",
            json!({"key": b, "public_key": pa, "name": ba}),
        );
        let e = post(
            &kmsd,
            "dev-user",
            "/encrypt",
            json!({"key": ab, "plaintext": b64(b"agreed")}),
        );
        let d = post(
            &kmsd,
            "dev-user",
            "/decrypt",
            json!({"key": ba, "ciphertext": e["ciphertext"]}),
        );
        assert_eq!(unb64(&d["plaintext"]), b"agreed", "{kind}");
        refused(
            &kmsd,
            "dev-admin",
            "/derive",
            json!({"key": a, "public_key": pb, "name": ab}),
            409,
            "exists",
        );
    }
    // The derived key through PKCS#11.
    let e = post(
        &kmsd,
        "dev-user",
        "/encrypt",
        json!({"key": "alice-bob", "plaintext": b64(b"p11")}),
    );
    let raw = unb64(&Value::String(
        e["ciphertext"].as_str().unwrap()["kmsp11:v1:".len()..].into(),
    ));
    let pt = through_library(&kmsd.client_config(), |_, s| {
        let key = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(b"bob-alice".to_vec()),
            ])
            .unwrap();
        let mut iv = raw[..12].to_vec();
        let params = GcmParams::new(&mut iv, b"", 128.into()).unwrap();
        let r = s.decrypt(&Mechanism::AesGcm(params), key[0], &raw[12..]);
        assert_eq!(ck(&r), "Ok");
        r.unwrap()
    });
    assert_eq!(pt, b"p11");
    refused(
        &kmsd,
        "dev-admin",
        "/derive",
        json!({"key": "alice-bob", "public_key": b64(b"x"), "name": "n"}),
        400,
        "key_unsuitable",
    );
}

#[test]
fn random_health_and_metrics() {
    let kmsd = Kmsd::start();
    let r = post(&kmsd, "dev-user", "/random", json!({"bytes": 32}));
    assert_eq!(unb64(&r["random"]).len(), 32);
    assert_eq!(
        check_receipt(&kmsd, &r["receipt"])["op"],
        "C_GenerateRandom"
    );
    for n in [0, 1025] {
        refused(
            &kmsd,
            "dev-user",
            "/random",
            json!({"bytes": n}),
            400,
            "bad_request",
        );
    }
    let (code, text) = api(&kmsd, "dev-auditor", "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        text.as_str().unwrap().contains("kmsd_calls_total"),
        "{text}"
    );
    let (code, v) = api(&kmsd, "dev-user", "GET", "/metrics", None);
    assert_eq!((code, v["error"].as_str()), (403, Some("forbidden")));
}

// Hostile and malformed requests: JSON errors with codes, nothing runs.
#[test]
fn malformed_requests_are_json_errors() {
    let kmsd = Kmsd::start();
    let raw = |body: &str| {
        let (code, text) = kmsd.admin_api("dev-user", "POST", "/kms/v1/sign", Some(body), &[]);
        (
            code,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    for body in [
        "{",
        "[]",
        "{\"key\": 1}",
        "{\"key\": \"k\", \"input\": \"AA==\", \"extra\": 1}",
    ] {
        let (code, v) = raw(body);
        assert!(matches!(code, 400 | 422), "{body}: {code}");
        assert_eq!(v["error"], "bad_request", "{body}: {v}");
    }
    refused(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "k", "input": "not base64!"}),
        400,
        "bad_request",
    );
    refused(
        &kmsd,
        "dev-user",
        "/sign",
        json!({"key": "k\u{0007}", "input": "AA=="}),
        400,
        "bad_request",
    );
    refused(
        &kmsd,
        "dev-user",
        "/decrypt",
        json!({"key": "k", "ciphertext": "vault:v1:AA=="}),
        400,
        "bad_request",
    );
    let big = "A".repeat(3 << 20);
    let (code, v) = raw(&format!("{{\"key\": \"k\", \"input\": \"{big}\"}}"));
    assert_eq!(
        (code, v["error"].as_str()),
        (413, Some("bad_request")),
        "{v}"
    );
    let (code, _) = api(&kmsd, "dev-user", "GET", "/health", None);
    assert_eq!(code, 200, "kmsd still answers");
}

// Trust anchors: an administrator adds a CA certificate; everyone who sees
// the token lists it; a user may not add one.
#[test]
fn trust_anchors_added_and_listed() {
    let kmsd = Kmsd::start();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    refused(
        &kmsd,
        "dev-user",
        "/trust-anchors",
        json!({"pem": pem}),
        403,
        "forbidden",
    );
    let added = post(&kmsd, "dev-admin", "/trust-anchors", json!({"pem": pem}));
    assert_eq!(added["added"][0]["label"], "Example Root", "{added}");
    assert_eq!(
        added["added"][0]["trusted"], false,
        "SoftHSM lets only its SO set CKA_TRUSTED: made without it"
    );
    assert_eq!(
        check_receipt(&kmsd, &added["receipt"])["op"],
        "certs.import"
    );
    let list = get(&kmsd, "dev-user", "/trust-anchors");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|a| a["subject"].as_str().unwrap().contains("Example Root")),
        "{list}"
    );
    refused(
        &kmsd,
        "dev-admin",
        "/trust-anchors",
        json!({"pem": "garbage"}),
        422,
        "invalid",
    );
}

// A receipt checked as the README shows, with OpenSSL alone: the PEM key
// /kms/v1/receipt-key publishes verifies the signature over the message;
// a receipt for another record does not verify.
#[test]
fn receipt_verifies_with_openssl() {
    let kmsd = Kmsd::start();
    let r = post(&kmsd, "dev-user", "/random", json!({"bytes": 16}));
    let key = get(&kmsd, "dev-user", "/receipt-key");
    let dir = &kmsd.dir;
    std::fs::write(
        dir.join("receipt-key.pem"),
        key["public_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("receipt.sig"), unb64(&r["receipt"]["signature"])).unwrap();
    let verify = |seq: u64| {
        let msg = format!(
            "kmsp11-audit-receipt\n{seq}\n{}",
            r["receipt"]["record_hash"].as_str().unwrap()
        );
        std::fs::write(dir.join("receipt.msg"), msg).unwrap();
        kmsp11_tests::run(
            std::process::Command::new("openssl")
                .args([
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-inkey",
                    "receipt-key.pem",
                    "-rawin",
                ])
                .args(["-in", "receipt.msg", "-sigfile", "receipt.sig"])
                .current_dir(dir),
        )
    };
    let seq = r["receipt"]["seq"].as_u64().unwrap();
    let (good, out) = verify(seq);
    assert!(
        good && out.contains("Signature Verified Successfully"),
        "{out}"
    );
    let (good, out) = verify(seq + 1);
    assert!(!good, "a receipt names one record: {out}");
}

// Dev mode prints the API's base URL and curl commands that work as
// printed: the key is made and the signature comes back with a receipt.
#[test]
fn dev_mode_prints_working_curl_examples() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(kmsp11_tests::kmsd_bin());
    cmd.arg("--dev")
        .arg(tmp.path().join("dev"))
        .args(["--address", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = kmsp11_tests::spawn_tied(cmd).unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) {
        let end = line.contains("receipt-key");
        printed.push(line);
        if end {
            break;
        }
    }
    let text = printed.join("\n");
    assert!(
        text.contains("REST crypto API: https://localhost:"),
        "{text}"
    );
    let curls: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl ") && l.contains("/kms/v1/"))
        .collect();
    assert_eq!(curls.len(), 2, "{text}");
    let mut answers = Vec::new();
    for c in curls {
        let (ran, out) =
            kmsp11_tests::run(std::process::Command::new("sh").args(["-c", &format!("{c} -sS")]));
        assert!(ran, "{c}: {out}");
        answers.push(serde_json::from_str::<Value>(&out).unwrap_or_else(|_| panic!("{c}: {out}")));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answers[0]["key"]["name"], "demo-rest", "{}", answers[0]);
    assert!(
        answers[1]["signature"].is_string() && answers[1]["receipt"]["signature"].is_string(),
        "{}",
        answers[1]
    );
}

// Rotation over REST under dual control when `guarded` names it: refused
// with approval_required naming the request; once two other admins
// approve, the same call rotates.
#[test]
fn rotation_over_rest_waits_for_approvals() {
    let kmsd = Kmsd::start_edited(|t, _| {
        t.replacen("guarded = [\"destroy\"]", "guarded = [\"rotate\"]", 1)
    });
    create(&kmsd, "turn", "ec-p256");
    let v = refused(
        &kmsd,
        "dev-admin",
        "/keys/turn/rotate",
        json!({}),
        403,
        "approval_required",
    );
    let message = v["message"].as_str().unwrap();
    let id = message
        .split_whitespace()
        .find_map(|w| w.strip_suffix(';').filter(|w| w.len() > 8))
        .unwrap_or_else(|| panic!("no request id in {message:?}"));
    let client = std::fs::read_to_string(kmsd.dir.join("kmsctl-admin.toml"))
        .unwrap()
        .replace("dev-admin.", "client.");
    std::fs::write(kmsd.dir.join("kmsctl-client.toml"), client).unwrap();
    for admin in ["kmsctl-admin2.toml", "kmsctl-client.toml"] {
        let (code, out) = kmsd.kmsctl(admin, &["approvals", "approve", id]);
        assert_eq!(code, 0, "{out}");
    }
    let r = post(&kmsd, "dev-admin", "/keys/turn/rotate", json!({}));
    assert_eq!(r["key"]["version"], 2, "{r}");
}

// REST calls take the identity's execution slots, as its PKCS#11 calls
// do: with one slot, held by a sign waiting for approvals, another call
// waits limits.queue_timeout_secs and is refused with 429 `limit`.
#[test]
fn rest_calls_share_the_identity_execution_slots() {
    let kmsd = Kmsd::start_edited(|t, _| {
        let t = kmsp11_tests::set_in(
            &t,
            "limits",
            "max_in_flight_per_identity = 1\nqueue_timeout_secs = 1",
        );
        kmsp11_tests::set_in(&t, "dual_control", "on_pending = \"wait\"\nwait_secs = 4")
    });
    add_policy(&kmsd, &two_approvals_to_sign("held"));
    create(&kmsd, "held", "ec-p256");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            api(
                &kmsd,
                "dev-user",
                "POST",
                "/sign",
                Some(json!({"key": "held", "input": b64(b"m")})),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let (code, v) = api(
            &kmsd,
            "dev-user",
            "POST",
            "/random",
            Some(json!({"bytes": 8})),
        );
        assert_eq!((code, v["error"].as_str()), (429, Some("limit")), "{v}");
        let (code, v) = waiting.join().unwrap();
        assert_eq!(
            (code, v["error"].as_str()),
            (403, Some("approval_pending")),
            "{v}"
        );
    });
    let (code, _) = api(
        &kmsd,
        "dev-user",
        "POST",
        "/random",
        Some(json!({"bytes": 8})),
    );
    assert_eq!(code, 200, "the slot is free again");
}

/// An HTTPS client as dev identity `who` that keeps its connection open
/// between requests.
fn agent_as(kmsd: &Kmsd, who: &str) -> ureq::Agent {
    use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
    let certs = |file: &str| -> Vec<Certificate<'static>> {
        parse_pem(&std::fs::read(kmsd.dir.join(file)).unwrap())
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect()
    };
    let key = parse_pem(&std::fs::read(kmsd.dir.join(format!("{who}.key"))).unwrap())
        .find_map(|i| match i {
            Ok(PemItem::PrivateKey(k)) => Some(k),
            _ => None,
        })
        .unwrap();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(std::sync::Arc::new(certs("ca.pem"))))
        .client_cert(Some(ClientCert::new_with_certs(
            &certs(&format!("{who}.pem")),
            key,
        )))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .new_agent()
}

// An identity disabled while its HTTPS connection stays open: its next
// request on that connection is refused (403 identity_disabled), not run.
#[test]
fn disabled_identity_refused_on_its_open_connection() {
    let kmsd = Kmsd::start();
    let agent = agent_as(&kmsd, "dev-user");
    let url = format!("{}/kms/v1/random", kmsd.admin_origin());
    let random = || {
        let mut r = agent.post(&url).send_json(json!({"bytes": 8})).unwrap();
        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    };
    assert_eq!(random().0, 200);
    let (code, out) = kmsd.kmsctl("kmsctl-admin.toml", &["identities", "disable", "dev-user"]);
    assert_eq!(code, 0, "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, v) = random();
        if code == 403 {
            assert_eq!(v["error"], "identity_disabled", "{v}");
            break;
        }
        assert_eq!(code, 200, "{v}");
        assert!(
            std::time::Instant::now() < deadline,
            "still served after 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

// A key policy hides from the caller and a key that does not exist are
// answered alike, whatever is asked of them: the answers tell nothing of
// keys the caller may not see.
#[test]
fn hidden_and_absent_keys_answer_alike() {
    let kmsd = Kmsd::start();
    create(&kmsd, "secret", "ec-p256");
    create(&kmsd, "shown", "ec-p256");
    post(&kmsd, "dev-admin", "/keys/secret/rotate", json!({}));
    add_policy(
        &kmsd,
        "\n@id(\"hide-secret\")\nforbid (principal in Kms::Role::\"user\", action == Kms::Action::\"find\", resource is Kms::Key) when { resource.label like \"secret*\" };\n",
    );
    let sign = |key: &str| {
        api(
            &kmsd,
            "dev-user",
            "POST",
            "/sign",
            Some(json!({"key": key, "input": b64(b"m")})),
        )
    };
    let get = |path: &str| api(&kmsd, "dev-user", "GET", path, None);
    let strip = |(code, mut v): (u16, Value)| {
        // Receipts name different records; everything else is the same.
        v.as_object_mut().map(|o| o.remove("receipt"));
        (code, v)
    };
    for (hidden, absent) in [
        ("secret", "absent"),
        ("secret@v1", "absent@v1"),
        ("secret@v9", "absent@v9"),
    ] {
        let (h, a) = (strip(sign(hidden)), strip(sign(absent)));
        assert_eq!(h, a, "sign {hidden} vs {absent}");
        assert_eq!(h.0, 404, "{h:?}");
        let (h, a) = (
            get(&format!("/keys/{hidden}")),
            get(&format!("/keys/{absent}")),
        );
        assert_eq!(strip(h), strip(a), "get {hidden} vs {absent}");
    }
    let (code, _) = sign("shown");
    assert_eq!(code, 200, "the other key still signs");
}

// The client certificate logs the caller in as C_Login would: judged by
// policy (`login` on the token) and recorded. A policy that forbids the
// login refuses every REST call of that identity on the token.
#[test]
fn certificate_login_is_judged_and_recorded() {
    let kmsd = Kmsd::start();
    let r = post(&kmsd, "dev-user", "/random", json!({"bytes": 4}));
    let log = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    let seq = r["receipt"]["seq"].as_u64().unwrap();
    let login = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["seq"].as_u64().unwrap() < seq)
        .find(|r| r["op"] == "C_Login" && r["identity"] == "dev-user")
        .expect("a C_Login record before the call");
    assert_eq!(
        (login["decision"].as_str(), login["detail"].as_str()),
        (Some("allow"), Some("client certificate"))
    );
    add_policy(
        &kmsd,
        "\n@id(\"no-user-logins\")\nforbid (principal == Kms::Identity::\"dev-user\", action == Kms::Action::\"login\", resource);\n",
    );
    let v = refused(
        &kmsd,
        "dev-user",
        "/random",
        json!({"bytes": 4}),
        403,
        "policy_denied",
    );
    let rec = check_receipt(&kmsd, &v["receipt"]);
    assert_eq!(
        (rec["op"].as_str(), rec["decision"].as_str()),
        (Some("C_Login"), Some("deny")),
        "{rec}"
    );
}
