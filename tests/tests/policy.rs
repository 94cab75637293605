//! Policy as users meet it, with the dev setup's identities and policy
//! (`kmsd/src/dev-policy.cedar`): `dev-client` and `dev-admin2` are
//! admins, `dev-user` may only use keys, `dev-auditor` nothing beyond
//! logging in. Each refusal is checked by its CK_RV, by the session's
//! device error where the spec puts it, and by its audit record.
//!
//! The library is a process-wide singleton: tests that drive it take turns
//! (`as_identity`); pkcs11-tool runs in its own process.

use std::process::Command;
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::Error;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kmsp11_tests::{kmsd_bin, libkmsp11, run, Kmsd, P256, PIN};

/// The library configs of the dev identities.
const ADMIN: &str = "kmsp11.toml";
const USER: &str = "kmsp11-user.toml";

/// Runs `f` in a logged-in session on kms-a through the library, as the
/// identity of library config `who`.
fn as_identity<R>(kmsd: &Kmsd, who: &str, f: impl FnOnce(&Pkcs11, &Session) -> R) -> R {
    kmsp11_tests::through_library(&kmsd.dir.join(who), f)
}

use kmsp11_tests::ck as rv;

/// A token P-256 key pair labelled `label`, made by the caller's session.
fn ec_pair(s: &Session, label: &str) -> Result<(ObjectHandle, ObjectHandle), Error> {
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::EcParams(P256.to_vec()),
            Attribute::Verify(true),
            Attribute::Label(label.into()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Label(label.into()),
        ],
    )
}

fn find(s: &Session, label: &str, class: ObjectClass) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Label(label.into()), Attribute::Class(class)])
        .unwrap()
}

