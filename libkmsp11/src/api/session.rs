//! Session management (PKCS#11 2.40 §5.6).

use kmsp11_proto::{Body, OutBuf, OutOnly, Pin, Request, SessionInfo};

use super::{body, handle, output, rv_only, Output};
use crate::error::{Error, Result};

/// C_OpenSession (§5.6).
pub fn open_session(slot: u64, flags: u64) -> Result<u64> {
    handle(Request::OpenSession { slot, flags }, "C_OpenSession")
}

/// C_CloseSession (§5.6).
pub fn close_session(session: u64) -> Result<()> {
    rv_only(Request::CloseSession { session })
}

/// C_CloseAllSessions (§5.6).
pub fn close_all_sessions(slot: u64) -> Result<()> {
    rv_only(Request::CloseAllSessions { slot })
}

/// C_GetSessionInfo (§5.6).
pub fn session_info(session: u64) -> Result<SessionInfo> {
    match body(Request::GetSessionInfo { session })? {
        Body::SessionInfo(s) => Ok(s),
        _ => Err(Error::Protocol("C_GetSessionInfo")),
    }
}

/// C_GetOperationState (§5.6).
pub fn operation_state(session: u64, out: OutBuf) -> Result<Output> {
    output(
        Request::GetOperationState(OutOnly { session, out }),
        "C_GetOperationState",
    )
}

/// C_SetOperationState (§5.6).
pub fn set_operation_state(
    session: u64,
    state: Option<Vec<u8>>,
    encryption_key: u64,
    authentication_key: u64,
) -> Result<()> {
    rv_only(Request::SetOperationState {
        session,
        state,
        encryption_key,
        authentication_key,
    })
}

/// C_Login (§5.6).
pub fn login(session: u64, user_type: u64, pin: Option<Pin>) -> Result<()> {
    rv_only(Request::Login {
        session,
        user_type,
        pin,
    })
}

/// C_Logout (§5.6).
pub fn logout(session: u64) -> Result<()> {
    rv_only(Request::Logout { session })
}
