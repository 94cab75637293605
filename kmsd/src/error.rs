//! kmsd's one error type for the operations: what was refused, carrying the
//! offending handle, mechanism or attribute, and the CK_RV the client gets.
//! A backend refusal names the function that failed and passes its CK_RV
//! on unchanged (DESIGN.md decision 5).

use pkcs11_sys::*;

use crate::handles::{VObject, VSession};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The backend answered this function with this CK_RV.
    #[error("{function} failed with CK_RV {rv:#x}")]
    Backend { function: &'static str, rv: CK_RV },
    /// A session handle this context does not hold.
    #[error("unknown session handle {0:?}")]
    UnknownSession(VSession),
    /// An object handle this context does not hold (or may not see).
    #[error("unknown object handle {0:?}")]
    UnknownObject(VObject),
    /// A slot this identity does not see.
    #[error("unknown slot {0}")]
    UnknownSlot(u64),
    /// A mechanism parameter not in the form its mechanism takes;
    /// `known`: the backend has the mechanism.
    #[error("parameter of mechanism {mechanism:#x} refused")]
    MechanismParam { mechanism: u64, known: bool },
    /// A template value whose form contradicts its attribute type.
    #[error("value of attribute {0:#x} in the wrong form")]
    AttributeForm(u64),
    /// The client's own login state forbids the call.
    #[error("not logged in")]
    NotLoggedIn,
    /// A `[limits]` entry reached; the CK_RV the spec has for it.
    #[error("limits.{limit} reached")]
    Limit { limit: &'static str, rv: CK_RV },
    /// The call is not offered here (by design or configuration).
    #[error("not offered: {0}")]
    NotOffered(&'static str),
    /// The client context ended while the call ran.
    #[error("the client context ended")]
    ContextEnded,
    /// Any other answer kmsd gives itself, with the spec's code.
    #[error("CK_RV {0:#x}")]
    Rv(CK_RV),
}

impl Error {
    /// The CK_RV the client gets.
    pub fn rv(&self) -> CK_RV {
        self.clone().into()
    }

    /// The backend's answer to `function`: `Ok` for `CKR_OK`, else the error.
    pub fn check(function: &'static str, rv: CK_RV) -> Result<(), Error> {
        if rv == CKR_OK {
            Ok(())
        } else {
            Err(Error::Backend { function, rv })
        }
    }
}

impl From<Error> for CK_RV {
    fn from(e: Error) -> CK_RV {
        match e {
            Error::Backend { rv, .. } => rv,
            Error::UnknownSession(_) => CKR_SESSION_HANDLE_INVALID,
            // The backend is handed CK_INVALID_HANDLE instead where the
            // position has its own code; this is the generic one.
            Error::UnknownObject(_) => CKR_OBJECT_HANDLE_INVALID,
            Error::UnknownSlot(_) => CKR_SLOT_ID_INVALID,
            Error::MechanismParam { known: true, .. } => CKR_MECHANISM_PARAM_INVALID,
            Error::MechanismParam { known: false, .. } => CKR_MECHANISM_INVALID,
            Error::AttributeForm(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            Error::NotLoggedIn => CKR_USER_NOT_LOGGED_IN,
            Error::Limit { rv, .. } => rv,
            Error::NotOffered(_) => CKR_FUNCTION_NOT_SUPPORTED,
            Error::ContextEnded => CKR_DEVICE_REMOVED,
            Error::Rv(rv) => rv,
        }
    }
}

impl From<Error> for kmsp11_proto::Response {
    fn from(e: Error) -> kmsp11_proto::Response {
        kmsp11_proto::Response::rv(e.into())
    }
}

/// A CK_RV by its name, for logs and audit records: `CKR_KEY_HANDLE_INVALID`.
pub fn rv_name(rv: CK_RV) -> std::borrow::Cow<'static, str> {
    // Nearly every answer: named without building a string.
    if rv == CKR_OK {
        return "CKR_OK".into();
    }
    let name = match cryptoki::error::Rv::from(rv) {
        cryptoki::error::Rv::Ok => return "CKR_OK".into(),
        cryptoki::error::Rv::Error(e) => format!("{e:?}"),
    };
    if name.starts_with("Unknown") || name.starts_with("Vendor") {
        return format!("CKR_{rv:#x}").into();
    }
    let mut out = String::from("CKR");
    for c in name.chars() {
        if c.is_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out.into()
}
