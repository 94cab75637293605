//! The key inventory and lifecycle as users meet it: key ids that survive
//! restarts, C_DestroyObject as a restorable pending destroy, revoked,
//! disabled and expired keys refused with kmsd's device errors, the
//! revocation list, keys made outside kmsd adopted, and no key state lost
//! to `kill -9`. `kmsd keys` (the store, directly) plays the administrator.
//!
//! The library is a process-wide singleton: tests that drive it take turns.

use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::Error;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kmsp11_proto::Request;
use kmsp11_tests::raw::rv_name;
use kmsp11_tests::wire::Wire;
use kmsp11_tests::{initialized, kmsd_bin, run, slot_by_label, user_session, Kmsd, P256};

/// kmsd's documented device errors (README, "Refusals").
const KEY_DISABLED: u64 = 0x4B4D_0101;
const KEY_REVOKED: u64 = 0x4B4D_0102;

/// Runs `f` in a logged-in session on kms-a through the library, as the dev admin.
fn session<R>(kmsd: &Kmsd, f: impl FnOnce(&Pkcs11, &Session) -> R) -> R {
    kmsp11_tests::through_library(&kmsd.client_config_as(&kmsd.dir, None), f)
}

use kmsp11_tests::ck as rv;

fn ec_pair(s: &Session, label: &str) -> (ObjectHandle, ObjectHandle) {
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::EcParams(P256.to_vec()),
            Attribute::Label(label.into()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Label(label.into()),
        ],
    )
    .unwrap()
}

/// A token AES-256 key for encrypt, decrypt, wrap and unwrap.
fn aes(s: &Session, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Label(label.into()),
        ],
    )
    .unwrap()
}

fn find(s: &Session, label: &str, class: ObjectClass) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Label(label.into()), Attribute::Class(class)])
        .unwrap()
}

fn kmsd_keys(kmsd: &Kmsd, args: &[&str]) -> String {
    let (ok, out) = run(Command::new(kmsd_bin())
        .arg("--config")
        .arg(kmsd.dir.join("kmsd.toml"))
        .arg("keys")
        .args(args));
    assert!(ok, "kmsd keys {args:?}: {out}");
    out
}

fn inventory(kmsd: &Kmsd) -> Vec<serde_json::Value> {
    serde_json::from_str(&kmsd_keys(kmsd, &["list", "--output", "json"])).unwrap()
}

fn key_of(kmsd: &Kmsd, label: &str, class: &str) -> serde_json::Value {
    inventory(kmsd)
        .into_iter()
        .find(|k| k["label"] == label && k["class"] == class)
        .unwrap_or_else(|| panic!("no {class} {label} in the inventory"))
}

fn id_of(kmsd: &Kmsd, label: &str, class: &str) -> String {
    key_of(kmsd, label, class)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sign(s: &Session, k: ObjectHandle) -> Result<Vec<u8>, Error> {
    s.sign(&Mechanism::Ecdsa, k, &[5u8; 32])
}

// Key ids are kept in the store: the same after a restart, found again
// for objects kmsd sees anew, and no key is adopted twice.
#[test]
fn key_ids_stable_across_restart() {
    let mut kmsd = Kmsd::start();
    session(&kmsd, |_, s| {
        ec_pair(s, "stable");
        aes(s, "stable-aes");
    });
    let before = inventory(&kmsd);
    assert_eq!(before.len(), 3, "{before:?}");
    kmsd.restart();
    session(&kmsd, |_, s| {
        let k = find(s, "stable", ObjectClass::PRIVATE_KEY);
        assert_eq!(rv(&sign(s, k[0])), "Ok");
        assert_eq!(find(s, "stable-aes", ObjectClass::SECRET_KEY).len(), 1);
    });
    let after = inventory(&kmsd);
    assert_eq!(before, after);
    let id = id_of(&kmsd, "stable", "private-key");
    let rec = std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["op"] == "C_SignInit")
        .unwrap();
    assert_eq!(rec["key"], id.as_str(), "{rec}");
}

// C_DestroyObject on a token key: gone for the client at once, pending
// destroy in the inventory, and restored by cancel-destroy.
#[test]
fn destroy_pending_then_cancelled() {
    let kmsd = Kmsd::start_unguarded();
    session(&kmsd, |_, s| {
        let (_, private) = ec_pair(s, "doomed");
        s.destroy_object(private).unwrap();
        assert!(find(s, "doomed", ObjectClass::PRIVATE_KEY).is_empty());
        assert_eq!(rv(&sign(s, private)), "ObjectHandleInvalid");
    });
    let k = key_of(&kmsd, "doomed", "private-key");
    assert_eq!(k["state"], "pending-destroy", "{k}");
    assert!(k["destroy_at"].is_string(), "{k}");
    let id = k["id"].as_str().unwrap();
    kmsd_keys(&kmsd, &["cancel-destroy", id]);
    assert_eq!(key_of(&kmsd, "doomed", "private-key")["state"], "active");
    session(&kmsd, |_, s| {
        let k = find(s, "doomed", ObjectClass::PRIVATE_KEY);
        assert_eq!(k.len(), 1);
        assert_eq!(rv(&sign(s, k[0])), "Ok");
    });
}

