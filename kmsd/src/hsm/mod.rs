#![allow(unsafe_code)]
// CK_ULONG is u64 on LP64 and u32 on LLP64: the casts are the portable form.
#![allow(clippy::unnecessary_cast)]
//! The raw PKCS#11 backend (DESIGN.md decision 11): the HSM's module loaded
//! with `libloading`, its `CK_FUNCTION_LIST` called with `pkcs11-sys` types.
//!
//! This is kmsd's only room with `unsafe`. Every pointer handed to the module
//! points into a buffer owned by the caller's stack frame ([`marshal`]), and
//! every output buffer is sized by the caller, so the module's exact `CK_RV`
//! and length semantics reach the client unchanged.

/// Calls one function of the module's list; a missing entry is `CKR_FUNCTION_NOT_SUPPORTED`.
macro_rules! call {
    ($self:expr, $name:ident $(, $arg:expr)* $(,)?) => {{
        // SAFETY: `fns` is the module's own list, valid while `_lib` is loaded.
        match unsafe { (*$self.fns).$name } {
            // SAFETY: every pointer argument is built by the caller from a live,
            // correctly sized buffer (see the `marshal` module) or is NULL where
            // the spec allows it.
            Some(f) => unsafe { f($($arg),*) },
            None => CKR_FUNCTION_NOT_SUPPORTED,
        }
    }};
}

/// [`call!`] whose CK_RV becomes `Ok(())` or an error naming the function.
macro_rules! checked {
    ($self:expr, $name:ident $(, $arg:expr)* $(,)?) => {
        $crate::error::Error::check(stringify!($name), call!($self, $name $(, $arg)*))
    };
}

pub mod marshal;

mod crypto;
mod keymgmt;
mod object;
mod session;
mod slot_token;

use std::path::Path;
use std::ptr;

use kmsp11_proto::{self as proto, CallId, OutBuf};
use pkcs11_sys::*;

pub use marshal::{CMechanism, CTemplate};

/// Output buffers are capped at the frame limit: nothing larger can travel back.
pub const MAX_OUT: u64 = proto::MAX_PAYLOAD as u64 - 4096;
/// Output capacity a client may claim beyond its input before kmsd asks the
/// module for the real length first: allocation follows the answer, not the claim.
const OUT_SLACK: usize = 64 << 10;
/// `C_GetAttributeValue` buffers a client may claim in total before kmsd
/// asks the module for the lengths first.
const ATTR_CLAIM: u64 = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load PKCS#11 module {path}: {source}")]
    Load {
        path: String,
        source: libloading::Error,
    },
    #[error("PKCS#11 module {0} has no usable C_GetFunctionList")]
    NoFunctionList(String),
    #[error("{call} failed with CK_RV {rv:#x}")]
    Call { call: &'static str, rv: CK_RV },
}

/// A loaded and initialised PKCS#11 module.
pub struct Backend {
    fns: *const CK_FUNCTION_LIST,
    /// The module speaks Cryptoki 3.x (some structures changed layout).
    v3: bool,
    _lib: libloading::Library,
}

// SAFETY: the module is initialised with CKF_OS_LOCKING_OK, which obliges it
// to be safe for concurrent calls from several threads; the function list is
// immutable and lives as long as `_lib`.
unsafe impl Send for Backend {}
// SAFETY: as above.
unsafe impl Sync for Backend {}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend")
    }
}

/// Result of a call that writes a byte buffer: `(rv, length, bytes)`.
pub type Output = (CK_RV, u64, Option<Vec<u8>>);

type DataOutPtr = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    CK_BYTE_PTR,
    CK_ULONG,
    CK_BYTE_PTR,
    CK_ULONG_PTR,
) -> CK_RV;
type OutOnlyPtr = unsafe extern "C" fn(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR) -> CK_RV;
type DataInPtr = unsafe extern "C" fn(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG) -> CK_RV;
type OpInitPtr =
    unsafe extern "C" fn(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) -> CK_RV;

/// Keeps `$e` for a row of the wanted shape, `None` for the others.
macro_rules! pick {
    (OpInit, OpInit, $e:expr) => {
        $e
    };
    (DataOut, DataOut, $e:expr) => {
        $e
    };
    (OutOnly, OutOnly, $e:expr) => {
        $e
    };
    (DataIn, DataIn, $e:expr) => {
        $e
    };
    ($a:ident, $b:ident, $e:expr) => {
        None
    };
}

