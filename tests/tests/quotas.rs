//! Quotas as users meet them: a key's rate (a policy's `@rate`) refuses
//! with `CKR_FUNCTION_FAILED` and recovers; a key's daily limit
//! (`@daily_limit`) holds across a restart; the identity rate of
//! `[quotas]`. Each refusal carries kmsd's device error in the session
//! and is an audit record.
//!
//! The library is a process-wide singleton: tests that drive it take turns.

use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use kmsp11_tests::{Kmsd, P256};

const IDENTITY_RATE: u64 = 0x4B4D_0301;
const KEY_RATE: u64 = 0x4B4D_0302;
const DAILY_LIMIT: u64 = 0x4B4D_0303;

/// Runs `f` in a logged-in session on kms-a through the library, as the dev admin.
fn session<R>(kmsd: &Kmsd, f: impl FnOnce(&Pkcs11, &Session) -> R) -> R {
    kmsp11_tests::through_library(&kmsd.client_config_as(&kmsd.dir, None), f)
}

use kmsp11_tests::ck as rv;

fn signing_key(s: &Session) -> ObjectHandle {
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::Token(true), Attribute::EcParams(P256.to_vec())],
        &[
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Label("q".into()),
        ],
    )
    .unwrap()
    .1
}

fn sign(s: &Session, k: ObjectHandle) -> String {
    rv(&s.sign(&Mechanism::Ecdsa, k, &[3u8; 32]))
}

/// Replaces the policy and asks kmsd to load it.
fn policy(kmsd: &Kmsd, text: &str) {
    std::fs::write(kmsd.dir.join("policy.cedar"), text).unwrap();
    let before = kmsd.log().matches("SIGHUP: policy reloaded").count();
    kmsd.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kmsd.log().matches("SIGHUP: policy reloaded").count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "policy not reloaded:\n{}",
            kmsd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn last_denial(kmsd: &Kmsd) -> serde_json::Value {
    std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["decision"] == "deny")
        .expect("a denial record")
}

// A policy's @rate on a key: the fourth signature within the second is
// refused with the key-rate device error, and signing works again once
// the bucket refills.
#[test]
fn key_rate_exceeded_then_recovered() {
    let kmsd = Kmsd::start();
    policy(
        &kmsd,
        "@id(\"all-at-3-per-second\") @rate(\"3/s\")\npermit (principal, action, resource);\n",
    );
    session(&kmsd, |_, s| {
        let k = signing_key(s);
        for _ in 0..3 {
            assert_eq!(sign(s, k), "Ok");
        }
        assert_eq!(sign(s, k), "FunctionFailed");
        assert_eq!(s.get_session_info().unwrap().device_error(), KEY_RATE);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(sign(s, k), "Ok");
    });
    let rec = last_denial(&kmsd);
    assert_eq!(rec["reason"], "quota", "{rec}");
    assert_eq!(rec["policy"], "key rate 3/s", "{rec}");
    assert_eq!(rec["rv"], "CKR_FUNCTION_FAILED", "{rec}");
}

// A policy's @daily_limit: the third signature of the day is refused with
// the daily-limit device error, and still is after kmsd restarts.
#[test]
fn daily_limit_reached_and_kept_across_restart() {
    let mut kmsd = Kmsd::start();
    policy(
        &kmsd,
        "@daily_limit(\"2\")\npermit (principal, action, resource);\n",
    );
    session(&kmsd, |_, s| {
        let k = signing_key(s);
        assert_eq!(sign(s, k), "Ok");
        assert_eq!(sign(s, k), "Ok");
        assert_eq!(sign(s, k), "FunctionFailed");
        assert_eq!(s.get_session_info().unwrap().device_error(), DAILY_LIMIT);
    });
    kmsd.restart();
    session(&kmsd, |_, s| {
        let k = s
            .find_objects(&[Attribute::Label("q".into()), Attribute::Sign(true)])
            .unwrap()[0];
        assert_eq!(sign(s, k), "FunctionFailed");
    });
    assert_eq!(last_denial(&kmsd)["policy"], "daily limit 2");
    // The key's uses today, as /metrics shows them.
    let (code, metrics) = kmsd.admin_api("dev-auditor", "GET", "/metrics", None, &[]);
    assert_eq!(code, 200, "{metrics}");
    let used: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kmsd_key_uses_today{"))
        .collect();
    assert_eq!(used.len(), 1, "{metrics}");
    assert!(used[0].ends_with(" 2"), "{}", used[0]);
    assert!(
        metrics.contains("kmsd_quota_daily_limit_per_key 10000"),
        "{metrics}"
    );
}

// `[quotas] identity_rate`: the identity's judged calls beyond it are
// refused with the identity-rate device error.
#[test]
fn identity_rate_from_config() {
    let kmsd =
        Kmsd::start_edited(|t, _| kmsp11_tests::set_in(&t, "quotas", "identity_rate = \"3/m\""));
    session(&kmsd, |_, s| {
        // C_Login was the first judged call, key generation the second.
        let k = signing_key(s);
        assert_eq!(sign(s, k), "Ok");
        assert_eq!(sign(s, k), "FunctionFailed");
        assert_eq!(s.get_session_info().unwrap().device_error(), IDENTITY_RATE);
    });
    assert_eq!(last_denial(&kmsd)["policy"], "identity rate 3/m");
}
