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

pub mod marshal;

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

/// The module's entry for each call of a shared shape, from proto's call table.
macro_rules! entries {
    (() $([$id:literal $v:ident $h:ident $c:ident $ch:ident $p:ident])*) => {
        impl Backend {
            fn op_init_fn(&self, call: CallId) -> Option<OpInitPtr> {
                // SAFETY: the module's own list, valid while `_lib` is loaded.
                let f = unsafe { &*self.fns };
                match call {
                    $( CallId::$v => pick!($p, OpInit, f.$c), )*
                }
            }

            fn data_out_fn(&self, call: CallId) -> Option<DataOutPtr> {
                // SAFETY: as above.
                let f = unsafe { &*self.fns };
                match call {
                    $( CallId::$v => pick!($p, DataOut, f.$c), )*
                }
            }

            fn out_only_fn(&self, call: CallId) -> Option<OutOnlyPtr> {
                // SAFETY: as above.
                let f = unsafe { &*self.fns };
                match call {
                    $( CallId::$v => pick!($p, OutOnly, f.$c), )*
                }
            }

            fn data_in_fn(&self, call: CallId) -> Option<DataInPtr> {
                // SAFETY: as above.
                let f = unsafe { &*self.fns };
                match call {
                    $( CallId::$v => pick!($p, DataIn, f.$c), )*
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

    pub fn slot_list(&self, token_present: bool) -> (CK_RV, Vec<CK_SLOT_ID>) {
        let present = if token_present { CK_TRUE } else { CK_FALSE };
        // The list can grow between the two calls; retry until it fits.
        for _ in 0..8 {
            let mut n: CK_ULONG = 0;
            let rv = call!(self, C_GetSlotList, present, ptr::null_mut(), &mut n);
            if rv != CKR_OK {
                return (rv, vec![]);
            }
            let mut slots = vec![0; n as usize];
            let rv = call!(self, C_GetSlotList, present, slots.as_mut_ptr(), &mut n);
            if rv == CKR_BUFFER_TOO_SMALL {
                continue;
            }
            slots.truncate(n as usize);
            return (rv, slots);
        }
        (CKR_GENERAL_ERROR, vec![])
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> (CK_RV, CK_SLOT_INFO) {
        let mut info = CK_SLOT_INFO::default();
        let rv = call!(self, C_GetSlotInfo, slot, &mut info);
        (rv, info)
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> (CK_RV, CK_TOKEN_INFO) {
        let mut info = CK_TOKEN_INFO::default();
        let rv = call!(self, C_GetTokenInfo, slot, &mut info);
        (rv, info)
    }

    /// With `flags = 0` this may block in the module: callers run it on a
    /// blocking thread, one at a time (see `handlers::slot_token`).
    pub fn wait_for_slot_event(&self, flags: CK_FLAGS) -> (CK_RV, CK_SLOT_ID) {
        let mut slot: CK_SLOT_ID = 0;
        let rv = call!(self, C_WaitForSlotEvent, flags, &mut slot, ptr::null_mut());
        (rv, slot)
    }

    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> (CK_RV, Vec<CK_MECHANISM_TYPE>) {
        for _ in 0..8 {
            let mut n: CK_ULONG = 0;
            let rv = call!(self, C_GetMechanismList, slot, ptr::null_mut(), &mut n);
            if rv != CKR_OK {
                return (rv, vec![]);
            }
            let mut list = vec![0; n as usize];
            let rv = call!(self, C_GetMechanismList, slot, list.as_mut_ptr(), &mut n);
            if rv == CKR_BUFFER_TOO_SMALL {
                continue;
            }
            list.truncate(n as usize);
            return (rv, list);
        }
        (CKR_GENERAL_ERROR, vec![])
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mech: CK_MECHANISM_TYPE,
    ) -> (CK_RV, CK_MECHANISM_INFO) {
        let mut info = CK_MECHANISM_INFO::default();
        let rv = call!(self, C_GetMechanismInfo, slot, mech, &mut info);
        (rv, info)
    }

    pub fn init_token(&self, slot: CK_SLOT_ID, pin: Option<&[u8]>, label: &[u8; 32]) -> CK_RV {
        let (p, n) = marshal::opt_in(pin);
        call!(self, C_InitToken, slot, p, n, label.as_ptr() as *mut u8)
    }

    pub fn init_pin(&self, s: CK_SESSION_HANDLE, pin: Option<&[u8]>) -> CK_RV {
        let (p, n) = marshal::opt_in(pin);
        call!(self, C_InitPIN, s, p, n)
    }

    pub fn set_pin(&self, s: CK_SESSION_HANDLE, old: Option<&[u8]>, new: Option<&[u8]>) -> CK_RV {
        let (po, no) = marshal::opt_in(old);
        let (pn, nn) = marshal::opt_in(new);
        call!(self, C_SetPIN, s, po, no, pn, nn)
    }

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> (CK_RV, CK_SESSION_HANDLE) {
        let mut h: CK_SESSION_HANDLE = 0;
        let rv = call!(
            self,
            C_OpenSession,
            slot,
            flags,
            ptr::null_mut(),
            None,
            &mut h
        );
        (rv, h)
    }

    pub fn close_session(&self, s: CK_SESSION_HANDLE) -> CK_RV {
        call!(self, C_CloseSession, s)
    }

    pub fn session_info(&self, s: CK_SESSION_HANDLE) -> (CK_RV, CK_SESSION_INFO) {
        let mut info = CK_SESSION_INFO::default();
        let rv = call!(self, C_GetSessionInfo, s, &mut info);
        (rv, info)
    }

    pub fn login(&self, s: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: Option<&[u8]>) -> CK_RV {
        let (p, n) = marshal::opt_in(pin);
        call!(self, C_Login, s, user, p, n)
    }

    pub fn logout(&self, s: CK_SESSION_HANDLE) -> CK_RV {
        call!(self, C_Logout, s)
    }

    pub fn create_object(
        &self,
        s: CK_SESSION_HANDLE,
        t: &mut CTemplate,
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut h: CK_OBJECT_HANDLE = 0;
        let rv = call!(self, C_CreateObject, s, t.as_mut_ptr(), t.len(), &mut h);
        (rv, h)
    }

    pub fn copy_object(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        t: &mut CTemplate,
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut h: CK_OBJECT_HANDLE = 0;
        let rv = call!(self, C_CopyObject, s, o, t.as_mut_ptr(), t.len(), &mut h);
        (rv, h)
    }

    pub fn destroy_object(&self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> CK_RV {
        call!(self, C_DestroyObject, s, o)
    }

    pub fn object_size(&self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> (CK_RV, u64) {
        let mut n: CK_ULONG = 0;
        let rv = call!(self, C_GetObjectSize, s, o, &mut n);
        (rv, n)
    }

    /// `C_GetAttributeValue` with the caller's buffer sizes; answers one
    /// entry per query, with a value only where the module filled one. When
    /// the claimed buffers are large, the module is asked for the lengths
    /// first and buffers follow what the object holds (a claim the object
    /// cannot fill costs nothing); an answer that would not fit a frame is
    /// `CKR_DEVICE_MEMORY`. When the call fails as a whole, no answer comes
    /// back at all: the module filled nothing.
    pub fn attribute_value(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        q: &[proto::AttrQuery],
    ) -> (CK_RV, Vec<proto::AttrAnswer>) {
        let mut caps: Vec<Option<usize>> = q
            .iter()
            .map(|a| a.buf.map(|n| n.min(MAX_OUT) as usize))
            .collect();
        let claimed: u64 = caps.iter().flatten().map(|n| *n as u64).sum();
        if claimed > ATTR_CLAIM {
            let mut t: Vec<CK_ATTRIBUTE> = q
                .iter()
                .map(|a| CK_ATTRIBUTE {
                    type_: a.kind,
                    pValue: ptr::null_mut(),
                    ulValueLen: 0,
                })
                .collect();
            let rv = call!(
                self,
                C_GetAttributeValue,
                s,
                o,
                t.as_mut_ptr(),
                t.len() as CK_ULONG
            );
            if !per_attribute(rv) {
                return (rv, vec![]);
            }
            let mut total: u64 = 0;
            for (cap, a) in caps.iter_mut().zip(&t) {
                if let Some(c) = cap {
                    // A buffer shorter than the value stays as claimed: the
                    // module answers CKR_BUFFER_TOO_SMALL for it, as it would.
                    if a.ulValueLen == CK_UNAVAILABLE_INFORMATION {
                        *c = 0;
                    } else if (a.ulValueLen as u64) < *c as u64 {
                        *c = a.ulValueLen as usize;
                    }
                    total += *c as u64;
                }
            }
            if total > MAX_OUT {
                return (CKR_DEVICE_MEMORY, vec![]);
            }
        }
        let mut bufs: Vec<Option<Vec<u8>>> = caps.iter().map(|c| c.map(|n| vec![0u8; n])).collect();
        let mut t: Vec<CK_ATTRIBUTE> = q
            .iter()
            .zip(bufs.iter_mut())
            .map(|(a, b)| match b {
                Some(b) => CK_ATTRIBUTE {
                    type_: a.kind,
                    pValue: b.as_mut_ptr().cast(),
                    ulValueLen: b.len() as CK_ULONG,
                },
                None => CK_ATTRIBUTE {
                    type_: a.kind,
                    pValue: ptr::null_mut(),
                    ulValueLen: 0,
                },
            })
            .collect();
        let rv = call!(
            self,
            C_GetAttributeValue,
            s,
            o,
            t.as_mut_ptr(),
            t.len() as CK_ULONG
        );
        if !per_attribute(rv) {
            return (rv, vec![]);
        }
        let answers = t
            .iter()
            .zip(bufs)
            .map(|(a, b)| {
                let len = a.ulValueLen;
                let value = match b {
                    Some(mut b)
                        if len != CK_UNAVAILABLE_INFORMATION && (len as usize) <= b.len() =>
                    {
                        b.truncate(len as usize);
                        Some(marshal::attr_value_out(a.type_, b))
                    }
                    _ => None,
                };
                proto::AttrAnswer { len, value }
            })
            .collect();
        (rv, answers)
    }

    pub fn set_attribute_value(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        t: &mut CTemplate,
    ) -> CK_RV {
        call!(self, C_SetAttributeValue, s, o, t.as_mut_ptr(), t.len())
    }

    pub fn find_objects_init(&self, s: CK_SESSION_HANDLE, t: &mut CTemplate) -> CK_RV {
        call!(self, C_FindObjectsInit, s, t.as_mut_ptr(), t.len())
    }

    pub fn find_objects(&self, s: CK_SESSION_HANDLE, max: u64) -> (CK_RV, Vec<CK_OBJECT_HANDLE>) {
        let mut out = vec![0; max.min(1 << 16) as usize];
        let mut n: CK_ULONG = 0;
        let rv = call!(
            self,
            C_FindObjects,
            s,
            out.as_mut_ptr(),
            out.len() as CK_ULONG,
            &mut n
        );
        out.truncate((n as usize).min(out.len()));
        (rv, out)
    }

    pub fn find_objects_final(&self, s: CK_SESSION_HANDLE) -> CK_RV {
        call!(self, C_FindObjectsFinal, s)
    }

    /// A call of the `*Init` shape; a call of another shape is `CKR_FUNCTION_NOT_SUPPORTED`.
    pub fn op_init(
        &self,
        call: CallId,
        s: CK_SESSION_HANDLE,
        m: &mut CMechanism,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        match self.op_init_fn(call) {
            // SAFETY: `m` owns the mechanism and every buffer it points to.
            Some(fp) => unsafe { fp(s, m.as_mut_ptr(), key) },
            None => CKR_FUNCTION_NOT_SUPPORTED,
        }
    }

    pub fn digest_init(&self, s: CK_SESSION_HANDLE, m: &mut CMechanism) -> CK_RV {
        call!(self, C_DigestInit, s, m.as_mut_ptr())
    }

    pub fn digest_key(&self, s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
        call!(self, C_DigestKey, s, key)
    }

    /// A call of the `C_Sign` shape (input, output buffer).
    pub fn data_out(
        &self,
        call: CallId,
        s: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: OutBuf,
    ) -> Output {
        let Some(fp) = self.data_out_fn(call) else {
            return (CKR_FUNCTION_NOT_SUPPORTED, 0, None);
        };
        let (pin, nin) = marshal::opt_in(data);
        // SAFETY: input points into `data`; output as built by `with_out`.
        with_out(out, nin as usize, |p, n| unsafe { fp(s, pin, nin, p, n) })
    }

    /// A call of the `C_*Final` shape (output buffer only).
    pub fn out_only(&self, call: CallId, s: CK_SESSION_HANDLE, out: OutBuf) -> Output {
        let Some(fp) = self.out_only_fn(call) else {
            return (CKR_FUNCTION_NOT_SUPPORTED, 0, None);
        };
        // SAFETY: output as built by `with_out`.
        with_out(out, 0, |p, n| unsafe { fp(s, p, n) })
    }

    /// A call of the `C_SignUpdate` shape (input only).
    pub fn data_in(&self, call: CallId, s: CK_SESSION_HANDLE, data: Option<&[u8]>) -> CK_RV {
        let Some(fp) = self.data_in_fn(call) else {
            return CKR_FUNCTION_NOT_SUPPORTED;
        };
        let (p, n) = marshal::opt_in(data);
        // SAFETY: `p`/`n` describe `data`.
        unsafe { fp(s, p, n) }
    }

    pub fn verify(&self, s: CK_SESSION_HANDLE, data: Option<&[u8]>, sig: Option<&[u8]>) -> CK_RV {
        let (pd, nd) = marshal::opt_in(data);
        let (ps, ns) = marshal::opt_in(sig);
        call!(self, C_Verify, s, pd, nd, ps, ns)
    }

    pub fn generate_key(
        &self,
        s: CK_SESSION_HANDLE,
        m: &mut CMechanism,
        t: &mut CTemplate,
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut h: CK_OBJECT_HANDLE = 0;
        let rv = call!(
            self,
            C_GenerateKey,
            s,
            m.as_mut_ptr(),
            t.as_mut_ptr(),
            t.len(),
            &mut h
        );
        (rv, h)
    }

    pub fn generate_key_pair(
        &self,
        s: CK_SESSION_HANDLE,
        m: &mut CMechanism,
        public: &mut CTemplate,
        private: &mut CTemplate,
    ) -> (CK_RV, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
        let (mut hp, mut hq): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) = (0, 0);
        let rv = call!(
            self,
            C_GenerateKeyPair,
            s,
            m.as_mut_ptr(),
            public.as_mut_ptr(),
            public.len(),
            private.as_mut_ptr(),
            private.len(),
            &mut hp,
            &mut hq
        );
        (rv, hp, hq)
    }

    pub fn wrap_key(
        &self,
        s: CK_SESSION_HANDLE,
        m: &mut CMechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        out: OutBuf,
    ) -> Output {
        let mp = m.as_mut_ptr();
        let fp = {
            // SAFETY: reading a function pointer out of the module's list.
            unsafe { (*self.fns).C_WrapKey }
        };
        let Some(fp) = fp else {
            return (CKR_FUNCTION_NOT_SUPPORTED, 0, None);
        };
        // SAFETY: `m` owns the mechanism; output as built by `with_out`.
        with_out(out, 0, |p, n| unsafe { fp(s, mp, wrapping, key, p, n) })
    }

    pub fn unwrap_key(
        &self,
        s: CK_SESSION_HANDLE,
        m: &mut CMechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: Option<&[u8]>,
        t: &mut CTemplate,
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut h: CK_OBJECT_HANDLE = 0;
        let (pw, nw) = marshal::opt_in(wrapped);
        let rv = call!(
            self,
            C_UnwrapKey,
            s,
            m.as_mut_ptr(),
            unwrapping,
            pw,
            nw,
            t.as_mut_ptr(),
            t.len(),
            &mut h
        );
        (rv, h)
    }

    pub fn derive_key(
        &self,
        s: CK_SESSION_HANDLE,
        m: &mut CMechanism,
        base: CK_OBJECT_HANDLE,
        t: &mut CTemplate,
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut h: CK_OBJECT_HANDLE = 0;
        let rv = call!(
            self,
            C_DeriveKey,
            s,
            m.as_mut_ptr(),
            base,
            t.as_mut_ptr(),
            t.len(),
            &mut h
        );
        (rv, h)
    }

    pub fn generate_random(&self, s: CK_SESSION_HANDLE, len: u64) -> (CK_RV, Vec<u8>) {
        let mut out = vec![0u8; len.min(MAX_OUT) as usize];
        let rv = call!(
            self,
            C_GenerateRandom,
            s,
            out.as_mut_ptr(),
            out.len() as CK_ULONG
        );
        (rv, out)
    }

    pub fn function_status(&self, s: CK_SESSION_HANDLE) -> CK_RV {
        call!(self, C_GetFunctionStatus, s)
    }

    pub fn cancel_function(&self, s: CK_SESSION_HANDLE) -> CK_RV {
        call!(self, C_CancelFunction, s)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = call!(self, C_Finalize, ptr::null_mut());
    }
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
