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

/// The body of a call that answers one value through a pointer (a handle,
/// an info structure, a size): the pointer is checked non-NULL before the
/// call is made, the value written after.
pub(super) fn answer<T>(p: *mut T, f: impl FnOnce() -> Result<T>) -> Result<CK_RV> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL output pointer"));
    }
    let v = f()?;
    // SAFETY: checked non-NULL; writable by the caller's contract.
    unsafe { ptr::put(p, v) }?;
    Ok(CKR_OK)
}

/// Exported PKCS#11 functions, each named once. Every one becomes
/// `#[no_mangle] pub unsafe extern "C" fn … -> CK_RV` whose body, returning
/// `Result<CK_RV>`, runs inside [`with_client`] when it names the client
/// (`fn C_X(…) |c| { … }`), inside [`guard`] alone when it does not.
macro_rules! export {
    () => {};
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) |$c:pat_param| $body:block $($rest:tt)*) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> CK_RV {
            $crate::ffi::with_client(stringify!($name), |$c| $body)
        }
        $crate::ffi::export!($($rest)*);
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block $($rest:tt)*) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> CK_RV {
            $crate::ffi::guard(stringify!($name), || $body)
        }
        $crate::ffi::export!($($rest)*);
    };
}
pub(crate) use export;

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

/// The body of a call that answers bytes the PKCS#11 way (§5.2: a NULL
/// buffer asks for the length, a short one is `CKR_BUFFER_TOO_SMALL`): the
/// caller's capacity read, the call made with it, the answer written within
/// it.
///
/// # Safety
/// `out` and `len` as the spec has them for an output buffer.
pub unsafe fn output(
    out: CK_BYTE_PTR,
    len: CK_ULONG_PTR,
    call: impl FnOnce(Option<u64>) -> Result<crate::api::Output>,
) -> Result<CK_RV> {
    // SAFETY: forwarded caller contract.
    let cap = unsafe { ptr::out_buf(out, len) }?;
    let r = call(cap)?;
    // SAFETY: the buffer described by `cap`.
    Ok(unsafe { ptr::write_out(out, len, cap, r) })
}

/// `CKR_OK` for an `api` call that answers nothing else.
pub fn ok(r: Result<()>) -> Result<CK_RV> {
    r.map(|_| CKR_OK)
}

/// One exported function for a call of a shared shape; nothing for the others.
macro_rules! shell {
    ($v:ident, $c:ident, OpInit) => {
        $crate::ffi::export! {
            fn $c(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) |c| {
                // SAFETY: the mechanism per the spec.
                let mechanism = unsafe { $crate::ffi::mechanism_of(c, pMechanism) }?;
                let op = kmsp11_proto::OpInit { session: hSession, mechanism, key: hKey };
                $crate::ffi::ok($crate::api::rv_only(c, kmsp11_proto::Request::$v(op)))
            }
        }
    };
    ($v:ident, $c:ident, DataOut) => {
        $crate::ffi::export! {
            fn $c(hSession: CK_SESSION_HANDLE, pIn: CK_BYTE_PTR, ulInLen: CK_ULONG, pOut: CK_BYTE_PTR, pulOutLen: CK_ULONG_PTR) |c| {
                // SAFETY: the buffers per the spec.
                let data = unsafe { $crate::ffi::ptr::bytes_in(pIn, ulInLen) }?;
                let op = |out| kmsp11_proto::Request::$v(kmsp11_proto::DataOut { session: hSession, data, out });
                // SAFETY: the output buffer per the spec.
                unsafe { $crate::ffi::output(pOut, pulOutLen, |cap| $crate::api::output(c, op(cap))) }
            }
        }
    };
    ($v:ident, $c:ident, OutOnly) => {
        $crate::ffi::export! {
            fn $c(hSession: CK_SESSION_HANDLE, pOut: CK_BYTE_PTR, pulOutLen: CK_ULONG_PTR) |c| {
                let op = |out| kmsp11_proto::Request::$v(kmsp11_proto::OutOnly { session: hSession, out });
                // SAFETY: the output buffer per the spec.
                unsafe { $crate::ffi::output(pOut, pulOutLen, |cap| $crate::api::output(c, op(cap))) }
            }
        }
    };
    ($v:ident, $c:ident, DataIn) => {
        $crate::ffi::export! {
            fn $c(hSession: CK_SESSION_HANDLE, pIn: CK_BYTE_PTR, ulInLen: CK_ULONG) |c| {
                // SAFETY: `ulInLen` bytes at `pIn`.
                let data = unsafe { $crate::ffi::ptr::bytes_in(pIn, ulInLen) }?;
                let op = kmsp11_proto::DataIn { session: hSession, data };
                $crate::ffi::ok($crate::api::rv_only(c, kmsp11_proto::Request::$v(op)))
            }
        }
    };
    ($v:ident, $c:ident, SessionOnly) => {
        $crate::ffi::export! {
            fn $c(hSession: CK_SESSION_HANDLE) |c| {
                let op = kmsp11_proto::SessionOnly { session: hSession };
                $crate::ffi::ok($crate::api::rv_only(c, kmsp11_proto::Request::$v(op)))
            }
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