fn records(kmsd: &Kmsd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The last audit record of `op` by `identity`.
fn last_record(kmsd: &Kmsd, identity: &str, op: &str) -> serde_json::Value {
    records(kmsd)
        .into_iter()
        .rev()
        .find(|r| r["identity"] == identity && r["op"] == op)
        .unwrap_or_else(|| panic!("no audit record of {op} by {identity}"))
}

/// pkcs11-tool on kms-a as the identity of library config `who`.
fn tool(kmsd: &Kmsd, who: &str, args: &str) -> (bool, String) {
    let mut c = Command::new("pkcs11-tool");
    c.arg("--module")
        .arg(libkmsp11())
        .args(["--token-label", "kms-a", "-l", "-p", PIN])
        .args(args.split_whitespace())
        .env("KMSP11_CONFIG", kmsd.dir.join(who));
    run(&mut c)
}

/// Replaces the policy file and asks kmsd to load it.
fn reload_policy(kmsd: &Kmsd, text: &str) {
    std::fs::write(kmsd.dir.join("policy.cedar"), text).unwrap();
    let before = kmsd.log().matches("SIGHUP: policy").count();
    kmsd.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kmsd.log().matches("SIGHUP: policy").count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no SIGHUP policy line:\n{}",
            kmsd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kmsd_keys(kmsd: &Kmsd, args: &[&str]) -> (bool, String) {
    run(Command::new(kmsd_bin())
        .arg("--config")
        .arg(kmsd.dir.join("kmsd.toml"))
        .arg("keys")
        .args(args))
}

fn key_id(kmsd: &Kmsd, label: &str, class: &str) -> String {
    let (ok, out) = kmsd_keys(kmsd, &["list", "--output", "json"]);
    assert!(ok, "{out}");
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    keys.iter()
        .find(|k| k["label"] == label && k["class"] == class)
        .unwrap_or_else(|| panic!("no {class} {label} in {out}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

// An admin may create keys; a user may not: CKR_KEY_FUNCTION_NOT_PERMITTED,
// recorded as a denial naming the default deny.
#[test]
fn user_may_not_generate_keys() {
    let kmsd = Kmsd::start();
    as_identity(&kmsd, ADMIN, |_, s| ec_pair(s, "by-admin").unwrap());
    let r = as_identity(&kmsd, USER, |_, s| ec_pair(s, "by-user").map(|_| ()));
    assert_eq!(rv(&r), "KeyFunctionNotPermitted");
    let rec = last_record(&kmsd, "dev-user", "C_GenerateKeyPair");
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["policy"], "default-deny", "{rec}");
    assert_eq!(rec["rv"], "CKR_KEY_FUNCTION_NOT_PERMITTED", "{rec}");
}

// A user signs with a key an admin made, and the record names the key id
// and the policy that allowed it.
#[test]
fn user_may_sign_with_an_admin_key() {
    let kmsd = Kmsd::start();
    as_identity(&kmsd, ADMIN, |_, s| ec_pair(s, "shared").unwrap());
    let sig = as_identity(&kmsd, USER, |_, s| {
        let k = find(s, "shared", ObjectClass::PRIVATE_KEY)[0];
        s.sign(&Mechanism::Ecdsa, k, &[7u8; 32])
    });
    assert_eq!(rv(&sig), "Ok");
    assert_eq!(sig.unwrap().len(), 64);
    let rec = last_record(&kmsd, "dev-user", "C_SignInit");
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["policy"], "users-use-keys", "{rec}");
    assert_eq!(rec["key"], key_id(&kmsd, "shared", "private-key"), "{rec}");
}

// pkcs11-tool as the user: listing works, key generation is refused with
// the documented code.
#[test]
fn pkcs11_tool_user_refused_keygen() {
    let kmsd = Kmsd::start();
    let (ok, out) = tool(&kmsd, USER, "--keygen --key-type AES:32 --label nope");
    assert!(!ok, "{out}");
    assert!(out.contains("CKR_KEY_FUNCTION_NOT_PERMITTED"), "{out}");
    let (ok, out) = tool(&kmsd, ADMIN, "--keygen --key-type AES:32 --label yes");
    assert!(ok, "{out}");
}

// A mechanism policy never permits to an identity is absent from its
// mechanism list and refused with CKR_MECHANISM_INVALID; an admin keeps it.
#[test]
fn forbidden_mechanism_is_absent_and_invalid() {
    let kmsd = Kmsd::start();
    let admin = as_identity(&kmsd, ADMIN, |p, s| {
        let (public, _) = s
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::ModulusBits(2048.into()),
                    Attribute::Encrypt(true),
                    Attribute::Label("rsa".into()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Decrypt(true),
                    Attribute::Label("rsa".into()),
                ],
            )
            .unwrap();
        let _ = public;
        p.get_mechanism_list(s.get_session_info().unwrap().slot_id())
            .unwrap()
    });
    assert!(admin.contains(&MechanismType::RSA_PKCS));
    let (list, r) = as_identity(&kmsd, USER, |p, s| {
        let list = p
            .get_mechanism_list(s.get_session_info().unwrap().slot_id())
            .unwrap();
        let k = find(s, "rsa", ObjectClass::PUBLIC_KEY)[0];
        (list, s.encrypt(&Mechanism::RsaPkcs, k, b"x").map(|_| ()))
    });
    assert!(!list.contains(&MechanismType::RSA_PKCS), "{list:?}");
    assert!(list.contains(&MechanismType::ECDSA), "{list:?}");
    assert_eq!(rv(&r), "MechanismInvalid");
    let rec = last_record(&kmsd, "dev-user", "C_EncryptInit");
    assert_eq!(rec["policy"], "no-rsa-pkcs1-for-users", "{rec}");
}

// The auditor sees no keys at all: absent from find, and the handles an
// admin's context holds answer CKR_OBJECT_HANDLE_INVALID in its own.
#[test]
fn auditor_sees_no_keys() {
    use kmsp11_proto::{AttrQuery, FindObjects, FindObjectsInit, GetAttributeValue, Request};
    use kmsp11_tests::wire::Wire;
    let kmsd = Kmsd::start();
    let found = |w: &mut Wire, s: u64| {
        let r = w.call(Request::FindObjectsInit(FindObjectsInit {
            session: s,
            template: None,
        }));
        assert_eq!(r.rv, 0);
        let r = w.call(Request::FindObjects(FindObjects {
            session: s,
            max: 100,
        }));
        match r.body {
            kmsp11_proto::Body::Handles(h) => h,
            other => panic!("{other:?}"),
        }
    };
    let rw = pkcs11_sys::CKF_SERIAL_SESSION | pkcs11_sys::CKF_RW_SESSION;
    as_identity(&kmsd, ADMIN, |_, s| ec_pair(s, "secret-plans").unwrap());
    let mut admin = Wire::connect(&kmsd);
    admin.hello(None);
    let a = admin.open_session(0, rw);
    assert_eq!(admin.login(a, PIN), 0);
    let theirs = found(&mut admin, a);
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    let mut auditor = Wire::connect_as(
        &kmsd,
        &kmsd.dir.join("dev-auditor.pem"),
        &kmsd.dir.join("dev-auditor.key"),
    );
    auditor.hello(None);
    let s = auditor.open_session(0, rw);
    assert_eq!(auditor.login(s, PIN), 0, "the auditor may log in");
    assert!(found(&mut auditor, s).is_empty());
    for h in theirs {
        let r = auditor.call(Request::GetAttributeValue(GetAttributeValue {
            session: s,
            object: h,
            template: vec![AttrQuery {
                kind: pkcs11_sys::CKA_LABEL,
                buf: Some(64),
            }],
        }));
        let got = kmsp11_tests::raw::rv_name(r.rv);
        assert!(got.starts_with("CKR_OBJECT_HANDLE_INVALID"), "{got}");
    }
}

// A key tagged admin-only (kmsd keys tag) disappears for users: gone from
// find, and the handle they already held answers CKR_OBJECT_HANDLE_INVALID.
#[test]
fn tagged_key_hidden_from_users() {
    let kmsd = Kmsd::start();
    as_identity(&kmsd, ADMIN, |_, s| ec_pair(s, "release").unwrap());
    let id = key_id(&kmsd, "release", "private-key");
    let (before, after, used) = as_identity(&kmsd, USER, |_, s| {
        let before = find(s, "release", ObjectClass::PRIVATE_KEY);
        let (ok, out) = kmsd_keys(&kmsd, &["tag", &id, "admin-only"]);
        assert!(ok, "{out}");
        let after = find(s, "release", ObjectClass::PRIVATE_KEY);
        let used = s.sign(&Mechanism::Ecdsa, before[0], &[1u8; 32]).map(|_| ());
        (before, after, used)
    });
    assert_eq!(before.len(), 1);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(rv(&used), "ObjectHandleInvalid");
    let admin = as_identity(&kmsd, ADMIN, |_, s| {
        let k = find(s, "release", ObjectClass::PRIVATE_KEY)[0];
        s.sign(&Mechanism::Ecdsa, k, &[1u8; 32]).map(|_| ())
    });
    assert_eq!(rv(&admin), "Ok");
}

// A policy that forbids one operation on keys of one label: that
// operation is refused for them, others and other keys are not.
#[test]
fn deny_by_operation_and_label() {
    let kmsd = Kmsd::start();
    as_identity(&kmsd, ADMIN, |_, s| {
        ec_pair(s, "verify-only").unwrap();
        ec_pair(s, "ordinary").unwrap();
    });
    let dev = std::fs::read_to_string(kmsd.dir.join("policy.cedar")).unwrap();
    reload_policy(
        &kmsd,
        &format!(
            "{dev}\n@id(\"no-signing-verify-only\")\nforbid (principal, action == Kms::Action::\"sign\", resource is Kms::Key)\nwhen {{ resource.label == \"verify-only\" }};\n"
        ),
    );
    let (refused, allowed) = as_identity(&kmsd, USER, |_, s| {
        let k = find(s, "verify-only", ObjectClass::PRIVATE_KEY)[0];
        let o = find(s, "ordinary", ObjectClass::PRIVATE_KEY)[0];
        (
            s.sign(&Mechanism::Ecdsa, k, &[1u8; 32]).map(|_| ()),
            s.sign(&Mechanism::Ecdsa, o, &[1u8; 32]).map(|_| ()),
        )
    });
    assert_eq!(rv(&refused), "KeyFunctionNotPermitted");
    assert_eq!(rv(&allowed), "Ok");
    let rec = last_record(&kmsd, "dev-user", "C_SignInit");
    assert_eq!(rec["decision"], "allow", "{rec}");
    let denied = records(&kmsd)
        .into_iter()
        .find(|r| r["decision"] == "deny" && r["op"] == "C_SignInit")
        .expect("a denial record");
    assert_eq!(denied["policy"], "no-signing-verify-only", "{denied}");
    assert_eq!(denied["reason"], "policy", "{denied}");
}

// A policy file with an error is refused on SIGHUP with its position, and
// the policy in force keeps deciding; a good file then takes effect.
#[test]
fn invalid_policy_reload_keeps_the_old_policy() {
    let kmsd = Kmsd::start();
    let good = std::fs::read_to_string(kmsd.dir.join("policy.cedar")).unwrap();
    reload_policy(
        &kmsd,
        &good.replace("Kms::Action::\"sign\",", "Kms::Action::\"sing\","),
    );
    let line = kmsd.wait_for_log(&["SIGHUP: policy refused"], Duration::from_secs(5));
    assert!(line.contains("policy.cedar:"), "{line}");
    assert!(line.contains("sing"), "{line}");
    let (ok, out) = tool(
        &kmsd,
        ADMIN,
        "--keypairgen --key-type EC:prime256v1 --label s",
    );
    assert!(ok, "{out}");
    let (ok, out) = tool(
        &kmsd,
        USER,
        "--sign --mechanism ECDSA --label s --input-file /etc/hostname",
    );
    assert!(ok, "the old policy should still let users sign: {out}");
    reload_policy(&kmsd, &good.replace("Kms::Action::\"sign\",", ""));
    kmsd.wait_for_log(&["SIGHUP: policy reloaded"], Duration::from_secs(5));
    let (ok, out) = tool(
        &kmsd,
        USER,
        "--sign --mechanism ECDSA --label s --input-file /etc/hostname",
    );
    assert!(
        !ok && out.contains("CKR_KEY_FUNCTION_NOT_PERMITTED"),
        "{out}"
    );
}

// `kmsd --check` validates the policy and names the position of an error.
#[test]
fn check_reports_policy_errors_with_position() {
    let kmsd = Kmsd::start();
    let cfg = kmsd.dir.join("kmsd.toml");
    let (ok, out) = run(Command::new(kmsd_bin())
        .arg("--check")
        .arg("--config")
        .arg(&cfg));
    assert!(ok, "{out}");
    assert!(out.contains("policies"), "{out}");
    let p = kmsd.dir.join("policy.cedar");
    let good = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        format!("{good}\npermit (principal, action, resource) when {{ resource.colour == 1 }};\n"),
    )
    .unwrap();
    let (ok, out) = run(Command::new(kmsd_bin())
        .arg("--check")
        .arg("--config")
        .arg(&cfg));
    assert!(!ok, "{out}");
    let lines = good.lines().count() + 2;
    assert!(out.contains(&format!("policy.cedar:{lines}:")), "{out}");
    assert!(out.contains("colour"), "{out}");
}

/// A policy under which everyone may do everything except `export`.
fn no_export(kmsd: &Kmsd) {
    reload_policy(
        kmsd,
        "permit (principal, action, resource);\n@id(\"no-export\")\nforbid (principal, action == Kms::Action::\"export\", resource);\n",
    );
}

// Without `export`, a private key asked to be extractable is refused, and
// one that does not say is made sensitive and non-extractable.
#[test]
fn extractable_private_key_refused_without_export() {
    let kmsd = Kmsd::start();
    no_export(&kmsd);
    let (refused, made) = as_identity(&kmsd, ADMIN, |_, s| {
        let pub_t = [Attribute::EcParams(P256.to_vec()), Attribute::Token(true)];
        let refused = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &pub_t,
                &[Attribute::Token(true), Attribute::Extractable(true)],
            )
            .map(|_| ());
        let not_sensitive = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &pub_t,
                &[Attribute::Token(true), Attribute::Sensitive(false)],
            )
            .map(|_| ());
        assert_eq!(rv(&not_sensitive), "AttributeValueInvalid");
        let (_, ok) = s
            .generate_key_pair(&Mechanism::EccKeyPairGen, &pub_t, &[Attribute::Token(true)])
            .unwrap();
        let made = s
            .get_attributes(ok, &[AttributeType::Sensitive, AttributeType::Extractable])
            .unwrap();
        (refused, made)
    });
    assert_eq!(rv(&refused), "AttributeValueInvalid");
    assert_eq!(
        made,
        vec![Attribute::Sensitive(true), Attribute::Extractable(false)]
    );
    let rec = last_record(&kmsd, "dev-client", "C_GenerateKeyPair");
    assert_eq!(rec["decision"], "allow");
    let denied = records(&kmsd)
        .into_iter()
        .find(|r| r["decision"] == "deny" && r["op"] == "C_GenerateKeyPair")
        .expect("a denial record");
    assert_eq!(denied["reason"], "constraint", "{denied}");
    assert_eq!(denied["rv"], "CKR_ATTRIBUTE_VALUE_INVALID", "{denied}");
}

