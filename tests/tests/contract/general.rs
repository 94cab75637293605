//! General-purpose functions (§5.4) and the functions no studied client
//! calls: each answers exactly as the backend does.

use cryptoki::context::{CInitializeArgs, CInitializeFlags};
use kmsp11_tests::raw;

use crate::fixture::{ck, contract, rv};

// Expect CKR_CRYPTOKI_ALREADY_INITIALIZED for a second C_Initialize.
#[test]
fn initialize_twice() {
    contract("initialize_twice", |t, side, _| {
        t.rec(
            "second initialize",
            rv(&side
                .p
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))),
        );
    });
}

/// The functions no studied client calls answer exactly what SoftHSM
/// answers (its CKR_FUNCTION_NOT_SUPPORTED included).
#[test]
fn rarely_used_functions() {
    contract("rarely_used_functions", |t, side, s| {
        let (f, k) = (side.raw.f, &side.keys());
        let h = s.handle();
        let mut buf = [0u8; 512];
        let mut n: raw::CK_ULONG = buf.len() as raw::CK_ULONG;
        let (mut m, mut sha) = (
            raw::mechanism(raw::CKM_RSA_PKCS),
            raw::mechanism(raw::CKM_SHA256),
        );
        unsafe {
            t.rec("C_GetFunctionStatus", ck(f.C_GetFunctionStatus.unwrap()(h)));
            t.rec("C_CancelFunction", ck(f.C_CancelFunction.unwrap()(h)));
            t.rec(
                "C_GetOperationState",
                ck(f.C_GetOperationState.unwrap()(
                    h,
                    std::ptr::null_mut(),
                    &mut n,
                )),
            );
            t.rec(
                "C_SetOperationState",
                ck(f.C_SetOperationState.unwrap()(
                    h,
                    buf.as_mut_ptr(),
                    16,
                    0,
                    0,
                )),
            );
            let mut size: raw::CK_ULONG = 0;
            t.rec(
                "C_GetObjectSize",
                ck(f.C_GetObjectSize.unwrap()(h, k.rsa_pub.handle(), &mut size)),
            );
            t.rec(
                "C_SignRecoverInit",
                ck(f.C_SignRecoverInit.unwrap()(h, &mut m, k.rsa_priv.handle())),
            );
            n = buf.len() as raw::CK_ULONG;
            t.rec(
                "C_SignRecover",
                ck(f.C_SignRecover.unwrap()(
                    h,
                    buf.as_mut_ptr(),
                    4,
                    buf.as_mut_ptr(),
                    &mut n,
                )),
            );
            t.rec(
                "C_VerifyRecoverInit",
                ck(f.C_VerifyRecoverInit.unwrap()(
                    h,
                    &mut m,
                    k.rsa_pub.handle(),
                )),
            );
            n = buf.len() as raw::CK_ULONG;
            t.rec(
                "C_VerifyRecover",
                ck(f.C_VerifyRecover.unwrap()(
                    h,
                    buf.as_mut_ptr(),
                    256,
                    buf.as_mut_ptr(),
                    &mut n,
                )),
            );
            t.rec(
                "C_DigestInit for C_DigestKey",
                ck(f.C_DigestInit.unwrap()(h, &mut sha)),
            );
            t.rec(
                "C_DigestKey (extractable AES key)",
                ck(f.C_DigestKey.unwrap()(h, k.aes_small.handle())),
            );
            n = 32;
            t.rec(
                "C_DigestFinal after C_DigestKey",
                ck(f.C_DigestFinal.unwrap()(h, buf.as_mut_ptr(), &mut n)),
            );
            for (name, call) in [
                ("C_DigestEncryptUpdate", f.C_DigestEncryptUpdate.unwrap()),
                ("C_DecryptDigestUpdate", f.C_DecryptDigestUpdate.unwrap()),
                ("C_SignEncryptUpdate", f.C_SignEncryptUpdate.unwrap()),
                ("C_DecryptVerifyUpdate", f.C_DecryptVerifyUpdate.unwrap()),
            ] {
                n = 16;
                t.rec(
                    name,
                    ck(call(
                        h,
                        buf.as_mut_ptr(),
                        16,
                        buf.as_mut_ptr().add(256),
                        &mut n,
                    )),
                );
            }
            let mut slot: raw::CK_SLOT_ID = 0;
            t.rec(
                "C_WaitForSlotEvent(CKF_DONT_BLOCK)",
                ck(f.C_WaitForSlotEvent.unwrap()(
                    raw::CKF_DONT_BLOCK,
                    &mut slot,
                    std::ptr::null_mut(),
                )),
            );
        }
    });
}
