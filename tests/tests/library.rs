//! libkmsp11's own rules: initialisation, interfaces, fork, concurrency.
//! One test function: the library is a process-wide singleton.
#![allow(
    clippy::undocumented_unsafe_blocks,
    clippy::manual_c_str_literals,
    clippy::manual_dangling_ptr
)]

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kmsp11_tests::raw::{self, Raw};
use kmsp11_tests::{Kmsd, PIN};

#[test]
fn library_rules() {
    let kmsd = Kmsd::start();
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let lib = kmsp11_tests::libkmsp11();
    let raw = Raw::open(&lib);
    let f = raw.f;
    unsafe {
        // Expect CKR_CRYPTOKI_NOT_INITIALIZED for any call before C_Initialize.
        let mut n: raw::CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n),
            raw::CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Finalize.unwrap()(ptr::null_mut()),
            raw::CKR_CRYPTOKI_NOT_INITIALIZED
        );
        // Expect CKR_ARGUMENTS_BAD if pReserved is not NULL.
        let mut args = raw::CK_C_INITIALIZE_ARGS {
            flags: raw::CKF_OS_LOCKING_OK,
            pReserved: 1 as *mut _,
            ..Default::default()
        };
        assert_eq!(
            f.C_Initialize.unwrap()((&mut args as *mut raw::CK_C_INITIALIZE_ARGS).cast()),
            raw::CKR_ARGUMENTS_BAD
        );
        // Expect CKR_ARGUMENTS_BAD when only some mutex callbacks are given.
        unsafe extern "C" fn create(_: raw::CK_VOID_PTR_PTR) -> raw::CK_RV {
            0
        }
        let mut args = raw::CK_C_INITIALIZE_ARGS {
            CreateMutex: Some(create),
            ..Default::default()
        };
        assert_eq!(
            f.C_Initialize.unwrap()((&mut args as *mut raw::CK_C_INITIALIZE_ARGS).cast()),
            raw::CKR_ARGUMENTS_BAD
        );
        // NSS and GnuTLS: the library must work without creating threads.
        let mut args = raw::CK_C_INITIALIZE_ARGS {
            flags: raw::CKF_OS_LOCKING_OK | raw::CKF_LIBRARY_CANT_CREATE_OS_THREADS,
            ..Default::default()
        };
        assert_eq!(
            f.C_Initialize.unwrap()((&mut args as *mut raw::CK_C_INITIALIZE_ARGS).cast()),
            raw::CKR_OK
        );
        assert_eq!(
            f.C_Initialize.unwrap()(ptr::null_mut()),
            raw::CKR_CRYPTOKI_ALREADY_INITIALIZED
        );
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n),
            raw::CKR_OK
        );
        assert_eq!(n, 2, "two virtual tokens");
        // Expect CKR_SLOT_ID_INVALID for an unknown slot.
        let mut ti = raw::CK_TOKEN_INFO::default();
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(0x1234_5678, &mut ti),
            raw::CKR_SLOT_ID_INVALID
        );
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(0, ptr::null_mut()),
            raw::CKR_ARGUMENTS_BAD
        );
        // Bad pointers and lengths are CKR_ARGUMENTS_BAD, never a crash.
        let mut s: raw::CK_SESSION_HANDLE = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(
                0,
                raw::CKF_SERIAL_SESSION,
                ptr::null_mut(),
                None,
                ptr::null_mut()
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(0, raw::CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut s),
            raw::CKR_OK
        );
        assert_eq!(
            f.C_Login.unwrap()(s, raw::CKU_USER, ptr::null_mut(), 6),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(s, ptr::null_mut(), 3),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_DigestInit.unwrap()(s, ptr::null_mut()),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut m = raw::CK_MECHANISM {
            mechanism: raw::CKM_SHA256,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(f.C_DigestInit.unwrap()(s, &mut m), raw::CKR_OK);
        assert_eq!(
            f.C_Digest.unwrap()(
                s,
                b"abc".as_ptr() as *mut u8,
                3,
                ptr::null_mut(),
                ptr::null_mut()
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut out = [0u8; 32];
        let mut olen: raw::CK_ULONG = 32;
        assert_eq!(
            f.C_Digest.unwrap()(
                s,
                b"abc".as_ptr() as *mut u8,
                3,
                out.as_mut_ptr(),
                &mut olen
            ),
            raw::CKR_OK
        );
        // Expect CKR_SESSION_HANDLE_INVALID for a session that does not exist.
        assert_eq!(
            f.C_CloseSession.unwrap()(0xdead_beef),
            raw::CKR_SESSION_HANDLE_INVALID
        );
        // C_WaitForSlotEvent answers as SoftHSM does (not supported), never hangs.
        let mut slot: raw::CK_SLOT_ID = 0;
        assert_eq!(
            f.C_WaitForSlotEvent.unwrap()(0, &mut slot, ptr::null_mut()),
            raw::CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(f.C_CloseSession.unwrap()(s), raw::CKR_OK);
        assert_eq!(f.C_Finalize.unwrap()(1 as *mut _), raw::CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_Finalize.unwrap()(ptr::null_mut()), raw::CKR_OK);
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n),
            raw::CKR_CRYPTOKI_NOT_INITIALIZED
        );
    }
    interfaces(&lib);
    missing_config(&raw);

    // The typed API from here on.
    let p = Pkcs11::new(&lib).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let (_, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Token(true),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    fork_child_must_reinitialise(&raw);
    concurrency(&p, slot, ec);
    drop(s);
    p.finalize().unwrap();
}

fn interfaces(lib: &std::path::Path) {
    unsafe {
        let l = libloading::Library::new(lib).unwrap();
        type GetIf = unsafe extern "C" fn(
            *mut u8,
            *mut raw::CK_VERSION,
            *mut raw::CK_INTERFACE_PTR,
            raw::CK_FLAGS,
        ) -> raw::CK_RV;
        type GetList =
            unsafe extern "C" fn(raw::CK_INTERFACE_PTR, *mut raw::CK_ULONG) -> raw::CK_RV;
        let get: libloading::Symbol<GetIf> = l.get(b"C_GetInterface\0").unwrap();
        let list: libloading::Symbol<GetList> = l.get(b"C_GetInterfaceList\0").unwrap();
        let mut i: raw::CK_INTERFACE_PTR = ptr::null_mut();
        assert_eq!(
            get(b"PKCS 11\0".as_ptr() as *mut u8, ptr::null_mut(), &mut i, 0),
            raw::CKR_OK
        );
        let fl = (*i).pFunctionList as *const raw::CK_FUNCTION_LIST;
        assert_eq!(((*fl).version.major, (*fl).version.minor), (2, 40));
        assert_eq!(
            get(ptr::null_mut(), ptr::null_mut(), &mut i, 0),
            raw::CKR_OK
        );
        // NSS asks for a fork-safe interface first and for its vendor interface: both not offered.
        assert_eq!(
            get(
                b"PKCS 11\0".as_ptr() as *mut u8,
                ptr::null_mut(),
                &mut i,
                raw::CKF_INTERFACE_FORK_SAFE
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            get(
                b"Vendor NSS FIPS Interface\0".as_ptr() as *mut u8,
                ptr::null_mut(),
                &mut i,
                0
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut v3 = raw::CK_VERSION { major: 3, minor: 0 };
        assert_eq!(
            get(ptr::null_mut(), &mut v3, &mut i, 0),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            get(ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), 0),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut n: raw::CK_ULONG = 0;
        assert_eq!(list(ptr::null_mut(), &mut n), raw::CKR_OK);
        assert_eq!(n, 1);
    }
}

/// A missing or broken config fails C_Initialize cleanly, naming the file.
fn missing_config(raw: &Raw) {
    let good = std::env::var_os("KMSP11_CONFIG").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.toml");
    std::fs::write(&bad, "endpoints = [\"127.0.0.1:1\"]\nca = 3\n").unwrap();
    for p in [tmp.path().join("missing.toml"), bad] {
        std::env::set_var("KMSP11_CONFIG", &p);
        let rv = unsafe { raw.f.C_Initialize.unwrap()(ptr::null_mut()) };
        assert_eq!(rv, raw::CKR_FUNCTION_FAILED, "{}", p.display());
    }
    // Without KMSP11_CONFIG: ~/.config/kmsp11/config.toml.
    std::env::remove_var("KMSP11_CONFIG");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".config/kmsp11")).unwrap();
    std::fs::copy(&good, home.join(".config/kmsp11/config.toml")).unwrap();
    let old_home = std::env::var_os("HOME");
    std::env::set_var("HOME", &home);
    unsafe {
        assert_eq!(
            raw.f.C_Initialize.unwrap()(ptr::null_mut()),
            raw::CKR_OK,
            "config found in ~/.config/kmsp11"
        );
        let mut n: raw::CK_ULONG = 0;
        assert_eq!(
            raw.f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n),
            raw::CKR_OK
        );
        assert_eq!(raw.f.C_Finalize.unwrap()(ptr::null_mut()), raw::CKR_OK);
    }
    match old_home {
        Some(h) => std::env::set_var("HOME", h),
        None => std::env::remove_var("HOME"),
    }
    std::env::set_var("KMSP11_CONFIG", good);
}

/// A forked child gets CKR_CRYPTOKI_NOT_INITIALIZED until it calls
/// C_Initialize itself, and then works on its own connections.
fn fork_child_must_reinitialise(raw: &Raw) {
    let f = raw.f;
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let mut n: raw::CK_ULONG = 0;
            let mut code = 0;
            if f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n)
                != raw::CKR_CRYPTOKI_NOT_INITIALIZED
            {
                code |= 1;
            }
            if f.C_Initialize.unwrap()(ptr::null_mut()) != raw::CKR_OK {
                code |= 2;
            }
            if f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n) != raw::CKR_OK || n != 2 {
                code |= 4;
            }
            let mut s: raw::CK_SESSION_HANDLE = 0;
            if f.C_OpenSession.unwrap()(0, raw::CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut s)
                != raw::CKR_OK
            {
                code |= 8;
            }
            if f.C_Finalize.unwrap()(ptr::null_mut()) != raw::CKR_OK {
                code |= 16;
            }
            libc::_exit(code);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status), "child did not exit normally");
        assert_eq!(libc::WEXITSTATUS(status), 0, "child failure bits");
        // The parent is unaffected.
        let mut n: raw::CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n),
            raw::CKR_OK
        );
    }
}

