//! Slot and token management (PKCS#11 2.40 §5.5).

use kmsp11_proto::{
    Body, GetMechanismInfo, GetMechanismList, GetSlotInfo, GetSlotList, GetTokenInfo, InitPin,
    InitToken, MechanismInfo, Response, SetPin, SlotInfo, TokenInfo, Version, WaitForSlotEvent,
};
use pkcs11_sys::*;

use super::session as sess;
use crate::daemon::{Context, Daemon};

fn v(x: CK_VERSION) -> Version {
    Version {
        major: x.major,
        minor: x.minor,
    }
}

/// C_GetSlotList (§5.5): the tokens this identity may see. In transparent
/// mode the backend's slot list is read again first, so that a token
/// initialised meanwhile appears.
pub fn slot_list(d: &Daemon, ctx: &Context, q: GetSlotList) -> Response {
    let GetSlotList { token_present } = q;
    if let Err(e) = d.refresh_slots() {
        tracing::warn!("re-reading the backend's slots: {e}");
    }
    let slots = d
        .tokens_for(&ctx.identity)
        .iter()
        .filter(|t| {
            !token_present || {
                let (rv, si) = d.backend.slot_info(t.backend_slot);
                rv == CKR_OK && si.flags & CKF_TOKEN_PRESENT != 0
            }
        })
        .map(|t| t.slot)
        .collect();
    Response::ok(Body::Slots(slots))
}

/// C_GetSlotInfo (§5.5).
pub fn slot_info(d: &Daemon, ctx: &Context, q: GetSlotInfo) -> Response {
    let GetSlotInfo { slot } = q;
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    let (rv, si) = d.backend.slot_info(t.backend_slot);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    let mut desc = si.slotDescription.to_vec();
    if t.serial.is_some() {
        desc = crate::daemon::pad::<64>(&format!("kmsp11 virtual slot {}", t.name)).to_vec();
    }
    Response::ok(Body::SlotInfo(SlotInfo {
        slot_description: desc,
        manufacturer_id: si.manufacturerID.to_vec(),
        flags: si.flags,
        hardware_version: v(si.hardwareVersion),
        firmware_version: v(si.firmwareVersion),
    }))
}

/// C_GetTokenInfo (§5.5): the backend's token with the virtual label and
/// serial. On a token whose PIN kmsd holds, the user PIN flags are the
/// identity's own (its failed-login budget), not the backend's.
pub fn token_info(d: &Daemon, ctx: &Context, q: GetTokenInfo) -> Response {
    let GetTokenInfo { slot } = q;
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    let (rv, ti) = d.backend.token_info(t.backend_slot);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    let label = if t.serial.is_some() {
        t.label.to_vec()
    } else {
        ti.label.to_vec()
    };
    let serial = t
        .serial
        .map(|s| s.to_vec())
        .unwrap_or_else(|| ti.serialNumber.to_vec());
    const USER_PIN_FLAGS: u64 = CKF_USER_PIN_COUNT_LOW
        | CKF_USER_PIN_FINAL_TRY
        | CKF_USER_PIN_LOCKED
        | CKF_USER_PIN_TO_BE_CHANGED;
    let flags = if t.anchored() {
        (ti.flags & !USER_PIN_FLAGS) | d.pins.flags(&ctx.identity.name)
    } else {
        ti.flags
    };
    Response::ok(Body::TokenInfo(TokenInfo {
        label,
        manufacturer_id: ti.manufacturerID.to_vec(),
        model: ti.model.to_vec(),
        serial_number: serial,
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
        hardware_version: v(ti.hardwareVersion),
        firmware_version: v(ti.firmwareVersion),
        utc_time: ti.utcTime.to_vec(),
    }))
}

/// C_WaitForSlotEvent (§5.5). The client's flags reach the backend, so its
/// answer is the backend's (SoftHSM: `CKR_NO_EVENT` when polled,
/// `CKR_FUNCTION_NOT_SUPPORTED` when asked to block). At most one blocking
/// wait runs in the backend at a time; other blocking callers are told
/// `CKR_NO_EVENT` and the library polls again on its caller's thread.
pub fn wait_for_slot_event(d: &Daemon, ctx: &Context, q: WaitForSlotEvent) -> Response {
    let WaitForSlotEvent { flags } = q;
    static BLOCKING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let (rv, backend_slot) = if flags & CKF_DONT_BLOCK != 0 {
        d.backend.wait_for_slot_event(flags)
    } else {
        match BLOCKING.try_lock() {
            Some(_g) => d.backend.wait_for_slot_event(flags),
            None => (CKR_NO_EVENT, 0),
        }
    };
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    match d
        .tokens_for(&ctx.identity)
        .iter()
        .find(|t| t.backend_slot == backend_slot)
    {
        Some(t) => Response::ok(Body::Slot(t.slot)),
        None => Response::rv(CKR_NO_EVENT),
    }
}

/// C_GetMechanismList (§5.5).
pub fn mechanism_list(d: &Daemon, ctx: &Context, q: GetMechanismList) -> Response {
    let GetMechanismList { slot } = q;
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    let (rv, list) = d.backend.mechanism_list(t.backend_slot);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    Response::ok(Body::Mechanisms(list))
}

/// C_GetMechanismInfo (§5.5).
pub fn mechanism_info(d: &Daemon, ctx: &Context, q: GetMechanismInfo) -> Response {
    let GetMechanismInfo {
        slot,
        mechanism: mech,
    } = q;
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    let (rv, mi) = d.backend.mechanism_info(t.backend_slot, mech);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    Response::ok(Body::MechanismInfo(MechanismInfo {
        min_key_size: mi.ulMinKeySize,
        max_key_size: mi.ulMaxKeySize,
        flags: mi.flags,
    }))
}

/// C_InitToken (§5.5): forwarded only where the configuration allows SO functions.
pub fn init_token(d: &Daemon, ctx: &Context, q: InitToken) -> Response {
    let InitToken { slot, pin, label } = q;
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    if !t.so_functions {
        return Response::rv(CKR_FUNCTION_NOT_SUPPORTED);
    }
    if ctx.state.lock().sessions.values().any(|s| s.slot == slot) {
        return Response::rv(CKR_SESSION_EXISTS);
    }
    let mut l = [b' '; 32];
    let n = label.len().min(32);
    l[..n].copy_from_slice(&label[..n]);
    Response::rv(
        d.backend
            .init_token(t.backend_slot, pin.as_ref().map(|p| p.expose()), &l),
    )
}

/// C_InitPIN (§5.5): an SO function.
pub fn init_pin(d: &Daemon, ctx: &Context, q: InitPin) -> Response {
    let InitPin { session, pin } = q;
    sess::with_so(d, ctx, session, |s, _| {
        d.backend
            .init_pin(s.backend, pin.as_ref().map(|p| p.expose()))
    })
}

/// C_SetPIN (§5.5): forwarded only where the configuration allows SO functions;
/// a virtual token's PINs are kmsd's configuration.
pub fn set_pin(d: &Daemon, ctx: &Context, q: SetPin) -> Response {
    let SetPin { session, old, new } = q;
    let new = new.as_ref().map(|p| p.expose());
    sess::with_so(d, ctx, session, |s, t| {
        let rv = d
            .backend
            .set_pin(s.backend, old.as_ref().map(|p| p.expose()), new);
        if rv == CKR_OK {
            d.backend_pin_changed(t, new);
        }
        rv
    })
}