/// The module's entry for each call of a shared shape, from proto's call
/// table: one lookup function per shape.
macro_rules! entries {
    (() $([$id:literal $v:ident $h:ident $c:ident $ch:ident $p:ident])*) => {
        entries!(@lookup op_init_fn OpInitPtr OpInit $([$v $c $p])*);
        entries!(@lookup data_out_fn DataOutPtr DataOut $([$v $c $p])*);
        entries!(@lookup out_only_fn OutOnlyPtr OutOnly $([$v $c $p])*);
        entries!(@lookup data_in_fn DataInPtr DataIn $([$v $c $p])*);
    };
    (@lookup $name:ident $ty:ident $shape:ident $([$v:ident $c:ident $p:ident])*) => {
        impl Backend {
            fn $name(&self, call: CallId) -> Option<$ty> {
                // SAFETY: the module's own list, valid while `_lib` is loaded.
                let f = unsafe { &*self.fns };
                match call {
                    $( CallId::$v => pick!($p, $shape, f.$c), )*
                }
            }
        }
    };
}

kmsp11_proto::calls!(entries);

impl Backend {
    /// Loads the module and calls `C_Initialize` with `CKF_OS_LOCKING_OK`.
    pub fn load(path: &Path) -> Result<Backend, HsmError> {
        let shown = path.display().to_string();
        // SAFETY: loading a PKCS#11 module runs its initialisers; the operator
        // names the module in kmsd's config, which is the trust decision.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|source| HsmError::Load {
            path: shown.clone(),
            source,
        })?;
        // SAFETY: the symbol has the C_GetFunctionList signature by the PKCS#11 ABI.
        let get: libloading::Symbol<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV> =
            unsafe { lib.get(b"C_GetFunctionList\0") }
                .map_err(|_| HsmError::NoFunctionList(shown.clone()))?;
        let mut fns: CK_FUNCTION_LIST_PTR = ptr::null_mut();
        // SAFETY: `fns` is a valid out-pointer.
        let rv = unsafe { get(&mut fns) };
        if rv != CKR_OK || fns.is_null() {
            return Err(HsmError::NoFunctionList(shown));
        }
        let mut backend = Backend {
            fns,
            v3: false,
            _lib: lib,
        };
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        let rv = call!(backend, C_Initialize, &mut args as *mut _ as CK_VOID_PTR);
        if rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED {
            return Err(HsmError::Call {
                call: "C_Initialize",
                rv,
            });
        }
        let (rv, info) = backend.info();
        backend.v3 = rv == CKR_OK && info.cryptokiVersion.major >= 3;
        Ok(backend)
    }

    pub fn v3(&self) -> bool {
        self.v3
    }

    pub fn info(&self) -> (CK_RV, CK_INFO) {
        let mut info = CK_INFO::default();
        let rv = call!(self, C_GetInfo, &mut info);
        (rv, info)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = call!(self, C_Finalize, ptr::null_mut());
    }
}

/// A call that creates one object, given where the module writes its handle.
fn made(
    f: impl FnOnce(&mut CK_OBJECT_HANDLE) -> Result<(), crate::error::Error>,
) -> Result<crate::handles::BObject, crate::error::Error> {
    let mut h: CK_OBJECT_HANDLE = 0;
    f(&mut h)?;
    Ok(crate::handles::BObject(h))
}

/// Whether a `C_GetAttributeValue` result still carries per-attribute answers.
fn per_attribute(rv: CK_RV) -> bool {
    matches!(
        rv,
        CKR_OK | CKR_ATTRIBUTE_SENSITIVE | CKR_ATTRIBUTE_TYPE_INVALID | CKR_BUFFER_TOO_SMALL
    )
}

/// Runs a call with an output buffer as the client asked for one: `NULL`
/// stays `NULL` (a length query), a buffer stays a buffer. A capacity far
/// beyond the input (`input + OUT_SLACK`) is first checked with a length
/// query, which the spec lets any such call answer without ending the
/// operation, so that memory follows the module's answer, not the claim.
/// The module decides length semantics and whether the operation stays active.
fn with_out(
    out: OutBuf,
    input: usize,
    mut f: impl FnMut(CK_BYTE_PTR, CK_ULONG_PTR) -> CK_RV,
) -> Output {
    let Some(cap) = out else {
        let mut n: CK_ULONG = 0;
        let rv = f(ptr::null_mut(), &mut n);
        return (rv, n, None);
    };
    let mut cap = cap.min(MAX_OUT) as usize;
    if cap > input.saturating_add(OUT_SLACK) {
        let mut n: CK_ULONG = 0;
        let rv = f(ptr::null_mut(), &mut n);
        if rv != CKR_OK {
            return (rv, n, None);
        }
        cap = cap.min(n as usize);
    }
    let mut buf = vec![0u8; cap];
    let mut n: CK_ULONG = buf.len() as CK_ULONG;
    let rv = f(buf.as_mut_ptr(), &mut n);
    if rv == CKR_OK && (n as usize) <= buf.len() {
        buf.truncate(n as usize);
        (rv, n, Some(buf))
    } else {
        (rv, n, None)
    }
}
