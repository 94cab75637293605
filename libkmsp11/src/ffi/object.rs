//! Object management (PKCS#11 3.0 §5.7).

use pkcs11_sys::*;

use super::convert::{queries, template, write_answers};
use super::ptr::put;
use super::{creates, ok, with_client};
use crate::api::object as api;
use crate::error::Error;

kmsp11_proto::calls!(chapter_shells, object);
use super::chapter_shells;

/// C_CreateObject (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_CreateObject(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phObject: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_client("C_CreateObject", |c| {
        creates(phObject, || {
            // SAFETY: template per the spec.
            let t = unsafe { template(pTemplate, ulCount) }?;
            api::create_object(c, hSession, t)
        })
    })
}

/// C_CopyObject (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_CopyObject(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phNewObject: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_client("C_CopyObject", |c| {
        creates(phNewObject, || {
            // SAFETY: template per the spec.
            let t = unsafe { template(pTemplate, ulCount) }?;
            api::copy_object(c, hSession, hObject, t)
        })
    })
}

/// C_DestroyObject (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_DestroyObject(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_client("C_DestroyObject", |c| {
        ok(api::destroy_object(c, hSession, hObject))
    })
}

/// C_GetObjectSize (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_GetObjectSize(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pulSize: CK_ULONG_PTR,
) -> CK_RV {
    with_client("C_GetObjectSize", |c| {
        if pulSize.is_null() {
            return Err(Error::ArgumentsBad("NULL pulSize"));
        }
        let n = api::object_size(c, hSession, hObject)?;
        // SAFETY: checked non-NULL.
        unsafe { put(pulSize, n as CK_ULONG) }?;
        Ok(CKR_OK)
    })
}

/// C_GetAttributeValue (§5.7): every attribute is answered even when the
/// call as a whole returns `CKR_ATTRIBUTE_SENSITIVE`, `CKR_ATTRIBUTE_TYPE_INVALID`
/// or `CKR_BUFFER_TOO_SMALL`; nothing is written past the capacities the
/// caller gave, whatever kmsd answers.
#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> CK_RV {
    with_client("C_GetAttributeValue", |c| {
        // SAFETY: template per the spec.
        let q = unsafe { queries(pTemplate, ulCount) }?;
        let (rv, answers) = api::attribute_value(c, hSession, hObject, q.clone())?;
        // SAFETY: the same template the queries were read from.
        unsafe { write_answers(pTemplate, &q, rv, &answers) }?;
        Ok(rv)
    })
}

/// C_SetAttributeValue (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_SetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> CK_RV {
    with_client("C_SetAttributeValue", |c| {
        // SAFETY: template per the spec.
        let t = unsafe { template(pTemplate, ulCount) }?;
        ok(api::set_attribute_value(c, hSession, hObject, t))
    })
}

/// C_FindObjectsInit (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> CK_RV {
    with_client("C_FindObjectsInit", |c| {
        // SAFETY: template per the spec.
        let t = unsafe { template(pTemplate, ulCount) }?;
        ok(api::find_objects_init(c, hSession, t))
    })
}

/// C_FindObjects (§5.7).
#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    hSession: CK_SESSION_HANDLE,
    phObject: CK_OBJECT_HANDLE_PTR,
    ulMaxObjectCount: CK_ULONG,
    pulObjectCount: CK_ULONG_PTR,
) -> CK_RV {
    with_client("C_FindObjects", |c| {
        if pulObjectCount.is_null() || (phObject.is_null() && ulMaxObjectCount > 0) {
            return Err(Error::ArgumentsBad("NULL phObject or pulObjectCount"));
        }
        let found = api::find_objects(c, hSession, ulMaxObjectCount as u64)?;
        // SAFETY: room for ulMaxObjectCount handles; found.len() <= that (checked in api).
        unsafe {
            for (i, h) in found.iter().enumerate() {
                *phObject.add(i) = *h as CK_OBJECT_HANDLE;
            }
            *pulObjectCount = found.len() as CK_ULONG;
        }
        Ok(CKR_OK)
    })
}
