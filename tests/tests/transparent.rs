//! Transparent mode (every backend slot 1:1, SO functions forwarded when
//! configured), context rejoin after kmsd closed an idle connection, and the
//! login state of several applications over one backend login. The tests
//! that load libkmsp11 (a process-wide singleton) take turns.
#![allow(clippy::undocumented_unsafe_blocks)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::sync::{Mutex, MutexGuard};

use kmsp11_tests::raw;
use kmsp11_tests::wire::Wire;
use kmsp11_tests::{Kmsd, PIN, SO_PIN};

static LIBRARY: Mutex<()> = Mutex::new(());

/// The library, initialised against a transparent kmsd, for one test at a time.
struct Lib {
    p: Pkcs11,
    kmsd: Kmsd,
    _cfg: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

fn library() -> Lib {
    let one = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
    let kmsd = transparent_kmsd();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = kmsd.client_config_as(tmp.path(), None);
    std::env::set_var("KMSP11_CONFIG", &cfg);
    let p = Pkcs11::new(kmsp11_tests::libkmsp11()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    Lib {
        p,
        kmsd,
        _cfg: tmp,
        _one: one,
    }
}

impl Drop for Lib {
    fn drop(&mut self) {
        // `Pkcs11::finalize` consumes it: finalise the same module directly.
        let raw = kmsp11_tests::raw::Raw::open(&kmsp11_tests::libkmsp11());
        unsafe { raw.f.C_Finalize.unwrap()(std::ptr::null_mut()) };
    }
}

fn slots_and_labels(p: &Pkcs11) -> Vec<(u64, String)> {
    p.get_all_slots()
        .unwrap()
        .into_iter()
        .map(|s| {
            let label = p
                .get_token_info(s)
                .map(|t| t.label().to_string())
                .unwrap_or_default();
            (s.id(), label)
        })
        .collect()
}

// Transparent mode shows the backend's slots with their own ids and labels.
#[test]
fn slots_are_the_backends() {
    let lib = library();
    std::env::set_var("SOFTHSM2_CONF", lib.kmsd.softhsm_conf());
    let direct = Pkcs11::new(kmsp11_tests::softhsm_module()).unwrap();
    direct
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let expected = slots_and_labels(&direct);
    direct.finalize().unwrap();
    assert_eq!(slots_and_labels(&lib.p), expected);
}

// kmsd closes an idle connection (after 1 s here); the library reconnects
// and rejoins its context: same session, same handle, still logged in.
#[test]
fn a_reconnecting_library_rejoins_its_context() {
    let lib = library();
    let s = lib
        .p
        .open_rw_session(kmsp11_tests::slot_by_label(&lib.p, "dev-a"))
        .unwrap();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let o = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(vec![1, 2, 3]),
        ])
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        s.get_attributes(o, &[cryptoki::object::AttributeType::Value])
            .unwrap(),
        vec![Attribute::Value(vec![1, 2, 3])]
    );
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap()
        .contains(&o));
}

// An application that exits without C_Finalize (libp11 and Java never call
// it): after the grace period kmsd closes its sessions.
#[test]
fn sessions_of_a_vanished_client_are_closed() {
    let lib = library();
    let a = kmsp11_tests::slot_by_label(&lib.p, "dev-a");
    let raw = kmsp11_tests::raw::Raw::open(&kmsp11_tests::libkmsp11());
    let child = unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let f = raw.f;
            let mut ok = f.C_Initialize.unwrap()(std::ptr::null_mut()) == 0;
            for _ in 0..3 {
                let mut h = 0;
                ok &= f.C_OpenSession.unwrap()(a.id() as _, 4, std::ptr::null_mut(), None, &mut h)
                    == 0;
            }
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(libc::WEXITSTATUS(status), 0);
        pid
    };
    lib.kmsd.wait_for_log(
        &["context expired", &format!("pid={child} sessions=3")],
        std::time::Duration::from_secs(30),
    );
}

