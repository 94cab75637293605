//! The C ABI: the only room with `unsafe` in the library. Caller pointers
//! become values only through the checked helpers in [`ptr`]; every exported
//! function is a thin shell around [`guard`], which catches panics so that
//! none ever crosses into the host application.
#![allow(unsafe_code)]
// CK_ULONG is u64 on LP64 and u32 on LLP64: the casts are the portable form.
#![allow(clippy::unnecessary_cast)]

pub mod convert;
pub mod functions;
pub mod ptr;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pkcs11_sys::*;

use crate::error::Result;

/// Runs a function body: a panic becomes `CKR_GENERAL_ERROR`, an error its `CK_RV`.
pub fn guard(name: &'static str, f: impl FnOnce() -> Result<CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(rv)) => rv,
        Ok(Err(e)) => {
            tracing::debug!(call = name, "{e}");
            if let crate::Error::Transport(_)
            | crate::Error::Unreachable(_)
            | crate::Error::Protocol(_) = e
            {
                eprintln!("libkmsp11: {name}: {e}");
            }
            e.into()
        }
        Err(_) => {
            eprintln!("libkmsp11: {name}: internal error (caught; the application is unaffected)");
            CKR_GENERAL_ERROR
        }
    }
}

/// The function list: a non-`mut` static, version 2.40.
pub static FUNCTION_LIST: CK_FUNCTION_LIST = functions::LIST;

/// The one interface we offer: "PKCS 11", version 2.40, no flags.
pub struct Interface(pub CK_INTERFACE);
// SAFETY: the interface only points at immutable statics.
unsafe impl Sync for Interface {}

pub static INTERFACE_NAME: &[u8] = b"PKCS 11\0";
pub static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_CHAR,
    pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as CK_VOID_PTR,
    flags: 0,
});