// When the window ends kmsd destroys the HSM object itself: the key is
// `destroyed`, and the object is gone from the SoftHSM token too.
#[test]
fn destroy_carried_out_when_the_window_ends() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(
            &kmsp11_tests::unguarded(&t),
            "keys",
            "destroy_window_secs = 1",
        )
    });
    session(&kmsd, |_, s| {
        let (_, private) = ec_pair(s, "short-lived");
        s.destroy_object(private).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while key_of(&kmsd, "short-lived", "private-key")["state"] != "destroyed" {
        assert!(Instant::now() < deadline, "not destroyed:\n{}", kmsd.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // SoftHSM direct: the private key is gone, its public half is not.
    std::env::set_var("SOFTHSM2_CONF", kmsd.softhsm_conf());
    let direct = initialized(&kmsp11_tests::softhsm_module());
    let s = user_session(&direct, slot_by_label(&direct, "dev-a"));
    assert!(find(&s, "short-lived", ObjectClass::PRIVATE_KEY).is_empty());
    assert_eq!(find(&s, "short-lived", ObjectClass::PUBLIC_KEY).len(), 1);
}

/// `C_GetSessionInfo().ulDeviceError` of a session.
fn device_error(s: &Session) -> u64 {
    s.get_session_info().unwrap().device_error()
}

// A revoked key is refused for sign, encrypt and unwrap, with the revoked
// device error; the revocation list names it.
#[test]
fn revoked_key_refused_for_sign_encrypt_unwrap() {
    let kmsd = Kmsd::start();
    session(&kmsd, |_, s| {
        ec_pair(s, "compromised");
        aes(s, "compromised-aes");
    });
    for label in ["compromised", "compromised-aes"] {
        let class = if label == "compromised" {
            "private-key"
        } else {
            "secret-key"
        };
        let id = id_of(&kmsd, label, class);
        kmsd_keys(
            &kmsd,
            &["revoke", &id, "--reason", "key leaked", "--by", "alice"],
        );
    }
    session(&kmsd, |_, s| {
        let k = find(s, "compromised", ObjectClass::PRIVATE_KEY)[0];
        assert_eq!(rv(&sign(s, k)), "KeyFunctionNotPermitted");
        assert_eq!(device_error(s), KEY_REVOKED);
        let a = find(s, "compromised-aes", ObjectClass::SECRET_KEY)[0];
        let r = s.encrypt(&Mechanism::AesCbcPad([0; 16]), a, b"data");
        assert_eq!(rv(&r), "KeyFunctionNotPermitted");
        let r = s.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            a,
            &[0u8; 40],
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(cryptoki::object::KeyType::AES),
            ],
        );
        assert_eq!(rv(&r), "KeyFunctionNotPermitted");
    });
    let krl: Vec<serde_json::Value> =
        serde_json::from_str(&kmsd_keys(&kmsd, &["revoked"])).unwrap();
    assert_eq!(krl.len(), 2, "{krl:?}");
    assert_eq!(krl[0]["label"], "compromised");
    assert_eq!(krl[0]["who"], "alice");
    assert_eq!(krl[0]["reason"], "key leaked");
    assert!(krl[0]["when"].as_str().unwrap().ends_with('Z'));
    let rec = std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["op"] == "C_SignInit" && r["decision"] == "deny")
        .expect("a denial record");
    assert_eq!(rec["reason"], "key-revoked", "{rec}");
    // The revocations themselves reach the audit log, named by who made them.
    let line = kmsd_audit_line(
        &kmsd,
        &[
            "\"op\":\"keys.revoke\"",
            "\"identity\":\"alice\"",
            "key leaked",
        ],
    );
    assert!(
        line.contains(&id_of(&kmsd, "compromised", "private-key")),
        "{line}"
    );
}

