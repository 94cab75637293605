//! Key rotation as users meet it: `kmsctl keys rotate`, then stock clients
//! that find the key by its label sign and encrypt with the new version,
//! while the old one, renamed `label@vN`, still verifies and decrypts what
//! it made and signs and encrypts no more.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kmsp11_tests::{ck, through_library, Kmsd};

const ADMIN: &str = "kmsctl-admin.toml";
const AUDITOR: &str = "kmsctl-auditor.toml";

fn kmsctl_json(kmsd: &Kmsd, args: &[&str]) -> serde_json::Value {
    kmsd.kmsctl_json(ADMIN, args)
}

fn key_id(kmsd: &Kmsd, label: &str, class: &str) -> String {
    let keys = kmsctl_json(kmsd, &["keys", "list"]);
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == label && k["class"] == class)
        .unwrap_or_else(|| panic!("no {class} {label}: {keys}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn in_library<R>(kmsd: &Kmsd, f: impl FnOnce(&Session) -> R) -> R {
    through_library(&kmsd.client_config(), |_, s| f(s))
}

fn one(s: &Session, label: &str, class: ObjectClass) -> ObjectHandle {
    let found = s
        .find_objects(&[Attribute::Label(label.into()), Attribute::Class(class)])
        .unwrap();
    assert_eq!(found.len(), 1, "objects labelled {label:?} of {class:?}");
    found[0]
}

/// ECDSA over a 32-byte digest with pkcs11-tool, the key found by its id
/// (as pkcs11-tool finds a signing key).
fn tool_sign(kmsd: &Kmsd, dir: &std::path::Path, id: &str, name: &str) -> Vec<u8> {
    let (input, output) = (dir.join("digest"), dir.join(name));
    std::fs::write(&input, [7u8; 32]).unwrap();
    kmsd.pkcs11_tool(&[
        "--sign",
        "-m",
        "ECDSA",
        "--id",
        id,
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    std::fs::read(output).unwrap()
}

// Rotate a signing key used by pkcs11-tool: the same --id signs with the
// new version; the signature made before verifies with the old version's
// public key (label `signer@v1`, CKA_ID `0a` + "@v1"), the one made after
// with the new one's (label `signer`); the old private key signs no more.
#[test]
fn rotated_signing_key_keeps_old_signatures_verifiable() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    kmsd.ec_pair("0a", "signer");
    let before = tool_sign(&kmsd, tmp.path(), "0a", "sig1");
    let id = key_id(&kmsd, "signer", "private-key");
    // By name: the label the pair shares names its private key.
    let r = kmsctl_json(&kmsd, &["keys", "rotate", "signer"]);
    assert_eq!(r["label"], "signer", "{r}");
    assert_eq!(r["version"], 2, "{r}");
    assert_eq!(r["previous"]["label"], "signer@v1", "{r}");
    assert_eq!(r["previous"]["id"], id.as_str(), "{r}");
    assert_ne!(r["id"], id.as_str(), "a new key id for the new version");
    let after = tool_sign(&kmsd, tmp.path(), "0a", "sig2");
    let digest = [7u8; 32];
    in_library(&kmsd, |s| {
        let new_pub = one(s, "signer", ObjectClass::PUBLIC_KEY);
        let old_pub = one(s, "signer@v1", ObjectClass::PUBLIC_KEY);
        let ids = s
            .get_attributes(old_pub, &[cryptoki::object::AttributeType::Id])
            .unwrap();
        assert_eq!(ids, vec![Attribute::Id(b"\x0a@v1".to_vec())]);
        let verify = |k, sig: &[u8]| ck(&s.verify(&Mechanism::Ecdsa, k, &digest, sig));
        assert_eq!(verify(old_pub, &before), "Ok", "old signature, old version");
        assert_eq!(verify(new_pub, &after), "Ok", "new signature, new version");
        assert_eq!(verify(new_pub, &before), "SignatureInvalid");
        let old_priv = one(s, "signer@v1", ObjectClass::PRIVATE_KEY);
        let r = s.sign(&Mechanism::Ecdsa, old_priv, &digest);
        assert_eq!(
            ck(&r),
            "KeyFunctionNotPermitted",
            "the old version signs no more"
        );
    });
    let rec = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(
        rec.lines()
            .any(|l| l.contains("\"op\":\"keys.rotate\"") && l.contains(&id)),
        "an audit record of the rotation"
    );
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, b"aad", 128.into()).unwrap())
}

