//! Session management (PKCS#11 3.0 §5.6).

use pkcs11_sys::*;

use super::ptr::{bytes_in, out_buf, pin_in, put, write_out};
use super::{ok, with_client};
use crate::api::session as api;
use crate::error::Error;

kmsp11_proto::calls!(chapter_shells, session);
use super::chapter_shells;

/// C_OpenSession (§5.6). Notification callbacks are never called.
#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    slotID: CK_SLOT_ID,
    flags: CK_FLAGS,
    _pApplication: CK_VOID_PTR,
    _Notify: CK_NOTIFY,
    phSession: CK_SESSION_HANDLE_PTR,
) -> CK_RV {
    with_client("C_OpenSession", |c| {
        if phSession.is_null() {
            return Err(Error::ArgumentsBad("NULL phSession"));
        }
        let h = api::open_session(c, slotID, flags)?;
        // SAFETY: checked non-NULL.
        unsafe { put(phSession, h as CK_SESSION_HANDLE) }?;
        Ok(CKR_OK)
    })
}

/// C_CloseAllSessions (§5.6).
#[no_mangle]
pub unsafe extern "C" fn C_CloseAllSessions(slotID: CK_SLOT_ID) -> CK_RV {
    with_client("C_CloseAllSessions", |c| {
        ok(api::close_all_sessions(c, slotID))
    })
}

/// C_GetSessionInfo (§5.6).
#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(
    hSession: CK_SESSION_HANDLE,
    pInfo: CK_SESSION_INFO_PTR,
) -> CK_RV {
    with_client("C_GetSessionInfo", |c| {
        if pInfo.is_null() {
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let s = api::session_info(c, hSession)?;
        let info = CK_SESSION_INFO {
            slotID: s.slot,
            state: s.state,
            flags: s.flags,
            ulDeviceError: s.device_error,
        };
        // SAFETY: checked non-NULL.
        unsafe { put(pInfo, info) }?;
        Ok(CKR_OK)
    })
}

/// C_GetOperationState (§5.6).
#[no_mangle]
pub unsafe extern "C" fn C_GetOperationState(
    hSession: CK_SESSION_HANDLE,
    pOperationState: CK_BYTE_PTR,
    pulOperationStateLen: CK_ULONG_PTR,
) -> CK_RV {
    with_client("C_GetOperationState", |c| {
        // SAFETY: pointers per the spec.
        let cap = unsafe { out_buf(pOperationState, pulOperationStateLen) }?;
        let r = api::operation_state(c, hSession, cap)?;
        // SAFETY: the buffer described by `cap`.
        Ok(unsafe { write_out(pOperationState, pulOperationStateLen, cap, r) })
    })
}

/// C_SetOperationState (§5.6).
#[no_mangle]
pub unsafe extern "C" fn C_SetOperationState(
    hSession: CK_SESSION_HANDLE,
    pOperationState: CK_BYTE_PTR,
    ulOperationStateLen: CK_ULONG,
    hEncryptionKey: CK_OBJECT_HANDLE,
    hAuthenticationKey: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_client("C_SetOperationState", |c| {
        // SAFETY: `ulOperationStateLen` bytes.
        let st = unsafe { bytes_in(pOperationState, ulOperationStateLen) }?;
        ok(api::set_operation_state(
            c,
            hSession,
            st,
            hEncryptionKey,
            hAuthenticationKey,
        ))
    })
}

/// C_Login (§5.6).
#[no_mangle]
pub unsafe extern "C" fn C_Login(
    hSession: CK_SESSION_HANDLE,
    userType: CK_USER_TYPE,
    pPin: CK_UTF8CHAR_PTR,
    ulPinLen: CK_ULONG,
) -> CK_RV {
    with_client("C_Login", |c| {
        // SAFETY: `ulPinLen` bytes.
        let pin = unsafe { pin_in(pPin, ulPinLen) }?;
        ok(api::login(c, hSession, userType, pin))
    })
}