// RSA below the minimum size is refused for everyone, admins too.
#[test]
fn rsa_1024_refused() {
    let kmsd = Kmsd::start();
    let r = as_identity(&kmsd, ADMIN, |_, s| {
        s.generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::ModulusBits(1024.into())],
            &[],
        )
        .map(|_| ())
    });
    assert_eq!(rv(&r), "KeySizeRange");
    let denied = last_record(&kmsd, "dev-client", "C_GenerateKeyPair");
    assert_eq!(denied["policy"], "min_rsa_bits", "{denied}");
    let r = as_identity(&kmsd, ADMIN, |_, s| {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(8.into()),
                Attribute::KeyType(KeyType::AES),
            ],
        )
        .map(|_| ())
    });
    assert_eq!(rv(&r), "KeySizeRange");
}

// Another identity's session handle is not a way in: this context has no
// such session.
#[test]
fn other_identity_session_handles_are_invalid() {
    let kmsd = Kmsd::start();
    let mut admin = kmsp11_tests::wire::Wire::connect(&kmsd);
    admin.hello(None);
    let s = admin.open_session(
        0,
        pkcs11_sys::CKF_SERIAL_SESSION | pkcs11_sys::CKF_RW_SESSION,
    );
    assert_eq!(admin.login(s, PIN), 0);
    let mut user = kmsp11_tests::wire::Wire::connect_as(
        &kmsd,
        &kmsd.dir.join("dev-user.pem"),
        &kmsd.dir.join("dev-user.key"),
    );
    user.hello(None);
    let r = user.call(kmsp11_proto::Request::FindObjectsInit(
        kmsp11_proto::FindObjectsInit {
            session: s,
            template: None,
        },
    ));
    let got = kmsp11_tests::raw::rv_name(r.rv);
    assert!(got.starts_with("CKR_SESSION_HANDLE_INVALID"), "{got}");
}