// Rotate an AES key twice: what each version encrypted, it decrypts under
// its version label; the name encrypts with the newest; old versions
// encrypt no more.
#[test]
fn rotated_aes_key_decrypts_what_each_version_encrypted() {
    let kmsd = Kmsd::start();
    let plain = b"rotate me";
    let encrypt = |label: &str| {
        in_library(&kmsd, |s| {
            let k = one(s, label, ObjectClass::SECRET_KEY);
            s.encrypt(&gcm(&mut [1u8; 12]), k, plain)
        })
    };
    let first = in_library(&kmsd, |s| {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"sealer".to_vec()),
            ],
        )
        .unwrap();
        let k = one(s, "sealer", ObjectClass::SECRET_KEY);
        s.encrypt(&gcm(&mut [1u8; 12]), k, plain).unwrap()
    });
    let id = key_id(&kmsd, "sealer", "secret-key");
    kmsctl_json(&kmsd, &["keys", "rotate", &id]);
    let second = encrypt("sealer").unwrap();
    assert_ne!(first, second, "the new version is another key");
    let id2 = key_id(&kmsd, "sealer", "secret-key");
    let r = kmsctl_json(&kmsd, &["keys", "rotate", &id2]);
    assert_eq!(r["previous"]["label"], "sealer@v2", "{r}");
    assert_eq!(r["version"], 3, "{r}");
    let versions = kmsctl_json(&kmsd, &["keys", "versions", "sealer"]);
    let listed: Vec<(u64, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["version"].as_u64().unwrap(),
                k["label"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (3, "sealer".into()),
            (2, "sealer@v2".into()),
            (1, "sealer@v1".into())
        ],
        "newest first"
    );
    in_library(&kmsd, |s| {
        let decrypt = |label: &str, c: &[u8]| {
            let k = one(s, label, ObjectClass::SECRET_KEY);
            s.decrypt(&gcm(&mut [1u8; 12]), k, c)
        };
        assert_eq!(decrypt("sealer@v1", &first).unwrap(), plain);
        assert_eq!(decrypt("sealer@v2", &second).unwrap(), plain);
        assert!(decrypt("sealer", &first).is_err(), "not the same key");
    });
    assert_eq!(ck(&encrypt("sealer@v1")), "KeyFunctionNotPermitted");
    assert_eq!(ck(&encrypt("sealer@v2")), "KeyFunctionNotPermitted");
    let third = encrypt("sealer").unwrap();
    assert_ne!(third, second);
    // A disabled old version refuses decrypt; the others still decrypt.
    let v1 = versions[2]["id"].as_str().unwrap();
    kmsctl_json(&kmsd, &["keys", "disable", v1]);
    in_library(&kmsd, |s| {
        let decrypt = |label: &str, c: &[u8]| {
            let k = one(s, label, ObjectClass::SECRET_KEY);
            s.decrypt(&gcm(&mut [1u8; 12]), k, c)
        };
        assert_eq!(ck(&decrypt("sealer@v1", &first)), "KeyFunctionNotPermitted");
        assert_eq!(decrypt("sealer@v2", &second).unwrap(), plain);
    });
}

// Refused rotations, each with kmsctl's exit status: a public key, an old
// version, an auditor; nothing changes.
#[test]
fn rotation_refusals() {
    let kmsd = Kmsd::start();
    kmsd.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "held",
    ]);
    let public = key_id(&kmsd, "held", "public-key");
    let (code, out) = kmsd.kmsctl(ADMIN, &["keys", "rotate", &public]);
    assert_eq!(code, 5, "a public key: {out}");
    assert!(out.contains("rotate its private or secret key"), "{out}");
    let private = key_id(&kmsd, "held", "private-key");
    let (code, out) = kmsd.kmsctl(AUDITOR, &["keys", "rotate", &private]);
    assert_eq!(code, 4, "an auditor: {out}");
    kmsctl_json(&kmsd, &["keys", "rotate", &private]);
    let old = key_id(&kmsd, "held@v1", "private-key");
    let (code, out) = kmsd.kmsctl(ADMIN, &["keys", "rotate", &old]);
    assert_eq!(code, 5, "an old version: {out}");
    let keys = kmsctl_json(&kmsd, &["keys", "list"]);
    let labels: Vec<_> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["class"] == "private-key")
        .map(|k| k["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        labels.iter().filter(|l| l.starts_with("held")).count(),
        2,
        "{labels:?}"
    );
}

