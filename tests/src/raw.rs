//! Raw access to a module's function list, for checks the typed `cryptoki`
//! API hides (length queries, `CKR_BUFFER_TOO_SMALL`, per-attribute
//! lengths, the 40-byte `CK_GCM_PARAMS`). Loading the same path as
//! `cryptoki` gives the same module instance.
#![allow(unsafe_code)]

use std::path::Path;
use std::ptr;

pub use pkcs11_sys::*;

/// Per attribute: `ulValueLen` and the bytes filled, if any.
pub type AttrResults = Vec<(u64, Option<Vec<u8>>)>;

/// A call of the `C_Sign` shape: its CK_RV, `*pulLen`, and the bytes written.
pub type Out = (CK_RV, usize, Vec<u8>);

pub struct Raw {
    pub f: &'static CK_FUNCTION_LIST,
    _lib: libloading::Library,
}

impl Raw {
    pub fn open(path: &Path) -> Raw {
        unsafe {
            let lib = libloading::Library::new(path).unwrap();
            let get: libloading::Symbol<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV> =
                lib.get(b"C_GetFunctionList\0").unwrap();
            let mut p: CK_FUNCTION_LIST_PTR = ptr::null_mut();
            assert_eq!(get(&mut p), CKR_OK);
            Raw { f: &*p, _lib: lib }
        }
    }

