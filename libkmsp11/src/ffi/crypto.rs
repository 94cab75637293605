//! Encryption, decryption, message digesting, signing, verification,
//! dual-function operations and random numbers (PKCS#11 3.0 §5.8-§5.15).
//! Most of these calls share four shapes; their shells come from the call
//! table. The rest are below.

use pkcs11_sys::*;

use super::ptr::bytes_in;
use super::{export, mechanism_of, ok};
use crate::api::crypto as api;
use crate::error::Error;

kmsp11_proto::calls!(chapter_shells, crypto);
use super::chapter_shells;

export! {
    /// C_DigestInit (§5.10).
    fn C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR) |c| {
        // SAFETY: mechanism per the spec.
        ok(api::digest_init(c, hSession, unsafe { mechanism_of(c, pMechanism) }?))
    }

    /// C_DigestKey (§5.10).
    fn C_DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE) |c| {
        ok(api::digest_key(c, hSession, hKey))
    }

    /// C_Verify (§5.12).
    fn C_Verify(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) |c| {
        // SAFETY: lengths per the spec.
        let (d, s) = unsafe { (bytes_in(pData, ulDataLen)?, bytes_in(pSignature, ulSignatureLen)?) };
        ok(api::verify(c, hSession, d, s))
    }

    /// C_GenerateRandom (§5.15).
    fn C_GenerateRandom(hSession: CK_SESSION_HANDLE, RandomData: CK_BYTE_PTR, ulRandomLen: CK_ULONG) |c| {
        if RandomData.is_null() && ulRandomLen > 0 {
            return Err(Error::ArgumentsBad("NULL RandomData"));
        }
        let d = api::generate_random(c, hSession, ulRandomLen as u64)?;
        // SAFETY: the caller's buffer holds `ulRandomLen` == d.len() bytes (checked in api).
        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), RandomData, d.len()) };
        Ok(CKR_OK)
    }
}
