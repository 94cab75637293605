//! Key management (PKCS#11 3.0 §5.18).

use pkcs11_sys::*;

use super::convert::template;
use super::ptr::{bytes_in, out_buf, put, write_out};
use super::{creates, mechanism_of, with_client};
use crate::api::keymgmt as api;
use crate::error::Error;

/// C_GenerateKey (§5.18).
#[no_mangle]
pub unsafe extern "C" fn C_GenerateKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_client("C_GenerateKey", |c| {
        creates(phKey, || {
            // SAFETY: mechanism and template per the spec.
            let (m, t) = unsafe { (mechanism_of(c, pMechanism)?, template(pTemplate, ulCount)?) };
            api::generate_key(c, hSession, m, t)
        })
    })
}

/// C_GenerateKeyPair (§5.18).
#[no_mangle]
pub unsafe extern "C" fn C_GenerateKeyPair(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPublicKeyAttributeCount: CK_ULONG,
    pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPrivateKeyAttributeCount: CK_ULONG,
    phPublicKey: CK_OBJECT_HANDLE_PTR,
    phPrivateKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_client("C_GenerateKeyPair", |c| {
        if phPublicKey.is_null() || phPrivateKey.is_null() {
            return Err(Error::ArgumentsBad("NULL key handle pointer"));
        }
        // SAFETY: mechanism and templates per the spec.
        let (m, pu, pr) = unsafe {
            (
                mechanism_of(c, pMechanism)?,
                template(pPublicKeyTemplate, ulPublicKeyAttributeCount)?,
                template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)?,
            )
        };
        let (a, b) = api::generate_key_pair(c, hSession, m, pu, pr)?;
        // SAFETY: checked non-NULL.
        unsafe {
            put(phPublicKey, a as CK_OBJECT_HANDLE)?;
            put(phPrivateKey, b as CK_OBJECT_HANDLE)?;
        }
        Ok(CKR_OK)
    })
}

/// C_WrapKey (§5.18).
#[no_mangle]
pub unsafe extern "C" fn C_WrapKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hWrappingKey: CK_OBJECT_HANDLE,
    hKey: CK_OBJECT_HANDLE,
    pWrappedKey: CK_BYTE_PTR,
    pulWrappedKeyLen: CK_ULONG_PTR,
) -> CK_RV {
    with_client("C_WrapKey", |c| {
        // SAFETY: pointers per the spec.
        let (m, cap) = unsafe {
            (
                mechanism_of(c, pMechanism)?,
                out_buf(pWrappedKey, pulWrappedKeyLen)?,
            )
        };
        let r = api::wrap_key(c, hSession, m, hWrappingKey, hKey, cap)?;
        // SAFETY: the buffer described by `cap`.
        Ok(unsafe { write_out(pWrappedKey, pulWrappedKeyLen, cap, r) })
    })
}

/// C_UnwrapKey (§5.18).
#[no_mangle]
pub unsafe extern "C" fn C_UnwrapKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hUnwrappingKey: CK_OBJECT_HANDLE,
    pWrappedKey: CK_BYTE_PTR,
    ulWrappedKeyLen: CK_ULONG,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulAttributeCount: CK_ULONG,
    phKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_client("C_UnwrapKey", |c| {
        creates(phKey, || {
            // SAFETY: pointers per the spec.
            let (m, w, t) = unsafe {
                (
                    mechanism_of(c, pMechanism)?,
                    bytes_in(pWrappedKey, ulWrappedKeyLen)?,
                    template(pTemplate, ulAttributeCount)?,
                )
            };
            api::unwrap_key(c, hSession, m, hUnwrappingKey, w, t)
        })
    })
}

/// C_DeriveKey (§5.18).
#[no_mangle]
pub unsafe extern "C" fn C_DeriveKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hBaseKey: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulAttributeCount: CK_ULONG,
    phKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_client("C_DeriveKey", |c| {
        creates(phKey, || {
            // SAFETY: pointers per the spec.
            let (m, t) = unsafe {
                (
                    mechanism_of(c, pMechanism)?,
                    template(pTemplate, ulAttributeCount)?,
                )
            };
            api::derive_key(c, hSession, m, hBaseKey, t)
        })
    })
}
