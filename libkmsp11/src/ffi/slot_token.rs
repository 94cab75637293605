//! Slot and token management (PKCS#11 3.0 §5.5).

use pkcs11_sys::*;

use kmsp11_proto::pad;

use super::ptr::{bytes_in, pin_in, write_list};
use super::{answer, export, ok, version};
use crate::api::slot_token as api;
use crate::error::Error;

export! {
    /// C_GetSlotList (§5.5).
    fn C_GetSlotList(tokenPresent: CK_BBOOL, pSlotList: CK_SLOT_ID_PTR, pulCount: CK_ULONG_PTR) |c| {
        let slots = api::slot_list(c, tokenPresent != 0)?;
        // SAFETY: pointers per the spec.
        unsafe { write_list(pSlotList, pulCount, slots.iter().map(|&s| s as CK_SLOT_ID)) }
    }

    /// C_GetSlotInfo (§5.5).
    fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) |c| {
        answer(pInfo, || {
            let s = api::slot_info(c, slotID)?;
            Ok(CK_SLOT_INFO {
                slotDescription: pad(&s.slot_description),
                manufacturerID: pad(&s.manufacturer_id),
                flags: s.flags,
                hardwareVersion: version(&s.hardware_version),
                firmwareVersion: version(&s.firmware_version),
            })
        })
    }

    /// C_GetTokenInfo (§5.5).
    fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) |c| {
        answer(pInfo, || {
            let t = api::token_info(c, slotID)?;
            Ok(CK_TOKEN_INFO {
                label: pad(&t.label),
                manufacturerID: pad(&t.manufacturer_id),
                model: pad(&t.model),
                serialNumber: pad(&t.serial_number),
                flags: t.flags,
                ulMaxSessionCount: t.max_session_count,
                ulSessionCount: t.session_count,
                ulMaxRwSessionCount: t.max_rw_session_count,
                ulRwSessionCount: t.rw_session_count,
                ulMaxPinLen: t.max_pin_len,
                ulMinPinLen: t.min_pin_len,
                ulTotalPublicMemory: t.total_public_memory,
                ulFreePublicMemory: t.free_public_memory,
                ulTotalPrivateMemory: t.total_private_memory,
                ulFreePrivateMemory: t.free_private_memory,
                hardwareVersion: version(&t.hardware_version),
                firmwareVersion: version(&t.firmware_version),
                utcTime: pad(&t.utc_time),
            })
        })
    }

    /// C_WaitForSlotEvent (§5.5).
    fn C_WaitForSlotEvent(flags: CK_FLAGS, pSlot: CK_SLOT_ID_PTR, pReserved: CK_VOID_PTR) |c| {
        if !pReserved.is_null() {
            return Err(Error::ArgumentsBad("non-NULL pReserved"));
        }
        answer(pSlot, || Ok(api::wait_for_slot_event(c, flags)? as CK_SLOT_ID))
    }

    /// C_GetMechanismList (§5.5).
    fn C_GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: CK_MECHANISM_TYPE_PTR, pulCount: CK_ULONG_PTR) |c| {
        if pulCount.is_null() {
            return Err(Error::ArgumentsBad("NULL pulCount"));
        }
        let list = api::mechanism_list(c, slotID)?;
        // SAFETY: pointers per the spec.
        unsafe { write_list(pMechanismList, pulCount, list.iter().map(|&m| m as CK_MECHANISM_TYPE)) }
    }

    /// C_GetMechanismInfo (§5.5).
    fn C_GetMechanismInfo(slotID: CK_SLOT_ID, type_: CK_MECHANISM_TYPE, pInfo: CK_MECHANISM_INFO_PTR) |c| {
        answer(pInfo, || {
            let m = api::mechanism_info(c, slotID, type_)?;
            Ok(CK_MECHANISM_INFO { ulMinKeySize: m.min_key_size, ulMaxKeySize: m.max_key_size, flags: m.flags })
        })
    }

    /// C_InitToken (§5.5).
    fn C_InitToken(slotID: CK_SLOT_ID, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG, pLabel: CK_UTF8CHAR_PTR) |c| {
        if pLabel.is_null() {
            return Err(Error::ArgumentsBad("NULL pLabel"));
        }
        // SAFETY: the PIN is `ulPinLen` bytes; the label is 32 bytes by the spec.
        let (pin, label) = unsafe { (pin_in(pPin, ulPinLen)?, bytes_in(pLabel, 32)?.unwrap_or_default()) };
        ok(api::init_token(c, slotID, pin, label))
    }

    /// C_InitPIN (§5.5).
    fn C_InitPIN(hSession: CK_SESSION_HANDLE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG) |c| {
        // SAFETY: `ulPinLen` bytes at `pPin`.
        ok(api::init_pin(c, hSession, unsafe { pin_in(pPin, ulPinLen) }?))
    }

    /// C_SetPIN (§5.5).
    fn C_SetPIN(hSession: CK_SESSION_HANDLE, pOldPin: CK_UTF8CHAR_PTR, ulOldLen: CK_ULONG, pNewPin: CK_UTF8CHAR_PTR, ulNewLen: CK_ULONG) |c| {
        // SAFETY: lengths per the spec.
        let (old, new) = unsafe { (pin_in(pOldPin, ulOldLen)?, pin_in(pNewPin, ulNewLen)?) };
        ok(api::set_pin(c, hSession, old, new))
    }
}
