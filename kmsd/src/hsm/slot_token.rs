//! Slot and token management (PKCS#11 3.0 §5.5) on the backend.

use std::ptr;

use pkcs11_sys::*;

use super::{marshal, Backend};
use crate::error::Error;
use crate::handles::BSession;

impl Backend {
    pub fn slot_list(&self, token_present: bool) -> Result<Vec<CK_SLOT_ID>, Error> {
        let present = if token_present { CK_TRUE } else { CK_FALSE };
        self.list("C_GetSlotList", |p, n| {
            call!(self, C_GetSlotList, present, p, n)
        })
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO, Error> {
        let mut info = CK_SLOT_INFO::default();
        checked!(self, C_GetSlotInfo, slot, &mut info)?;
        Ok(info)
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO, Error> {
        let mut info = CK_TOKEN_INFO::default();
        checked!(self, C_GetTokenInfo, slot, &mut info)?;
        Ok(info)
    }

    /// With `flags = 0` this may block in the module: callers run it on a
    /// blocking thread, one at a time (see `ops::slot_token`).
    pub fn wait_for_slot_event(&self, flags: CK_FLAGS) -> Result<CK_SLOT_ID, Error> {
        let mut slot: CK_SLOT_ID = 0;
        checked!(self, C_WaitForSlotEvent, flags, &mut slot, ptr::null_mut())?;
        Ok(slot)
    }

    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>, Error> {
        self.list("C_GetMechanismList", |p, n| {
            call!(self, C_GetMechanismList, slot, p, n)
        })
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mech: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO, Error> {
        let mut info = CK_MECHANISM_INFO::default();
        checked!(self, C_GetMechanismInfo, slot, mech, &mut info)?;
        Ok(info)
    }

    pub fn init_token(
        &self,
        slot: CK_SLOT_ID,
        pin: Option<&[u8]>,
        label: &[u8; 32],
    ) -> Result<(), Error> {
        let (p, n) = marshal::opt_in(pin);
        checked!(self, C_InitToken, slot, p, n, label.as_ptr() as *mut u8)
    }

    pub fn init_pin(&self, s: BSession, pin: Option<&[u8]>) -> Result<(), Error> {
        let (p, n) = marshal::opt_in(pin);
        checked!(self, C_InitPIN, s.0, p, n)
    }

    pub fn set_pin(
        &self,
        s: BSession,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), Error> {
        let (po, no) = marshal::opt_in(old);
        let (pn, nn) = marshal::opt_in(new);
        checked!(self, C_SetPIN, s.0, po, no, pn, nn)
    }

    /// A list the module writes the PKCS#11 way (count, then items). It can
    /// grow between the two calls: asked again until it fits.
    fn list(
        &self,
        function: &'static str,
        mut f: impl FnMut(*mut CK_ULONG, *mut CK_ULONG) -> CK_RV,
    ) -> Result<Vec<CK_ULONG>, Error> {
        for _ in 0..8 {
            let mut n: CK_ULONG = 0;
            Error::check(function, f(ptr::null_mut(), &mut n))?;
            let mut items = vec![0; n as usize];
            match f(items.as_mut_ptr(), &mut n) {
                CKR_BUFFER_TOO_SMALL => continue,
                rv => Error::check(function, rv)?,
            }
            items.truncate(n as usize);
            return Ok(items);
        }
        Err(Error::Backend {
            function,
            rv: CKR_GENERAL_ERROR,
        })
    }
}
