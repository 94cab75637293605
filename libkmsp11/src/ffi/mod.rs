//! The C ABI: the only room with `unsafe` in the library. One file per spec
//! chapter, the same names as `api/`, `proto` and kmsd's `ops/`. Every
//! exported function is a thin shell: a panic guard, the initialised/fork
//! check (once), the caller's pointers turned into values through the
//! checked helpers in [`ptr`] and [`convert`], one call into `api`, and the
//! CK_RV. The shells of calls that share a shape (`OpInit`, `DataOut`,
//! `OutOnly`, `DataIn`, `SessionOnly`) are generated from proto's call table.
#![allow(unsafe_code)]
// CK_ULONG is u64 on LP64 and u32 on LLP64: the casts are the portable form.
#![allow(clippy::unnecessary_cast)]
// The safety contract of each exported function is the PKCS#11 specification's.
#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod convert;
pub mod crypto;
pub mod general;
pub mod keymgmt;
pub mod list;
pub mod mechanism;
pub mod object;
pub mod ptr;
pub mod session;
pub mod slot_token;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pkcs11_sys::*;

use crate::client::Client;
use crate::error::{Error, Result};

/// Runs a function body: a panic becomes `CKR_GENERAL_ERROR`, an error its
/// `CK_RV`, with one log line.
pub fn guard(name: &'static str, f: impl FnOnce() -> Result<CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(rv)) => rv,
        Ok(Err(e)) => {
            tracing::debug!(call = name, "{e}");
            if let Error::Transport(_) | Error::Unreachable(_) | Error::Protocol(_) = e {
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

/// [`guard`] for a function that needs the initialised library: the
/// initialised/fork check runs once, before any pointer is looked at.
pub fn with_client(name: &'static str, f: impl FnOnce(&Client) -> Result<CK_RV>) -> CK_RV {
    guard(name, || {
        let c = crate::api::client()?;
        f(&c)
    })
}

/// The body of a call that creates one object: a non-NULL handle pointer,
/// then the call, then the handle written back.
pub(super) fn creates(ph: CK_OBJECT_HANDLE_PTR, f: impl FnOnce() -> Result<u64>) -> Result<CK_RV> {
    if ph.is_null() {
        return Err(Error::ArgumentsBad("NULL object handle pointer"));
    }
    let h = f()?;
    // SAFETY: checked non-NULL; writable by the caller's contract.
    unsafe { ptr::put(ph, h as CK_OBJECT_HANDLE) }?;
    Ok(CKR_OK)
}

/// A mechanism, its vendor parameters judged by what kmsd told this client.
///
/// # Safety
/// As [`mechanism::mechanism`].
pub unsafe fn mechanism_of(c: &Client, p: *const CK_MECHANISM) -> Result<kmsp11_proto::Mechanism> {
    // SAFETY: forwarded caller contract.
    unsafe { mechanism::mechanism(p, |m| c.raw_vendor(m)) }
}

pub fn version(v: &kmsp11_proto::Version) -> CK_VERSION {
    CK_VERSION {
        major: v.major,
        minor: v.minor,
    }
}

/// `CKR_OK` for an `api` call that answers nothing else.
pub fn ok(r: Result<()>) -> Result<CK_RV> {
    r.map(|_| CKR_OK)
}

/// One exported function for a call of a shared shape; nothing for the others.
macro_rules! shell {
    ($v:ident, $c:ident, OpInit) => {
        #[no_mangle]
        pub unsafe extern "C" fn $c(
            hSession: CK_SESSION_HANDLE,
            pMechanism: CK_MECHANISM_PTR,
            hKey: CK_OBJECT_HANDLE,
        ) -> CK_RV {
            $crate::ffi::with_client(stringify!($c), |c| {
                // SAFETY: the mechanism per the spec.
                let mechanism = unsafe { $crate::ffi::mechanism_of(c, pMechanism) }?;
                $crate::ffi::ok($crate::api::rv_only(
                    c,
                    kmsp11_proto::Request::$v(kmsp11_proto::OpInit {
                        session: hSession,
                        mechanism,
                        key: hKey,
                    }),
                ))
            })
        }
    };
    ($v:ident, $c:ident, DataOut) => {
        #[no_mangle]
        pub unsafe extern "C" fn $c(
            hSession: CK_SESSION_HANDLE,
            pIn: CK_BYTE_PTR,
            ulInLen: CK_ULONG,
            pOut: CK_BYTE_PTR,
            pulOutLen: CK_ULONG_PTR,
        ) -> CK_RV {
            $crate::ffi::with_client(stringify!($c), |c| {
                // SAFETY: the buffers per the spec.
                let (data, out) = unsafe {
                    (
                        $crate::ffi::ptr::bytes_in(pIn, ulInLen)?,
                        $crate::ffi::ptr::out_buf(pOut, pulOutLen)?,
                    )
                };
                let r = $crate::api::output(
                    c,
                    kmsp11_proto::Request::$v(kmsp11_proto::DataOut {
                        session: hSession,
                        data,
                        out,
                    }),
                )?;
                // SAFETY: the buffer described by `out`.
                Ok(unsafe { $crate::ffi::ptr::write_out(pOut, pulOutLen, out, r) })
            })
        }
    };
    ($v:ident, $c:ident, OutOnly) => {
        #[no_mangle]
        pub unsafe extern "C" fn $c(
            hSession: CK_SESSION_HANDLE,
            pOut: CK_BYTE_PTR,
            pulOutLen: CK_ULONG_PTR,
        ) -> CK_RV {
            $crate::ffi::with_client(stringify!($c), |c| {
                // SAFETY: the buffer per the spec.
                let out = unsafe { $crate::ffi::ptr::out_buf(pOut, pulOutLen) }?;
                let r = $crate::api::output(
                    c,
                    kmsp11_proto::Request::$v(kmsp11_proto::OutOnly {
                        session: hSession,
                        out,
                    }),
                )?;
                // SAFETY: the buffer described by `out`.
                Ok(unsafe { $crate::ffi::ptr::write_out(pOut, pulOutLen, out, r) })
            })
        }
    };
    ($v:ident, $c:ident, DataIn) => {
        #[no_mangle]
        pub unsafe extern "C" fn $c(
            hSession: CK_SESSION_HANDLE,
            pIn: CK_BYTE_PTR,
            ulInLen: CK_ULONG,
        ) -> CK_RV {
            $crate::ffi::with_client(stringify!($c), |c| {
                // SAFETY: `ulInLen` bytes at `pIn`.
                let data = unsafe { $crate::ffi::ptr::bytes_in(pIn, ulInLen) }?;
                $crate::ffi::ok($crate::api::rv_only(
                    c,
                    kmsp11_proto::Request::$v(kmsp11_proto::DataIn {
                        session: hSession,
                        data,
                    }),
                ))
            })
        }
    };
    ($v:ident, $c:ident, SessionOnly) => {
        #[no_mangle]
        pub unsafe extern "C" fn $c(hSession: CK_SESSION_HANDLE) -> CK_RV {
            $crate::ffi::with_client(stringify!($c), |c| {
                $crate::ffi::ok($crate::api::rv_only(
                    c,
                    kmsp11_proto::Request::$v(kmsp11_proto::SessionOnly { session: hSession }),
                ))
            })
        }
    };
    ($v:ident, $c:ident, $other:ident) => {};
}
pub(crate) use shell;

/// The generated shells of one chapter, from proto's call table:
/// `kmsp11_proto::calls!(chapter_shells, crypto);` in `ffi/crypto.rs`.
macro_rules! chapter_shells {
    (($chapter:ident) $([$id:literal $v:ident $h:ident $cf:ident $ch:ident $p:ident])*) => {
        $( kmsp11_proto::when!($ch, $chapter, $crate::ffi::shell!($v, $cf, $p);); )*
    };
}
pub(crate) use chapter_shells;

/// The one interface we offer: "PKCS 11", version 2.40, no flags.
pub struct Interface(pub CK_INTERFACE);
// SAFETY: the interface only points at immutable statics.
unsafe impl Sync for Interface {}

pub static INTERFACE_NAME: &[u8] = b"PKCS 11\0";
pub static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_CHAR,
    pFunctionList: &list::FUNCTION_LIST as *const CK_FUNCTION_LIST as CK_VOID_PTR,
    flags: 0,
});
