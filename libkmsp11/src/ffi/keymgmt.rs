//! Key management (PKCS#11 3.0 §5.18).

use pkcs11_sys::*;

use super::convert::template;
use super::ptr::{bytes_in, put};
use super::{answer, export, mechanism_of, output};
use crate::api::keymgmt as api;
use crate::error::Error;

export! {
    /// C_GenerateKey (§5.18).
    fn C_GenerateKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) |c| {
        answer(phKey, || {
            // SAFETY: mechanism and template per the spec.
            let (m, t) = unsafe { (mechanism_of(c, pMechanism)?, template(pTemplate, ulCount)?) };
            Ok(api::generate_key(c, hSession, m, t)? as CK_OBJECT_HANDLE)
        })
    }

    /// C_GenerateKeyPair (§5.18).
    fn C_GenerateKeyPair(
        hSession: CK_SESSION_HANDLE,
        pMechanism: CK_MECHANISM_PTR,
        pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
        ulPublicKeyAttributeCount: CK_ULONG,
        pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
        ulPrivateKeyAttributeCount: CK_ULONG,
        phPublicKey: CK_OBJECT_HANDLE_PTR,
        phPrivateKey: CK_OBJECT_HANDLE_PTR,
    ) |c| {
        if phPublicKey.is_null() || phPrivateKey.is_null() {
            return Err(Error::ArgumentsBad("NULL key handle pointer"));
        }
        // SAFETY: mechanism and templates per the spec.
        let (m, pu, pr) = unsafe {
            let pu = template(pPublicKeyTemplate, ulPublicKeyAttributeCount)?;
            (mechanism_of(c, pMechanism)?, pu, template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)?)
        };
        let (a, b) = api::generate_key_pair(c, hSession, m, pu, pr)?;
        // SAFETY: checked non-NULL.
        unsafe {
            put(phPublicKey, a as CK_OBJECT_HANDLE)?;
            put(phPrivateKey, b as CK_OBJECT_HANDLE)?;
        }
        Ok(CKR_OK)
    }

    /// C_WrapKey (§5.18).
    fn C_WrapKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hWrappingKey: CK_OBJECT_HANDLE, hKey: CK_OBJECT_HANDLE, pWrappedKey: CK_BYTE_PTR, pulWrappedKeyLen: CK_ULONG_PTR) |c| {
        // SAFETY: mechanism per the spec.
        let m = unsafe { mechanism_of(c, pMechanism) }?;
        // SAFETY: the output buffer per the spec.
        unsafe { output(pWrappedKey, pulWrappedKeyLen, |cap| api::wrap_key(c, hSession, m, hWrappingKey, hKey, cap)) }
    }

    /// C_UnwrapKey (§5.18).
    fn C_UnwrapKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: CK_MECHANISM_PTR,
        hUnwrappingKey: CK_OBJECT_HANDLE,
        pWrappedKey: CK_BYTE_PTR,
        ulWrappedKeyLen: CK_ULONG,
        pTemplate: CK_ATTRIBUTE_PTR,
        ulAttributeCount: CK_ULONG,
        phKey: CK_OBJECT_HANDLE_PTR,
    ) |c| {
        answer(phKey, || {
            // SAFETY: pointers per the spec.
            let (m, w, t) = unsafe {
                (mechanism_of(c, pMechanism)?, bytes_in(pWrappedKey, ulWrappedKeyLen)?, template(pTemplate, ulAttributeCount)?)
            };
            Ok(api::unwrap_key(c, hSession, m, hUnwrappingKey, w, t)? as CK_OBJECT_HANDLE)
        })
    }

    /// C_DeriveKey (§5.18).
    fn C_DeriveKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hBaseKey: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulAttributeCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) |c| {
        answer(phKey, || {
            // SAFETY: mechanism and template per the spec.
            let (m, t) = unsafe { (mechanism_of(c, pMechanism)?, template(pTemplate, ulAttributeCount)?) };
            Ok(api::derive_key(c, hSession, m, hBaseKey, t)? as CK_OBJECT_HANDLE)
        })
    }
}
