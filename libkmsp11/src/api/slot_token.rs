//! Slot and token management (PKCS#11 3.0 §5.5).

use kmsp11_proto::{
    Body, GetMechanismInfo, GetMechanismList, GetSlotInfo, GetSlotList, GetTokenInfo, InitPin,
    InitToken, MechanismInfo, Pin, Request, SetPin, SlotInfo, TokenInfo, WaitForSlotEvent,
};
use std::collections::HashMap;

use parking_lot::Mutex;
use pkcs11_sys::*;

use super::{body, rv_only};
use crate::client::{Cache, Client};
use crate::error::{Error, Result};

/// C_GetSlotList (§5.5).
pub fn slot_list(c: &Client, token_present: bool) -> Result<Vec<u64>> {
    match body(c, Request::GetSlotList(GetSlotList { token_present }))? {
        Body::Slots(s) => Ok(s),
        _ => Err(Error::Protocol("C_GetSlotList")),
    }
}

/// C_GetSlotInfo (§5.5).
pub fn slot_info(c: &Client, slot: u64) -> Result<SlotInfo> {
    match body(c, Request::GetSlotInfo(GetSlotInfo { slot }))? {
        Body::SlotInfo(s) => Ok(s),
        _ => Err(Error::Protocol("C_GetSlotInfo")),
    }
}

/// C_GetTokenInfo (§5.5).
pub fn token_info(c: &Client, slot: u64) -> Result<TokenInfo> {
    match body(c, Request::GetTokenInfo(GetTokenInfo { slot }))? {
        Body::TokenInfo(t) => Ok(t),
        _ => Err(Error::Protocol("C_GetTokenInfo")),
    }
}

/// C_WaitForSlotEvent (§5.5). kmsd only polls; the blocking form polls on
/// the caller's thread and returns `CKR_CRYPTOKI_NOT_INITIALIZED` as soon as
/// another thread calls C_Finalize.
pub fn wait_for_slot_event(c: &Client, flags: u64) -> Result<u64> {
    let generation = super::generation();
    loop {
        match body(c, Request::WaitForSlotEvent(WaitForSlotEvent { flags })) {
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

/// C_GetMechanismList (§5.5), asked once per slot ([`crate::client::Cache`]).
pub fn mechanism_list(c: &Client, slot: u64) -> Result<Vec<u64>> {
    kept(&c.cache.mechanisms, slot, || {
        match body(c, Request::GetMechanismList(GetMechanismList { slot }))? {
            Body::Mechanisms(m) => Ok(m),
            _ => Err(Error::Protocol("C_GetMechanismList")),
        }
    })
}

/// C_GetMechanismInfo (§5.5), asked once per slot and mechanism.
pub fn mechanism_info(c: &Client, slot: u64, mechanism: u64) -> Result<MechanismInfo> {
    kept(&c.cache.mechanism_info, (slot, mechanism), || {
        let q = GetMechanismInfo { slot, mechanism };
        match body(c, Request::GetMechanismInfo(q))? {
            Body::MechanismInfo(m) => Ok(m),
            _ => Err(Error::Protocol("C_GetMechanismInfo")),
        }
    })
}

/// The kept answer for `key`, else `ask`'s, kept if it succeeded.
fn kept<K: std::hash::Hash + Eq, V: Clone>(
    cache: &Mutex<HashMap<K, V>>,
    key: K,
    ask: impl FnOnce() -> Result<V>,
) -> Result<V> {
    if let Some(v) = cache.lock().get(&key) {
        return Ok(v.clone());
    }
    let v = ask()?;
    let mut m = cache.lock();
    if m.len() >= Cache::MAX {
        m.clear();
    }
    m.insert(key, v.clone());
    Ok(v)
}

/// C_InitToken (§5.5).
pub fn init_token(c: &Client, slot: u64, pin: Option<Pin>, label: Vec<u8>) -> Result<()> {
    rv_only(c, Request::InitToken(InitToken { slot, pin, label }))
}

/// C_InitPIN (§5.5).
pub fn init_pin(c: &Client, session: u64, pin: Option<Pin>) -> Result<()> {
    rv_only(c, Request::InitPin(InitPin { session, pin }))
}

/// C_SetPIN (§5.5).
pub fn set_pin(c: &Client, session: u64, old: Option<Pin>, new: Option<Pin>) -> Result<()> {
    rv_only(c, Request::SetPin(SetPin { session, old, new }))
}
