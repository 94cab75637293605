//! Session management (PKCS#11 3.0 §5.6).

use kmsp11_proto::{
    Body, CloseAllSessions, GetOperationState, GetSessionInfo, Login, OpenSession, OutBuf, Pin,
    Request, SessionInfo, SetOperationState,
};

use super::{body, handle, output, rv_only, Output};
use crate::client::Client;
use crate::error::{Error, Result};

/// C_OpenSession (§5.6).
pub fn open_session(c: &Client, slot: u64, flags: u64) -> Result<u64> {
    handle(c, Request::OpenSession(OpenSession { slot, flags }))
}

/// C_CloseAllSessions (§5.6).
pub fn close_all_sessions(c: &Client, slot: u64) -> Result<()> {
    rv_only(c, Request::CloseAllSessions(CloseAllSessions { slot }))
}

/// C_GetSessionInfo (§5.6).
pub fn session_info(c: &Client, session: u64) -> Result<SessionInfo> {
    match body(c, Request::GetSessionInfo(GetSessionInfo { session }))? {
        Body::SessionInfo(s) => Ok(s),
        _ => Err(Error::Protocol("C_GetSessionInfo")),
    }
}

/// C_GetOperationState (§5.6).
pub fn operation_state(c: &Client, session: u64, out: OutBuf) -> Result<Output> {
    output(
        c,
        Request::GetOperationState(GetOperationState { session, out }),
    )
}

/// C_SetOperationState (§5.6).
pub fn set_operation_state(
    c: &Client,
    session: u64,
    state: Option<Vec<u8>>,
    encryption_key: u64,
    authentication_key: u64,
) -> Result<()> {
    rv_only(
        c,
        Request::SetOperationState(SetOperationState {
            session,
            state,
            encryption_key,
            authentication_key,
        }),
    )
}

/// C_Login (§5.6).
pub fn login(c: &Client, session: u64, user_type: u64, pin: Option<Pin>) -> Result<()> {
    rv_only(
        c,
        Request::Login(Login {
            session,
            user_type,
            pin,
        }),
    )
}