// A token whose PIN kmsd does not hold: the parent logs in, and a forked
// child that initialises again logs in too (its own context), as against
// SoftHSM direct.
#[test]
fn a_forked_child_logs_in_again() {
    let lib = library();
    let b = kmsp11_tests::slot_by_label(&lib.p, "dev-b");
    let parent = lib.p.open_ro_session(b).unwrap();
    parent
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let raw = kmsp11_tests::raw::Raw::open(&kmsp11_tests::libkmsp11());
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let f = raw.f;
            let mut rv = f.C_Initialize.unwrap()(std::ptr::null_mut());
            let mut h = 0;
            if rv == 0 {
                rv = f.C_OpenSession.unwrap()(b.id() as _, 4, std::ptr::null_mut(), None, &mut h);
            }
            if rv == 0 {
                rv = f.C_Login.unwrap()(h, raw::CKU_USER, PIN.as_ptr() as *mut u8, PIN.len() as _);
            }
            f.C_Finalize.unwrap()(std::ptr::null_mut());
            libc::_exit(if rv == 0 { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the forked child could not log in"
        );
    }
}

// SO functions are forwarded when configured: initialise the free slot,
// set its user PIN, log in with it, change it, use it.
#[test]
fn so_functions_are_forwarded() {
    let lib = library();
    let p = &lib.p;
    let free = p
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| !p.get_token_info(*s).unwrap().token_initialized())
        .unwrap();
    p.init_token(free, &AuthPin::new(SO_PIN.into()), "adm-token")
        .unwrap();
    let s = p.open_rw_session(free).unwrap();
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))
        .unwrap();
    s.init_pin(&AuthPin::new("111111".into())).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&AuthPin::new("111111".into())))
        .unwrap();
    s.set_pin(
        &AuthPin::new("111111".into()),
        &AuthPin::new("222222".into()),
    )
    .unwrap();
    assert_eq!(s.digest(&Mechanism::Sha256, b"abc").unwrap().len(), 32);
}

/// kmsd in transparent mode over the dev setup: SO functions forwarded,
/// the PIN of `dev-a` held by kmsd and that of `dev-b` not, connections
/// closed after one idle second, contexts kept four.
fn transparent_kmsd() -> Kmsd {
    Kmsd::start_edited(|dev, _| {
        let kms_b = "[[token]]\nlabel = \"kms-b\"\nbackend_label = \"dev-b\"\npin_file = \"softhsm/backend-pin\"\n";
        assert!(dev.contains(kms_b), "the dev configuration changed: {dev}");
        let t = dev
            .replace(kms_b, "")
            .replace(
                "mode = \"virtual\"",
                "mode = \"transparent\"\nallow_so_functions = true",
            )
            .replace("tokens = [\"kms-a\", \"kms-b\"]", "tokens = [\"*\"]");
        kmsp11_tests::set_in(
            &t,
            "listen",
            "idle_timeout_secs = 1\ncontext_grace_secs = 4",
        )
    })
}

/// The backend slot of the token labelled `label`, as a wire client sees it.
fn slot_of(w: &mut Wire, label: &str) -> Option<u64> {
    use kmsp11_proto::{Body, Request};
    let Body::Slots(slots) = w
        .call(Request::GetSlotList(kmsp11_proto::GetSlotList {
            token_present: false,
        }))
        .body
    else {
        panic!("no slot list")
    };
    slots.into_iter().find(|s| {
        match w
            .call(Request::GetTokenInfo(kmsp11_proto::GetTokenInfo {
                slot: *s,
            }))
            .body
        {
            Body::TokenInfo(t) => String::from_utf8_lossy(&t.label).trim_end() == label,
            _ => false,
        }
    })
}

fn wire_login(w: &mut Wire, slot: u64, pin: &str) -> (u64, u64) {
    let s = w.open_session(slot, raw::CKF_RW_SESSION);
    (s, w.login(s, pin))
}

