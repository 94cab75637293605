//! Object management (PKCS#11 3.0 §5.7).

use kmsp11_proto::{
    AttrAnswer, AttrQuery, Body, CopyObject, CreateObject, DestroyObject, FindObjects,
    FindObjectsInit, GetAttributeValue, GetObjectSize, Request, SetAttributeValue, Template,
};
use pkcs11_sys::*;

use super::{body, handle, rv_only};
use crate::client::Client;
use crate::error::{Error, Result};

/// C_CreateObject (§5.7).
pub fn create_object(c: &Client, session: u64, template: Template) -> Result<u64> {
    handle(c, Request::CreateObject(CreateObject { session, template }))
}

/// C_CopyObject (§5.7).
pub fn copy_object(c: &Client, session: u64, object: u64, template: Template) -> Result<u64> {
    handle(
        c,
        Request::CopyObject(CopyObject {
            session,
            object,
            template,
        }),
    )
}

/// C_DestroyObject (§5.7).
pub fn destroy_object(c: &Client, session: u64, object: u64) -> Result<()> {
    rv_only(c, Request::DestroyObject(DestroyObject { session, object }))
}

/// C_GetObjectSize (§5.7).
pub fn object_size(c: &Client, session: u64, object: u64) -> Result<u64> {
    match body(c, Request::GetObjectSize(GetObjectSize { session, object }))? {
        Body::Size(n) => Ok(n),
        _ => Err(Error::Protocol("C_GetObjectSize")),
    }
}

/// C_GetAttributeValue (§5.7): the answers come back with the `CK_RV`,
/// which may be an error while some attributes were still filled.
pub fn attribute_value(
    c: &Client,
    session: u64,
    object: u64,
    template: Vec<AttrQuery>,
) -> Result<(u64, Vec<AttrAnswer>)> {
    let n = template.len();
    let r = c.call(Request::GetAttributeValue(GetAttributeValue {
        session,
        object,
        template,
    }))?;
    let per_attribute = matches!(
        r.rv,
        CKR_OK | CKR_ATTRIBUTE_SENSITIVE | CKR_ATTRIBUTE_TYPE_INVALID | CKR_BUFFER_TOO_SMALL
    );
    match r.body {
        Body::Attributes(a) if per_attribute && a.len() == n => Ok((r.rv, a)),
        // The call failed as a whole: nothing was filled, nothing is written.
        _ if !per_attribute => Err(Error::Rv(r.rv)),
        _ => Err(Error::Protocol("C_GetAttributeValue")),
    }
}

/// C_SetAttributeValue (§5.7).
pub fn set_attribute_value(
    c: &Client,
    session: u64,
    object: u64,
    template: Template,
) -> Result<()> {
    rv_only(
        c,
        Request::SetAttributeValue(SetAttributeValue {
            session,
            object,
            template,
        }),
    )
}

/// C_FindObjectsInit (§5.7).
pub fn find_objects_init(c: &Client, session: u64, template: Template) -> Result<()> {
    rv_only(
        c,
        Request::FindObjectsInit(FindObjectsInit { session, template }),
    )
}

/// C_FindObjects (§5.7).
pub fn find_objects(c: &Client, session: u64, max: u64) -> Result<Vec<u64>> {
    match body(c, Request::FindObjects(FindObjects { session, max }))? {
        Body::Handles(h) if h.len() as u64 <= max => Ok(h),
        _ => Err(Error::Protocol("C_FindObjects")),
    }
}