    /// C_Digest with a caller buffer of `cap` bytes, or NULL for `None`.
    pub fn digest(&self, s: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Out {
        Self::data_out(self.f.C_Digest.unwrap(), s, data, cap)
    }

    pub fn digest_init(&self, s: CK_SESSION_HANDLE, mech: CK_MECHANISM_TYPE) -> CK_RV {
        unsafe { self.f.C_DigestInit.unwrap()(s, &mut mechanism(mech)) }
    }

    /// C_Sign with a caller buffer of `cap` bytes, or NULL.
    pub fn sign(&self, s: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Out {
        Self::data_out(self.f.C_Sign.unwrap(), s, data, cap)
    }

    /// Any call of the `C_Sign` shape: `(rv, *pulLen, bytes written)`.
    fn data_out(
        f: unsafe extern "C" fn(
            CK_SESSION_HANDLE,
            CK_BYTE_PTR,
            CK_ULONG,
            CK_BYTE_PTR,
            CK_ULONG_PTR,
        ) -> CK_RV,
        s: CK_SESSION_HANDLE,
        data: &[u8],
        cap: Option<usize>,
    ) -> Out {
        let mut buf = vec![0u8; cap.unwrap_or(0)];
        let mut n = buf.len() as CK_ULONG;
        let out = if cap.is_some() {
            buf.as_mut_ptr()
        } else {
            ptr::null_mut()
        };
        let rv = unsafe {
            f(
                s,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                out,
                &mut n,
            )
        };
        buf.truncate((n as usize).min(buf.len()));
        (rv, n as usize, buf)
    }

    pub fn sign_init(
        &self,
        s: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        unsafe { self.f.C_SignInit.unwrap()(s, &mut mechanism(mech), key) }
    }

    /// C_GetAttributeValue with one buffer per attribute (`None` = NULL
    /// pValue): returns the CK_RV, each ulValueLen, and the filled bytes.
    pub fn attributes(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        q: &[(CK_ATTRIBUTE_TYPE, Option<usize>)],
    ) -> (CK_RV, AttrResults) {
        let mut bufs: Vec<Option<Vec<u8>>> =
            q.iter().map(|(_, c)| c.map(|n| vec![0u8; n])).collect();
        let mut t: Vec<CK_ATTRIBUTE> = q
            .iter()
            .zip(bufs.iter_mut())
            .map(|((k, _), b)| match b {
                Some(b) => attr_bytes(*k, b),
                None => attr_null(*k),
            })
            .collect();
        let rv = unsafe {
            self.f.C_GetAttributeValue.unwrap()(s, o, t.as_mut_ptr(), t.len() as CK_ULONG)
        };
        let out = t
            .iter()
            .zip(bufs)
            .map(|(a, b)| {
                let len = a.ulValueLen;
                let v = b
                    .filter(|_| len != CK_UNAVAILABLE_INFORMATION)
                    .map(|mut b| {
                        b.truncate(len as usize);
                        b
                    });
                (len, v)
            })
            .collect();
        (rv, out)
    }

    /// AES-GCM encrypt with the 40-byte `CK_GCM_PARAMS` (no ulIvBits) or the 48-byte one.
    pub fn gcm_encrypt_init(
        &self,
        s: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: &mut [u8],
        aad: &mut [u8],
        with_iv_bits: bool,
    ) -> CK_RV {
        self.gcm_init(self.f.C_EncryptInit.unwrap(), s, key, iv, aad, with_iv_bits)
    }

    /// AES-GCM decrypt with the 48-byte `CK_GCM_PARAMS` and a 128-bit tag.
    pub fn gcm_decrypt_init(
        &self,
        s: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: &mut [u8],
        aad: &mut [u8],
    ) -> CK_RV {
        self.gcm_init(self.f.C_DecryptInit.unwrap(), s, key, iv, aad, true)
    }

    fn gcm_init(
        &self,
        init: unsafe extern "C" fn(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) -> CK_RV,
        s: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: &mut [u8],
        aad: &mut [u8],
        with_iv_bits: bool,
    ) -> CK_RV {
        #[repr(C)]
        struct Gcm40 {
            iv: *mut u8,
            iv_len: CK_ULONG,
            aad: *mut u8,
            aad_len: CK_ULONG,
            tag_bits: CK_ULONG,
        }
        let mut p48 = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: iv.len() as CK_ULONG,
            ulIvBits: (iv.len() * 8) as CK_ULONG,
            pAAD: aad.as_mut_ptr(),
            ulAADLen: aad.len() as CK_ULONG,
            ulTagBits: 128,
        };
        let mut p40 = Gcm40 {
            iv: iv.as_mut_ptr(),
            iv_len: iv.len() as CK_ULONG,
            aad: aad.as_mut_ptr(),
            aad_len: aad.len() as CK_ULONG,
            tag_bits: 128,
        };
        let mut m = if with_iv_bits {
            with_param(CKM_AES_GCM, &mut p48)
        } else {
            with_param(CKM_AES_GCM, &mut p40)
        };
        unsafe { init(s, &mut m, key) }
    }

    /// C_Decrypt with a caller buffer of `cap` bytes, or NULL.
    pub fn decrypt(&self, s: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Out {
        Self::data_out(self.f.C_Decrypt.unwrap(), s, data, cap)
    }

    pub fn encrypt(&self, s: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, Vec<u8>) {
        let mut buf = vec![0u8; data.len() + 64];
        let mut n = buf.len() as CK_ULONG;
        let rv = unsafe {
            self.f.C_Encrypt.unwrap()(
                s,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                buf.as_mut_ptr(),
                &mut n,
            )
        };
        buf.truncate(n as usize);
        (rv, buf)
    }
}

/// A mechanism without a parameter.
pub fn mechanism(mechanism: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    }
}

/// A mechanism whose parameter is `p`, its length `size_of::<T>()`.
pub fn with_param<T>(mechanism: CK_MECHANISM_TYPE, p: &mut T) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism,
        pParameter: (p as *mut T).cast(),
        ulParameterLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

/// An attribute whose value is `v`, its length `size_of::<T>()`.
pub fn attr<T>(type_: CK_ATTRIBUTE_TYPE, v: &mut T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_,
        pValue: (v as *mut T).cast(),
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

/// An attribute whose value is the bytes of `b`.
pub fn attr_bytes(type_: CK_ATTRIBUTE_TYPE, b: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_,
        pValue: b.as_mut_ptr().cast(),
        ulValueLen: b.len() as CK_ULONG,
    }
}

/// An attribute with a NULL value: a length query.
pub fn attr_null(type_: CK_ATTRIBUTE_TYPE) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_,
        pValue: ptr::null_mut(),
        ulValueLen: 0,
    }
}

/// A CK_RV by its name, for failure messages: `CKR_MECHANISM_PARAM_INVALID (0x71)`.
pub fn rv_name(rv: CK_RV) -> String {
    format!("{} ({rv:#x})", kmsd::error::rv_name(rv))
}