/// Waits (kmsd moves administrative changes into its log every few
/// seconds) for an audit line containing all of `parts`.
fn kmsd_audit_line(kmsd: &Kmsd, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
        if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "no audit line with {parts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// A disabled key is refused, with its own device error, until enabled.
#[test]
fn disabled_key_refused_until_enabled() {
    let kmsd = Kmsd::start();
    session(&kmsd, |_, s| {
        ec_pair(s, "paused");
    });
    let id = id_of(&kmsd, "paused", "private-key");
    kmsd_keys(&kmsd, &["disable", &id]);
    session(&kmsd, |_, s| {
        let k = find(s, "paused", ObjectClass::PRIVATE_KEY)[0];
        assert_eq!(rv(&sign(s, k)), "KeyFunctionNotPermitted");
        assert_eq!(device_error(s), KEY_DISABLED);
        kmsd_keys(&kmsd, &["enable", &id]);
        assert_eq!(rv(&sign(s, k)), "Ok");
    });
}

// A key disabled while an application signs with it in a session it
// keeps open is refused at its next use (the library may hold the
// C_SignInit it had seen accepted: the refusal then comes with C_Sign),
// and no operation is left active; enabled again, it signs.
#[test]
fn key_disabled_between_two_signs_is_refused_at_once() {
    let kmsd = Kmsd::start();
    session(&kmsd, |_, s| {
        let (_, k) = ec_pair(s, "busy");
        assert_eq!(rv(&sign(s, k)), "Ok");
        assert_eq!(rv(&sign(s, k)), "Ok");
        let id = id_of(&kmsd, "busy", "private-key");
        kmsd_keys(&kmsd, &["disable", &id]);
        assert_eq!(rv(&sign(s, k)), "KeyFunctionNotPermitted");
        assert_eq!(device_error(s), KEY_DISABLED);
        assert_eq!(rv(&sign(s, k)), "KeyFunctionNotPermitted");
        kmsd_keys(&kmsd, &["enable", &id]);
        assert_eq!(rv(&sign(s, k)), "Ok");
    });
}

// After its expiry a key only verifies (and decrypts, unwraps): signing is
// refused, verifying still works.
#[test]
fn expired_key_only_verifies() {
    let kmsd = Kmsd::start();
    let sig = session(&kmsd, |_, s| {
        let (_, private) = ec_pair(s, "old");
        sign(s, private).unwrap()
    });
    for class in ["private-key", "public-key"] {
        let id = id_of(&kmsd, "old", class);
        kmsd_keys(&kmsd, &["expire", &id, "--at", "2020-01-01T00:00:00Z"]);
    }
    session(&kmsd, |_, s| {
        let k = find(s, "old", ObjectClass::PRIVATE_KEY)[0];
        assert_eq!(rv(&sign(s, k)), "KeyFunctionNotPermitted");
        let p = find(s, "old", ObjectClass::PUBLIC_KEY)[0];
        assert_eq!(rv(&s.verify(&Mechanism::Ecdsa, p, &[5u8; 32], &sig)), "Ok");
    });
}

// A key made on the HSM without kmsd is adopted when a client first sees
// it: it gets a key id, with no owner.
#[test]
fn keys_made_outside_are_adopted() {
    let mut kmsd = Kmsd::start();
    kmsd.stop();
    {
        std::env::set_var("SOFTHSM2_CONF", kmsd.softhsm_conf());
        let direct = initialized(&kmsp11_tests::softhsm_module());
        let s = user_session(&direct, slot_by_label(&direct, "dev-a"));
        ec_pair(&s, "from-outside");
    }
    kmsd.restart();
    assert!(inventory(&kmsd).is_empty());
    session(&kmsd, |_, s| {
        assert_eq!(find(s, "from-outside", ObjectClass::PRIVATE_KEY).len(), 1);
    });
    let k = key_of(&kmsd, "from-outside", "private-key");
    assert_eq!(k["owner"], "", "{k}");
    assert!(k["id"].as_str().unwrap().starts_with("k-"), "{k}");
}

// kmsd killed (SIGKILL) during a loop of token key generations: every key
// the client saw made is in the inventory afterwards.
#[test]
fn kill_9_loses_no_key_state() {
    let mut kmsd = Kmsd::start();
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let s = w.open_session(
        0,
        pkcs11_sys::CKF_SERIAL_SESSION | pkcs11_sys::CKF_RW_SESSION,
    );
    assert_eq!(w.login(s, kmsp11_tests::PIN), 0);
    let generate = |n: u64| {
        Request::GenerateKey(kmsp11_proto::GenerateKey {
            session: s,
            mechanism: kmsp11_proto::Mechanism {
                mechanism: pkcs11_sys::CKM_AES_KEY_GEN,
                param: kmsp11_proto::MechParam::None,
            },
            template: Some(vec![
                kmsp11_proto::Attribute {
                    kind: pkcs11_sys::CKA_VALUE_LEN,
                    value: kmsp11_proto::AttrValue::Ulong(16),
                },
                kmsp11_proto::Attribute {
                    kind: pkcs11_sys::CKA_TOKEN,
                    value: kmsp11_proto::AttrValue::Bytes(vec![1]),
                },
                kmsp11_proto::Attribute {
                    kind: pkcs11_sys::CKA_LABEL,
                    value: kmsp11_proto::AttrValue::Bytes(format!("gen-{n}").into_bytes()),
                },
            ]),
        })
    };
    let pid = kmsd.pid() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on the test's own kmsd child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut acknowledged = vec![];
    // Request ids above the ones Wire used for the session and login.
    for n in 1000..100_000u64 {
        match w.call_with(n, false, generate(n)) {
            Some(r) if r.rv == 0 => acknowledged.push(format!("gen-{n}")),
            Some(r) => panic!("C_GenerateKey: {}", rv_name(r.rv)),
            None => break,
        }
    }
    killer.join().unwrap();
    kmsd.stop();
    assert!(
        acknowledged.len() > 3,
        "too few generations before the kill"
    );
    let labels: std::collections::HashSet<String> = inventory(&kmsd)
        .iter()
        .map(|k| k["label"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|l| !labels.contains(*l))
        .collect();
    assert!(lost.is_empty(), "made but not in the inventory: {lost:?}");
}
