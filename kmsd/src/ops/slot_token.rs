//! Slot and token management (PKCS#11 3.0 §5.5).

use kmsp11_proto::{
    Body, GetMechanismInfo, GetMechanismList, GetSlotInfo, GetSlotList, GetTokenInfo, InitPin,
    InitToken, MechanismInfo, Response, SetPin, SlotInfo, TokenInfo, Version, WaitForSlotEvent,
};
use pkcs11_sys::*;

use super::session::with_so;
use super::{answer, done};
use kmsp11_proto::pad;

use crate::core::call::Call;
use crate::daemon::{Context, Daemon, VToken};
use crate::error::Error;
use std::sync::Arc;

fn version(x: CK_VERSION) -> Version {
    Version {
        major: x.major,
        minor: x.minor,
    }
}

fn token(d: &Daemon, ctx: &Context, slot: u64) -> Result<Arc<VToken>, Error> {
    d.token(ctx, slot).ok_or(Error::UnknownSlot(slot))
}

/// C_GetSlotList (§5.5): the tokens this identity may see. In transparent
/// mode the backend's slot list is read again first, so that a token
/// initialised meanwhile appears.
pub fn slot_list(d: &Daemon, ctx: &Context, _c: &Call, q: GetSlotList) -> Result<Response, Error> {
    if let Err(e) = d.refresh_slots() {
        tracing::warn!("re-reading the backend's slots: {e}");
    }
    let slots = d
        .tokens_for(&ctx.identity)
        .iter()
        .filter(|t| {
            !q.token_present
                || d.backend
                    .slot_info(t.backend_slot)
                    .is_ok_and(|si| si.flags & CKF_TOKEN_PRESENT != 0)
        })
        .map(|t| t.slot)
        .collect();
    answer(Body::Slots(slots))
}

/// C_GetSlotInfo (§5.5).
pub fn slot_info(d: &Daemon, ctx: &Context, _c: &Call, q: GetSlotInfo) -> Result<Response, Error> {
    let t = token(d, ctx, q.slot)?;
    let si = d.backend.slot_info(t.backend_slot)?;
    let slot_description = if t.serial.is_some() {
        pad::<64>(format!("kmsp11 virtual slot {}", t.name).as_bytes()).to_vec()
    } else {
        si.slotDescription.to_vec()
    };
    answer(Body::SlotInfo(SlotInfo {
        slot_description,
        manufacturer_id: si.manufacturerID.to_vec(),
        flags: si.flags,
        hardware_version: version(si.hardwareVersion),
        firmware_version: version(si.firmwareVersion),
    }))
}

/// C_GetTokenInfo (§5.5): the backend's token with the virtual label and
/// serial. On a token whose PIN kmsd holds, the user PIN flags are the
/// identity's own (its failed-login budget), not the backend's.
pub fn token_info(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: GetTokenInfo,
) -> Result<Response, Error> {
    const USER_PIN_FLAGS: u64 = CKF_USER_PIN_COUNT_LOW
        | CKF_USER_PIN_FINAL_TRY
        | CKF_USER_PIN_LOCKED
        | CKF_USER_PIN_TO_BE_CHANGED;
    let t = token(d, ctx, q.slot)?;
    let ti = d.backend.token_info(t.backend_slot)?;
    let virtual_token = t.serial.is_some();
    let flags = if t.anchored() {
        (ti.flags & !USER_PIN_FLAGS) | d.pins.flags(&ctx.identity.name)
    } else {
        ti.flags
    };
    answer(Body::TokenInfo(TokenInfo {
        label: if virtual_token {
            t.label.to_vec()
        } else {
            ti.label.to_vec()
        },
        manufacturer_id: ti.manufacturerID.to_vec(),
        model: ti.model.to_vec(),
        serial_number: t
            .serial
            .map(|s| s.to_vec())
            .unwrap_or_else(|| ti.serialNumber.to_vec()),
        flags,
        max_session_count: ti.ulMaxSessionCount,
        session_count: ti.ulSessionCount,
        max_rw_session_count: ti.ulMaxRwSessionCount,
        rw_session_count: ti.ulRwSessionCount,
        max_pin_len: ti.ulMaxPinLen,
        min_pin_len: ti.ulMinPinLen,
        total_public_memory: ti.ulTotalPublicMemory,
        free_public_memory: ti.ulFreePublicMemory,
        total_private_memory: ti.ulTotalPrivateMemory,
        free_private_memory: ti.ulFreePrivateMemory,
        hardware_version: version(ti.hardwareVersion),
        firmware_version: version(ti.firmwareVersion),
        utc_time: ti.utcTime.to_vec(),
    }))
}

