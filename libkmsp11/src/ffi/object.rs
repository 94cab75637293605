//! Object management (PKCS#11 3.0 §5.7).

use pkcs11_sys::*;

use super::convert::{queries, template, write_answers};
use super::{answer, export, ok};
use crate::api::object as api;
use crate::error::Error;

kmsp11_proto::calls!(chapter_shells, object);
use super::chapter_shells;

export! {
    /// C_CreateObject (§5.7).
    fn C_CreateObject(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phObject: CK_OBJECT_HANDLE_PTR) |c| {
        answer(phObject, || {
            // SAFETY: template per the spec.
            let t = unsafe { template(pTemplate, ulCount) }?;
            Ok(api::create_object(c, hSession, t)? as CK_OBJECT_HANDLE)
        })
    }

    /// C_CopyObject (§5.7).
    fn C_CopyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phNewObject: CK_OBJECT_HANDLE_PTR) |c| {
        answer(phNewObject, || {
            // SAFETY: template per the spec.
            let t = unsafe { template(pTemplate, ulCount) }?;
            Ok(api::copy_object(c, hSession, hObject, t)? as CK_OBJECT_HANDLE)
        })
    }

    /// C_DestroyObject (§5.7).
    fn C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) |c| {
        ok(api::destroy_object(c, hSession, hObject))
    }

    /// C_GetObjectSize (§5.7).
    fn C_GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: CK_ULONG_PTR) |c| {
        answer(pulSize, || Ok(api::object_size(c, hSession, hObject)? as CK_ULONG))
    }

    /// C_GetAttributeValue (§5.7): every attribute is answered even when the
    /// call as a whole returns `CKR_ATTRIBUTE_SENSITIVE`,
    /// `CKR_ATTRIBUTE_TYPE_INVALID` or `CKR_BUFFER_TOO_SMALL`; nothing is
    /// written past the capacities the caller gave, whatever kmsd answers.
    fn C_GetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) |c| {
        // SAFETY: template per the spec.
        let q = unsafe { queries(pTemplate, ulCount) }?;
        let (rv, answers) = api::attribute_value(c, hSession, hObject, q.clone())?;
        // SAFETY: the same template the queries were read from.
        unsafe { write_answers(pTemplate, &q, rv, &answers) }?;
        Ok(rv)
    }

    /// C_SetAttributeValue (§5.7).
    fn C_SetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) |c| {
        // SAFETY: template per the spec.
        ok(api::set_attribute_value(c, hSession, hObject, unsafe { template(pTemplate, ulCount) }?))
    }

    /// C_FindObjectsInit (§5.7).
    fn C_FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) |c| {
        // SAFETY: template per the spec.
        ok(api::find_objects_init(c, hSession, unsafe { template(pTemplate, ulCount) }?))
    }

    /// C_FindObjects (§5.7).
    fn C_FindObjects(hSession: CK_SESSION_HANDLE, phObject: CK_OBJECT_HANDLE_PTR, ulMaxObjectCount: CK_ULONG, pulObjectCount: CK_ULONG_PTR) |c| {
        if phObject.is_null() && ulMaxObjectCount > 0 {
            return Err(Error::ArgumentsBad("NULL phObject"));
        }
        answer(pulObjectCount, || {
            let found = api::find_objects(c, hSession, ulMaxObjectCount as u64)?;
            for (i, h) in found.iter().enumerate() {
                // SAFETY: room for ulMaxObjectCount handles; found.len() <= that (checked in api).
                unsafe { *phObject.add(i) = *h as CK_OBJECT_HANDLE };
            }
            Ok(found.len() as CK_ULONG)
        })
    }
}