// Scheduled rotation: with `[keys] rotate_ec_secs = 1`, kmsd rotates an EC
// key by itself (audited as kmsd, naming the setting), and leaves alone a
// key tagged `rotate=never`.
#[test]
fn scheduled_rotation_fires() {
    let kmsd = Kmsd::start_edited(|t, _| kmsp11_tests::set_in(&t, "keys", "rotate_ec_secs = 1"));
    kmsd.ec_pair("01", "auto");
    kmsd.ec_pair("02", "pinned");
    let pinned = key_id(&kmsd, "pinned", "private-key");
    kmsctl_json(&kmsd, &["keys", "tag", &pinned, "rotate=never"]);
    let labels = rotated_by_kmsd(&kmsd, "auto", "keys.rotate_ec_secs");
    assert!(
        !labels.iter().any(|l| l.starts_with("pinned@v")),
        "a key tagged rotate=never is not rotated: {labels:?}"
    );
}

// A rotation schedule per policy: `@rotate_every` on a policy permitting
// kmsd the action `rotate` on keys tagged `prod`; such a key rotates (the
// record names the policy), an untagged EC key does not (EC keys never
// rotate by default).
#[test]
fn policy_rotation_schedule_fires() {
    let kmsd = Kmsd::start();
    let policy = std::fs::read_to_string(kmsd.dir.join("policy.cedar")).unwrap()
        + "\n@id(\"prod-rotates\") @rotate_every(\"1s\")\npermit (principal == Kms::Identity::\"kmsd\", action == Kms::Action::\"rotate\", resource) when { resource.tags.contains(\"prod\") };\n";
    std::fs::write(kmsd.dir.join("policy.cedar"), policy).unwrap();
    let (code, out) = kmsd.kmsctl(ADMIN, &["policy", "reload"]);
    assert_eq!(code, 0, "{out}");
    kmsd.ec_pair("01", "prodkey");
    kmsd.ec_pair("02", "plain");
    let prod = key_id(&kmsd, "prodkey", "private-key");
    kmsctl_json(&kmsd, &["keys", "tag", &prod, "prod"]);
    let labels = rotated_by_kmsd(&kmsd, "prodkey", "policy prod-rotates @rotate_every");
    assert!(
        !labels.iter().any(|l| l.starts_with("plain@v")),
        "a key no schedule names is not rotated: {labels:?}"
    );
}

/// Waits (30 s at most) until kmsd rotated key `label` by itself, its
/// record naming `why`; answers the labels of the keys then.
fn rotated_by_kmsd(kmsd: &Kmsd, label: &str, why: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let keys = kmsctl_json(kmsd, &["keys", "list"]);
        let labels: Vec<String> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["label"].as_str().unwrap().to_string())
            .collect();
        // The record is written once the rotation is done.
        let audit = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
        let recorded = audit.lines().any(|l| {
            l.contains("\"op\":\"keys.rotate\"")
                && l.contains("\"identity\":\"kmsd\"")
                && l.contains(why)
        });
        if recorded && labels.iter().any(|l| *l == format!("{label}@v1")) {
            return labels;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled rotation of {label} ({why}, audited as kmsd) within 30 s: {labels:?}\n{}",
            kmsd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

// Rotation is atomic for clients: a multi-part signature started before
// the rotation finishes on the version it started with (it verifies with
// `atomic@v1`), while the next one uses the new version.
#[test]
fn a_sign_started_before_rotation_finishes_on_its_version() {
    let kmsd = Kmsd::start();
    kmsd.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "0c",
        "--label",
        "atomic",
    ]);
    let mech = Mechanism::Sha256RsaPkcs;
    in_library(&kmsd, |s| {
        let key = one(s, "atomic", ObjectClass::PRIVATE_KEY);
        assert_eq!(ck(&s.sign_init(&mech, key)), "Ok");
        assert_eq!(ck(&s.sign_update(b"first half, ")), "Ok");
        let r = kmsctl_json(&kmsd, &["keys", "rotate", "atomic"]);
        assert_eq!(r["version"], 2, "{r}");
        assert_eq!(ck(&s.sign_update(b"second half")), "Ok");
        let started = s.sign_final();
        assert_eq!(
            ck(&started),
            "Ok",
            "the sign started before the rotation finishes"
        );
        let started = started.unwrap();
        let whole = b"first half, second half";
        let old_pub = one(s, "atomic@v1", ObjectClass::PUBLIC_KEY);
        let new_pub = one(s, "atomic", ObjectClass::PUBLIC_KEY);
        assert_eq!(
            ck(&s.verify(&mech, old_pub, whole, &started)),
            "Ok",
            "made by version 1"
        );
        let next = s
            .sign(&mech, one(s, "atomic", ObjectClass::PRIVATE_KEY), whole)
            .unwrap();
        assert_eq!(
            ck(&s.verify(&mech, new_pub, whole, &next)),
            "Ok",
            "the next by version 2"
        );
        assert_eq!(
            ck(&s.verify(&mech, old_pub, whole, &next)),
            "SignatureInvalid"
        );
    });
}