/// C_WaitForSlotEvent (§5.5). The client's flags reach the backend, so its
/// answer is the backend's (SoftHSM: `CKR_NO_EVENT` when polled,
/// `CKR_FUNCTION_NOT_SUPPORTED` when asked to block). At most one blocking
/// wait runs in the backend at a time; other blocking callers are told
/// `CKR_NO_EVENT` and the library polls again on its caller's thread.
pub fn wait_for_slot_event(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: WaitForSlotEvent,
) -> Result<Response, Error> {
    static BLOCKING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let backend_slot = if q.flags & CKF_DONT_BLOCK != 0 {
        d.backend.wait_for_slot_event(q.flags)?
    } else {
        match BLOCKING.try_lock() {
            Some(_g) => d.backend.wait_for_slot_event(q.flags)?,
            None => return Err(Error::Rv(CKR_NO_EVENT)),
        }
    };
    match d
        .tokens_for(&ctx.identity)
        .iter()
        .find(|t| t.backend_slot == backend_slot)
    {
        Some(t) => answer(Body::Slot(t.slot)),
        None => Err(Error::Rv(CKR_NO_EVENT)),
    }
}

/// C_GetMechanismList (§5.5).
pub fn mechanism_list(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: GetMechanismList,
) -> Result<Response, Error> {
    let t = token(d, ctx, q.slot)?;
    answer(Body::Mechanisms(d.backend.mechanism_list(t.backend_slot)?))
}

/// C_GetMechanismInfo (§5.5).
pub fn mechanism_info(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: GetMechanismInfo,
) -> Result<Response, Error> {
    let t = token(d, ctx, q.slot)?;
    let mi = d.backend.mechanism_info(t.backend_slot, q.mechanism)?;
    answer(Body::MechanismInfo(MechanismInfo {
        min_key_size: mi.ulMinKeySize,
        max_key_size: mi.ulMaxKeySize,
        flags: mi.flags,
    }))
}

/// C_InitToken (§5.5): forwarded only where the configuration allows SO functions.
pub fn init_token(d: &Daemon, ctx: &Context, _c: &Call, q: InitToken) -> Result<Response, Error> {
    let t = token(d, ctx, q.slot)?;
    if !t.so_functions {
        return Err(Error::NotOffered("C_InitToken on this token"));
    }
    if ctx.state.lock().sessions.values().any(|s| s.slot == q.slot) {
        return Err(Error::Rv(CKR_SESSION_EXISTS));
    }
    let label = kmsp11_proto::pad::<32>(&q.label);
    d.backend
        .init_token(t.backend_slot, q.pin.as_ref().map(|p| p.expose()), &label)?;
    done()
}

/// C_InitPIN (§5.5): an SO function.
pub fn init_pin(d: &Daemon, ctx: &Context, c: &Call, q: InitPin) -> Result<Response, Error> {
    with_so(d, ctx, c, |s, _| {
        d.backend
            .init_pin(s.backend, q.pin.as_ref().map(|p| p.expose()))
    })
}

/// C_SetPIN (§5.5): forwarded only where the configuration allows SO
/// functions; a virtual token's PINs are kmsd's configuration.
pub fn set_pin(d: &Daemon, ctx: &Context, c: &Call, q: SetPin) -> Result<Response, Error> {
    let new = q.new.as_ref().map(|p| p.expose());
    with_so(d, ctx, c, |s, t| {
        d.backend
            .set_pin(s.backend, q.old.as_ref().map(|p| p.expose()), new)?;
        d.backend_pin_changed(t, new);
        Ok(())
    })
}