// On a shared token the key's owner and the policy decide: under a policy
// that lets only owners destroy or change keys, another identity is
// refused and the owner is not.
#[test]
fn only_the_owner_destroys_a_key_on_a_shared_token() {
    let kmsd = Kmsd::start_unguarded();
    reload_policy(
        &kmsd,
        r#"permit (principal, action in [Kms::Action::"login", Kms::Action::"generate", Kms::Action::"find", Kms::Action::"read-attribute"], resource);
@id("owners-only")
permit (principal, action in [Kms::Action::"destroy", Kms::Action::"set-attribute"], resource)
when { resource.owner == principal.name };
"#,
    );
    as_identity(&kmsd, USER, |_, s| ec_pair(s, "users-own").unwrap());
    let (destroy, relabel) = as_identity(&kmsd, "kmsp11-admin2.toml", |_, s| {
        let k = find(s, "users-own", ObjectClass::PRIVATE_KEY)[0];
        (
            s.destroy_object(k),
            s.update_attributes(k, &[Attribute::Label("taken".into())]),
        )
    });
    assert_eq!(rv(&destroy), "KeyFunctionNotPermitted");
    assert_eq!(rv(&relabel), "KeyFunctionNotPermitted");
    let mine = as_identity(&kmsd, USER, |_, s| {
        let k = find(s, "users-own", ObjectClass::PRIVATE_KEY)[0];
        s.destroy_object(k)
    });
    assert_eq!(rv(&mine), "Ok");
    let rec = last_record(&kmsd, "dev-user", "C_DestroyObject");
    assert_eq!(rec["policy"], "owners-only", "{rec}");
}

