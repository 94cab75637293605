//! Session management (PKCS#11 3.0 §5.6).

use pkcs11_sys::*;

use super::ptr::{bytes_in, pin_in};
use super::{answer, export, ok, output};
use crate::api::session as api;

kmsp11_proto::calls!(chapter_shells, session);
use super::chapter_shells;

export! {
    /// C_OpenSession (§5.6). Notification callbacks are never called.
    fn C_OpenSession(slotID: CK_SLOT_ID, flags: CK_FLAGS, _pApplication: CK_VOID_PTR, _Notify: CK_NOTIFY, phSession: CK_SESSION_HANDLE_PTR) |c| {
        answer(phSession, || Ok(api::open_session(c, slotID, flags)? as CK_SESSION_HANDLE))
    }

    /// C_CloseAllSessions (§5.6).
    fn C_CloseAllSessions(slotID: CK_SLOT_ID) |c| {
        ok(api::close_all_sessions(c, slotID))
    }

    /// C_GetSessionInfo (§5.6).
    fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: CK_SESSION_INFO_PTR) |c| {
        answer(pInfo, || {
            let s = api::session_info(c, hSession)?;
            Ok(CK_SESSION_INFO { slotID: s.slot, state: s.state, flags: s.flags, ulDeviceError: s.device_error })
        })
    }

    /// C_GetOperationState (§5.6).
    fn C_GetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: CK_BYTE_PTR, pulOperationStateLen: CK_ULONG_PTR) |c| {
        // SAFETY: the output buffer per the spec.
        unsafe { output(pOperationState, pulOperationStateLen, |cap| api::operation_state(c, hSession, cap)) }
    }

    /// C_SetOperationState (§5.6).
    fn C_SetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: CK_BYTE_PTR, ulOperationStateLen: CK_ULONG, hEncryptionKey: CK_OBJECT_HANDLE, hAuthenticationKey: CK_OBJECT_HANDLE) |c| {
        // SAFETY: `ulOperationStateLen` bytes.
        let st = unsafe { bytes_in(pOperationState, ulOperationStateLen) }?;
        ok(api::set_operation_state(c, hSession, st, hEncryptionKey, hAuthenticationKey))
    }

    /// C_Login (§5.6).
    fn C_Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG) |c| {
        // SAFETY: `ulPinLen` bytes.
        ok(api::login(c, hSession, userType, unsafe { pin_in(pPin, ulPinLen) }?))
    }
}
