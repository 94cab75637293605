//! The library's one error type and its `CK_RV` mapping.

use pkcs11_sys::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("library not initialised (or initialised in the parent process before a fork)")]
    NotInitialized,
    #[error("library already initialised")]
    AlreadyInitialized,
    #[error("bad arguments: {0}")]
    ArgumentsBad(&'static str),
    #[error("application-supplied locking callbacks without CKF_OS_LOCKING_OK")]
    CantLock,
    #[error("configuration: {0}")]
    Config(String),
    #[error("kmsd unreachable: {0}")]
    Unreachable(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("kmsd answered with an unexpected body for {0}")]
    Protocol(&'static str),
    #[error("mechanism parameter cannot be forwarded: {0}")]
    MechanismParam(&'static str),
    /// A backend or daemon answer, passed through unchanged.
    #[error("CK_RV {0:#x}")]
    Rv(CK_RV),
}

impl From<Error> for CK_RV {
    fn from(e: Error) -> CK_RV {
        match e {
            Error::NotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::AlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::ArgumentsBad(_) => CKR_ARGUMENTS_BAD,
            Error::CantLock => CKR_CANT_LOCK,
            Error::Config(_) => CKR_FUNCTION_FAILED,
            Error::Unreachable(_) => CKR_DEVICE_REMOVED,
            Error::Transport(_) => CKR_DEVICE_ERROR,
            Error::Protocol(_) => CKR_DEVICE_ERROR,
            Error::MechanismParam(_) => CKR_MECHANISM_PARAM_INVALID,
            Error::Rv(rv) => rv,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