// A key leaves the HSM by wrapping only under a wrapping key the policy
// names for its export.
#[test]
fn wrapping_out_needs_export_with_that_wrapping_key() {
    let kmsd = Kmsd::start();
    let aes = |s: &Session, label: &str, extractable: bool| {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Extractable(extractable),
                Attribute::Sensitive(true),
                Attribute::Label(label.into()),
            ],
        )
        .unwrap()
    };
    as_identity(&kmsd, ADMIN, |_, s| {
        aes(s, "payload", true);
        aes(s, "escrow", false);
        aes(s, "elsewhere", false);
    });
    let escrow = key_id(&kmsd, "escrow", "secret-key");
    reload_policy(
        &kmsd,
        &format!(
            "permit (principal, action, resource);\n@id(\"export-to-escrow-only\")\nforbid (principal, action == Kms::Action::\"export\", resource)\nunless {{ context.wrapping_key == \"{escrow}\" }};\n"
        ),
    );
    let (elsewhere, to_escrow) = as_identity(&kmsd, ADMIN, |_, s| {
        let k = |l: &str| find(s, l, ObjectClass::SECRET_KEY)[0];
        (
            s.wrap_key(&Mechanism::AesKeyWrapPad, k("elsewhere"), k("payload")),
            s.wrap_key(&Mechanism::AesKeyWrapPad, k("escrow"), k("payload")),
        )
    });
    assert_eq!(rv(&elsewhere), "KeyFunctionNotPermitted");
    assert_eq!(rv(&to_escrow), "Ok");
    let denied = records(&kmsd)
        .into_iter()
        .find(|r| r["decision"] == "deny" && r["op"] == "C_WrapKey")
        .expect("a denial record");
    assert_eq!(denied["policy"], "export-to-escrow-only", "{denied}");
}
