//! Session management (PKCS#11 3.0 §5.6) on the backend.

use std::ptr;

use pkcs11_sys::*;

use super::{marshal, Backend};
use crate::error::Error;
use crate::handles::BSession;

impl Backend {
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<BSession, Error> {
        let mut h: CK_SESSION_HANDLE = 0;
        checked!(
            self,
            C_OpenSession,
            slot,
            flags,
            ptr::null_mut(),
            None,
            &mut h
        )?;
        Ok(BSession(h))
    }

    pub fn close_session(&self, s: BSession) -> Result<(), Error> {
        checked!(self, C_CloseSession, s.0)
    }

    pub fn session_info(&self, s: BSession) -> Result<CK_SESSION_INFO, Error> {
        let mut info = CK_SESSION_INFO::default();
        checked!(self, C_GetSessionInfo, s.0, &mut info)?;
        Ok(info)
    }

    pub fn login(&self, s: BSession, user: CK_USER_TYPE, pin: Option<&[u8]>) -> Result<(), Error> {
        let (p, n) = marshal::opt_in(pin);
        checked!(self, C_Login, s.0, user, p, n)
    }

    pub fn logout(&self, s: BSession) -> Result<(), Error> {
        checked!(self, C_Logout, s.0)
    }

    pub fn function_status(&self, s: BSession) -> Result<(), Error> {
        checked!(self, C_GetFunctionStatus, s.0)
    }

    pub fn cancel_function(&self, s: BSession) -> Result<(), Error> {
        checked!(self, C_CancelFunction, s.0)
    }
}
