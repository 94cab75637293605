//! The seam between the doors and the HSM. Today: the operation each
//! session has active ([`active`]) and the [`Subject`] of every call, so
//! that a data call is known (and recorded) by the key and mechanism its
//! `*Init` armed.

pub mod active;

use kmsp11_proto::Request;

use self::active::Step;

/// What a call works on, for its audit record: the client's handle of the
/// key or object and the mechanism. A data call is known by what its
/// session's `*Init` armed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub handle: Option<u64>,
    pub mechanism: Option<u64>,
}

/// The subject of `req`; a cryptographic call's `step` is looked up in
/// `active`, the operations of its context (locked only for those calls).
pub fn subject(
    req: &Request,
    step: Option<&Step>,
    active: &parking_lot::Mutex<crate::context::CtxState>,
) -> Subject {
    if let Some(s) = step {
        let op = active.lock().active.of(s);
        return Subject {
            handle: op.and_then(|o| o.key),
            mechanism: op.map(|o| o.mechanism),
        };
    }
    let (handle, mechanism) = match req {
        Request::GenerateKey(q) => (None, Some(&q.mechanism)),
        Request::GenerateKeyPair(q) => (None, Some(&q.mechanism)),
        Request::WrapKey(q) => (Some(q.key), Some(&q.mechanism)),
        Request::UnwrapKey(q) => (Some(q.unwrapping_key), Some(&q.mechanism)),
        Request::DeriveKey(q) => (Some(q.base_key), Some(&q.mechanism)),
        Request::CopyObject(q) => (Some(q.object), None),
        Request::DestroyObject(q) => (Some(q.object), None),
        Request::GetAttributeValue(q) => (Some(q.object), None),
        Request::SetAttributeValue(q) => (Some(q.object), None),
        Request::GetObjectSize(q) => (Some(q.object), None),
        _ => (None, None),
    };
    Subject {
        handle,
        mechanism: mechanism.map(|m| m.mechanism),
    }
}

/// A mechanism by its name (`CKM_AES_GCM`), or its number in hex.
pub fn mechanism_name(m: u64) -> String {
    match cryptoki::mechanism::MechanismType::try_from(m as pkcs11_sys::CK_MECHANISM_TYPE) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{m:#x}"),
    }
}