/// Creating a private object: CKR_OK only while the session is logged in.
fn private_object_rv(w: &mut Wire, s: u64) -> u64 {
    use kmsp11_proto::{AttrValue, Attribute, Request};
    w.call(Request::CreateObject(kmsp11_proto::CreateObject {
        session: s,
        template: Some(vec![
            Attribute {
                kind: raw::CKA_CLASS,
                value: AttrValue::Ulong(raw::CKO_DATA),
            },
            Attribute {
                kind: raw::CKA_PRIVATE,
                value: AttrValue::Bytes(vec![1]),
            },
        ]),
    }))
    .rv
}

// While one application was logged in on a token whose PIN kmsd does not
// hold, every other application's C_Login got CKR_USER_ALREADY_LOGGED_IN.
// Each application now has its own login over the backend's one.
#[test]
fn two_applications_log_in_independently() {
    let kmsd = transparent_kmsd();
    let mut a = Wire::connect(&kmsd);
    a.hello(None);
    let slot = slot_of(&mut a, "dev-b").expect("dev-b");
    let (sa, rv) = wire_login(&mut a, slot, PIN);
    assert_eq!(rv, raw::CKR_OK, "{}", raw::rv_name(rv));
    let mut b = Wire::connect(&kmsd);
    b.hello(None);
    let (sb, rv) = wire_login(&mut b, slot, PIN);
    assert_eq!(rv, raw::CKR_OK, "second application: {}", raw::rv_name(rv));
    let mut c = Wire::connect(&kmsd);
    c.hello(None);
    let (sc, rv) = wire_login(&mut c, slot, "000000");
    assert_eq!(rv, raw::CKR_PIN_INCORRECT, "{}", raw::rv_name(rv));
    assert_eq!(private_object_rv(&mut c, sc), raw::CKR_USER_NOT_LOGGED_IN);
    // A logs out: B stays logged in.
    assert_eq!(a.logout(sa), raw::CKR_OK);
    assert_eq!(private_object_rv(&mut a, sa), raw::CKR_USER_NOT_LOGGED_IN);
    assert_eq!(private_object_rv(&mut b, sb), raw::CKR_OK);
    // B logs out: the backend is logged out, and checks the next PIN itself.
    assert_eq!(b.logout(sb), raw::CKR_OK);
    let rv = c.login(sc, PIN);
    assert_eq!(rv, raw::CKR_OK, "{}", raw::rv_name(rv));
}

// The backend's slot list was read once at start: a token initialised
// later stayed invisible until kmsd restarted. kmsd now reads the list again
// on every C_GetSlotList. SoftHSM 2.6 reports a token initialised through
// kmsd (C_InitToken) at once, with the new free slot it adds; it reads its
// token directory only at C_Initialize, so a token another program
// initialised appears after kmsd restarts.
#[test]
fn tokens_initialised_later_appear() {
    use kmsp11_proto::{Body, Pin, Request};
    let mut kmsd = transparent_kmsd();
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let all = |w: &mut Wire| match w
        .call(Request::GetSlotList(kmsp11_proto::GetSlotList {
            token_present: false,
        }))
        .body
    {
        Body::Slots(s) => s,
        b => panic!("{b:?}"),
    };
    let before = all(&mut w);
    let free = slot_of(&mut w, "").expect("a free slot");
    let mut label = [b' '; 32];
    label[..4].copy_from_slice(b"late");
    let rv = w
        .call(Request::InitToken(kmsp11_proto::InitToken {
            slot: free,
            pin: Some(Pin::new(SO_PIN.as_bytes().to_vec())),
            label: label.to_vec(),
        }))
        .rv;
    assert_eq!(rv, raw::CKR_OK, "{}", raw::rv_name(rv));
    assert_eq!(slot_of(&mut w, "late"), Some(free));
    assert_eq!(
        all(&mut w).len(),
        before.len() + 1,
        "the backend's new free slot is listed"
    );
    // Another program initialises the new free slot.
    let out = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "elsewhere",
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ])
        .env("SOFTHSM2_CONF", kmsd.softhsm_conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kmsd.restart();
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    assert!(
        slot_of(&mut w, "elsewhere").is_some(),
        "listed after a restart"
    );
}
