//! Slot and token management (PKCS#11 2.40 §5.5).

use kmsp11_proto::{Body, MechanismInfo, Pin, Request, SlotInfo, TokenInfo};
use pkcs11_sys::*;

use super::{body, rv_only};
use crate::error::{Error, Result};

/// C_GetSlotList (§5.5).
pub fn slot_list(token_present: bool) -> Result<Vec<u64>> {
    match body(Request::GetSlotList { token_present })? {
        Body::Slots(s) => Ok(s),
        _ => Err(Error::Protocol("C_GetSlotList")),
    }
}

/// C_GetSlotInfo (§5.5).
pub fn slot_info(slot: u64) -> Result<SlotInfo> {
    match body(Request::GetSlotInfo { slot })? {
        Body::SlotInfo(s) => Ok(s),
        _ => Err(Error::Protocol("C_GetSlotInfo")),
    }
}

/// C_GetTokenInfo (§5.5).
pub fn token_info(slot: u64) -> Result<TokenInfo> {
    match body(Request::GetTokenInfo { slot })? {
        Body::TokenInfo(t) => Ok(t),
        _ => Err(Error::Protocol("C_GetTokenInfo")),
    }
}

/// C_WaitForSlotEvent (§5.5). kmsd only polls; the blocking form polls on
/// the caller's thread and returns `CKR_CRYPTOKI_NOT_INITIALIZED` as soon as
/// another thread calls C_Finalize.
pub fn wait_for_slot_event(flags: u64) -> Result<u64> {
    let generation = super::generation();
    loop {
        match body(Request::WaitForSlotEvent { flags }) {
            Ok(Body::Slot(s)) => return Ok(s),
            Ok(_) => return Err(Error::Protocol("C_WaitForSlotEvent")),
            Err(Error::Rv(CKR_NO_EVENT)) if flags & CKF_DONT_BLOCK == 0 => {}
            Err(e) => return Err(e),
        }
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if super::generation() != generation {
                return Err(Error::NotInitialized);
            }
        }
    }
}

/// C_GetMechanismList (§5.5).
pub fn mechanism_list(slot: u64) -> Result<Vec<u64>> {
    match body(Request::GetMechanismList { slot })? {
        Body::Mechanisms(m) => Ok(m),
        _ => Err(Error::Protocol("C_GetMechanismList")),
    }
}

/// C_GetMechanismInfo (§5.5).
pub fn mechanism_info(slot: u64, mechanism: u64) -> Result<MechanismInfo> {
    match body(Request::GetMechanismInfo { slot, mechanism })? {
        Body::MechanismInfo(m) => Ok(m),
        _ => Err(Error::Protocol("C_GetMechanismInfo")),
    }
}

/// C_InitToken (§5.5).
pub fn init_token(slot: u64, pin: Option<Pin>, label: Vec<u8>) -> Result<()> {
    rv_only(Request::InitToken { slot, pin, label })
}

/// C_InitPIN (§5.5).
pub fn init_pin(session: u64, pin: Option<Pin>) -> Result<()> {
    rv_only(Request::InitPin { session, pin })
}

/// C_SetPIN (§5.5).
pub fn set_pin(session: u64, old: Option<Pin>, new: Option<Pin>) -> Result<()> {
    rv_only(Request::SetPin { session, old, new })
}
