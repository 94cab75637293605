//! The library never writes past a caller's buffer, whatever kmsd answers,
//! and answers as SoftHSM does. Loads libkmsp11 (a process-wide singleton):
//! one test function per behaviour, each against SoftHSM direct and the proxy
//! in turn, serialised by a lock.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::path::Path;
use std::ptr;
use std::sync::Mutex;

use kmsp11_tests::raw::*;
use kmsp11_tests::{Kmsd, PIN};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `f` on a logged-in R/W session of `module`, initialised and finalised around it.
fn with_session<T>(module: &Path, label: &str, f: impl FnOnce(&Raw, CK_SESSION_HANDLE) -> T) -> T {
    let raw = Raw::open(module);
    let p = raw.f;
    unsafe {
        assert_eq!(p.C_Initialize.unwrap()(ptr::null_mut()), CKR_OK);
        let mut n: CK_ULONG = 16;
        let mut slots = [0 as CK_SLOT_ID; 16];
        assert_eq!(
            p.C_GetSlotList.unwrap()(1, slots.as_mut_ptr(), &mut n),
            CKR_OK
        );
        let slot = slots[..n as usize]
            .iter()
            .copied()
            .find(|s| {
                let mut ti = CK_TOKEN_INFO::default();
                p.C_GetTokenInfo.unwrap()(*s, &mut ti) == CKR_OK
                    && String::from_utf8_lossy(&ti.label).trim_end() == label
            })
            .expect("token");
        let mut s = 0;
        assert_eq!(
            p.C_OpenSession.unwrap()(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                ptr::null_mut(),
                None,
                &mut s
            ),
            CKR_OK
        );
        assert_eq!(
            p.C_Login.unwrap()(s, CKU_USER, PIN.as_ptr() as *mut u8, PIN.len() as CK_ULONG),
            CKR_OK
        );
        let out = f(&raw, s);
        p.C_CloseSession.unwrap()(s);
        assert_eq!(p.C_Finalize.unwrap()(ptr::null_mut()), CKR_OK);
        out
    }
}

/// Both sides: SoftHSM direct on a fresh store, then the proxy.
fn both<T: std::fmt::Debug + PartialEq>(f: impl Fn(&Raw, CK_SESSION_HANDLE) -> T) -> T {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let conf = kmsp11_tests::softhsm_store(&tmp.path().join("direct"), &["dev-a"]);
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let direct = with_session(&kmsp11_tests::softhsm_module(), "dev-a", &f);
    let kmsd = Kmsd::start();
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let proxy = with_session(&kmsp11_tests::libkmsp11(), "kms-a", &f);
    assert_eq!(direct, proxy, "SoftHSM direct and the proxy differ");
    proxy
}

// An application that reuses a template after a failed C_GetAttributeValue
// (ulValueLen left at CK_UNAVAILABLE_INFORMATION) on an object destroyed in
// between once had 16 MiB written into its 16-byte buffer. SoftHSM writes
// nothing and answers CKR_OBJECT_HANDLE_INVALID.
#[test]
fn a_stale_template_is_never_overrun() {
    let (rv, len) = both(|raw, s| unsafe {
        let p = raw.f;
        let mut value = [7u8; 32];
        let mut class = CKO_DATA;
        let mut no: CK_BBOOL = 0;
        let mut t = [
            attr(CKA_CLASS, &mut class),
            attr(CKA_TOKEN, &mut no),
            attr_bytes(CKA_VALUE, &mut value),
        ];
        let mut o = 0;
        assert_eq!(
            p.C_CreateObject.unwrap()(s, t.as_mut_ptr(), 3, &mut o),
            CKR_OK
        );
        assert_eq!(p.C_DestroyObject.unwrap()(s, o), CKR_OK);
        // 16 bytes of buffer followed by a canary, declared as "unavailable" (-1).
        let mut buf = [0xAAu8; 64];
        let mut q = [CK_ATTRIBUTE {
            ulValueLen: CK_UNAVAILABLE_INFORMATION,
            ..attr_bytes(CKA_VALUE, &mut buf)
        }];
        let rv = p.C_GetAttributeValue.unwrap()(s, o, q.as_mut_ptr(), 1);
        assert!(
            buf.iter().all(|b| *b == 0xAA),
            "the buffer was written: {}",
            rv_name(rv)
        );
        (rv_name(rv), q[0].ulValueLen)
    });
    assert_eq!(rv, rv_name(CKR_OBJECT_HANDLE_INVALID));
    assert_eq!(
        len, CK_UNAVAILABLE_INFORMATION,
        "the template is left as it was"
    );
}

// Expect CKR_ATTRIBUTE_VALUE_INVALID for a CKA_WRAP_TEMPLATE whose length is
// no multiple of CK_ATTRIBUTE: its bytes (the application's pointers) are
// never sent.
#[test]
fn a_template_attribute_of_the_wrong_length_is_refused() {
    let rv = both(|raw, s| unsafe {
        let mut len: CK_ULONG = 32;
        let mut bogus = [0x10u8; 20];
        let mut t = [
            attr(CKA_VALUE_LEN, &mut len),
            attr_bytes(CKA_WRAP_TEMPLATE, &mut bogus),
        ];
        let mut m = mechanism(CKM_AES_KEY_GEN);
        let mut h = 0;
        rv_name(raw.f.C_GenerateKey.unwrap()(
            s,
            &mut m,
            t.as_mut_ptr(),
            2,
            &mut h,
        ))
    });
    assert_eq!(rv, rv_name(CKR_ATTRIBUTE_VALUE_INVALID));
}