/// 8 application threads, mixed operations, 10 seconds, no error.
fn concurrency(p: &Pkcs11, slot: cryptoki::slot::Slot, ec: cryptoki::object::ObjectHandle) {
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    std::thread::scope(|sc| {
        for i in 0..8u8 {
            let ops = ops.clone();
            sc.spawn(move || {
                let s = p.open_rw_session(slot).unwrap();
                let pubk: Vec<_> = s
                    .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
                    .unwrap();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let data = [i; 32];
                    match n % 4 {
                        0 => {
                            let sig = s.sign(&Mechanism::Ecdsa, ec, &data).unwrap();
                            assert!(pubk
                                .iter()
                                .any(|k| s.verify(&Mechanism::Ecdsa, *k, &data, &sig).is_ok()));
                        }
                        1 => assert_eq!(s.digest(&Mechanism::Sha256, &data).unwrap().len(), 32),
                        2 => {
                            let mut r = [0u8; 16];
                            s.generate_random_slice(&mut r).unwrap();
                        }
                        _ => {
                            let o = s
                                .create_object(&[
                                    Attribute::Class(ObjectClass::DATA),
                                    Attribute::Value(vec![i; 4]),
                                ])
                                .unwrap();
                            s.destroy_object(o).unwrap();
                        }
                    }
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    assert!(
        ops.load(Ordering::Relaxed) > 80,
        "too few operations completed: {}",
        ops.load(Ordering::Relaxed)
    );
}
