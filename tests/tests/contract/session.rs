//! Session management (§5.6): login state, session states, handles that
//! belong to the application, keys that need a context-specific login.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kmsp11_tests::{raw, PIN};

use crate::fixture::{ck, contract, rv, P256};

fn state(s: &cryptoki::session::Session) -> String {
    format!("{:?}", s.get_session_info().map(|i| i.session_state()))
}

// Private objects are invisible before login; a wrong PIN is
// CKR_PIN_INCORRECT; a second login CKR_USER_ALREADY_LOGGED_IN.
#[test]
fn login_and_logout() {
    let proxy = contract("login_and_logout", |t, side, s| {
        let private_keys = || {
            s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .map(|v| v.len())
        };
        let old_key = side.keys().rsa_priv;
        let private_data = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Private(true),
            Attribute::Label(b"private-session-data".to_vec()),
        ];
        s.create_object(&private_data).unwrap();
        t.rec("logout", rv(&s.logout()));
        // Expect CKR_USER_NOT_LOGGED_IN from C_Logout when not logged in
        // (SoftHSM 2.6 answers CKR_OK): the spec's answer, not compared.
        t.spec.push(rv(&s.logout()));
        t.rec("private keys before login", private_keys());
        t.rec("session state before login", state(s));
        let login = |pin: &str| s.login(UserType::User, Some(&AuthPin::new(pin.into())));
        t.rec("wrong pin", rv(&login("000000")));
        t.rec("login", rv(&login(PIN)));
        t.rec("login again", rv(&login(PIN)));
        t.rec("session state after login", state(s));
        let ro = side.p.open_ro_session(side.slot).unwrap();
        t.rec("ro session state", state(&ro));
        t.rec("private keys after login", private_keys().map(|n| n > 0));
        // Expect the application's handles to private objects invalid after a
        // logout, even once logged in again, and its private session objects
        // destroyed.
        t.rec(
            "old private key handle",
            rv(&s.get_attributes(old_key, &[cryptoki::object::AttributeType::Label])),
        );
        t.rec(
            "private session object after logout",
            s.find_objects(&private_data[2..]).map(|v| v.len()),
        );
        side.restore_keys();
    });
    assert_eq!(
        proxy.spec,
        ["UserNotLoggedIn"],
        "the proxy follows the spec where SoftHSM is lax"
    );
}

// Handles are the application's: a key used in one session works in another.
#[test]
fn handles_across_sessions() {
    contract("handles_across_sessions", |t, side, s| {
        let k = &side.keys();
        let s2 = side.p.open_ro_session(side.slot).unwrap();
        let sig = s2.sign(&Mechanism::Ecdsa, k.ec_priv, &[7u8; 32]);
        t.rec("sign in a second session", rv(&sig));
        t.rec(
            "verify in the first session",
            rv(&s.verify(&Mechanism::Ecdsa, k.ec_pub, &[7u8; 32], &sig.unwrap())),
        );
    });
}

/// A key with CKA_ALWAYS_AUTHENTICATE: each use needs a context-specific
/// login between C_SignInit and C_Sign (PKCS#11 3.0 §4.9, §5.6).
#[test]
fn always_authenticate() {
    contract("always_authenticate", |t, side, s| {
        let raw = &side.raw;
        let (_, key) = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[Attribute::EcParams(P256.to_vec()), Attribute::Verify(true)],
                &[Attribute::Sign(true), Attribute::AlwaysAuthenticate(true)],
            )
            .unwrap();
        let h = s.handle();
        let login = |pin: &str| unsafe {
            raw.f.C_Login.unwrap()(
                h,
                raw::CKU_CONTEXT_SPECIFIC,
                pin.as_ptr() as *mut u8,
                pin.len() as _,
            )
        };
        t.rec(
            "always-authenticate sign init",
            ck(raw.sign_init(h, raw::CKM_ECDSA, key.handle())),
        );
        // Expect CKR_PIN_INCORRECT for a wrong PIN; the operation stays.
        t.rec("context-specific login, wrong pin", ck(login("000000")));
        t.rec("context-specific login", ck(login(PIN)));
        let (rv, n, _) = raw.sign(h, &[1u8; 32], Some(64));
        t.rec("always-authenticate sign", (ck(rv), n));
        // The next use needs its own login.
        t.rec(
            "sign init again",
            ck(raw.sign_init(h, raw::CKM_ECDSA, key.handle())),
        );
        let (rv, _, _) = raw.sign(h, &[1u8; 32], Some(64));
        t.rec("sign without context-specific login", ck(rv));
    });
}
