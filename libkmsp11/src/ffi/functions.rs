//! Every exported `C_*` function. Each one is a thin shell: read the
//! caller's pointers through the checked helpers, call the safe `api`
//! function, write the answer back. The safety contract of each function is
//! the PKCS#11 2.40 specification's for that function.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use kmsp11_proto::{Info, MechanismInfo, SessionInfo, SlotInfo, TokenInfo, Version};
use pkcs11_sys::*;

use super::convert::{mechanism, queries, template, write_answers};
use super::ptr::{bytes_in, fill, out_buf, pin_in, put, write_list, write_out};
use super::{guard, FUNCTION_LIST, INTERFACE};
use crate::api::{self, operations as ops};
use crate::error::{Error, Result};

fn ok(r: Result<()>) -> Result<CK_RV> {
    r.map(|_| CKR_OK)
}

/// The body of a call that creates one object: initialised library, a
/// non-NULL handle pointer, then the call, then the handle written back.
fn creates(ph: CK_OBJECT_HANDLE_PTR, f: impl FnOnce() -> Result<u64>) -> Result<CK_RV> {
    api::client()?;
    if ph.is_null() {
        return Err(Error::ArgumentsBad("NULL object handle pointer"));
    }
    let h = f()?;
    // SAFETY: checked non-NULL; writable by the caller's contract.
    unsafe { put(ph, h as CK_OBJECT_HANDLE) }?;
    Ok(CKR_OK)
}

fn version(v: &Version) -> CK_VERSION {
    CK_VERSION {
        major: v.major,
        minor: v.minor,
    }
}

// ---- general (§5.4) ----

#[no_mangle]
pub unsafe extern "C" fn C_Initialize(pInitArgs: CK_VOID_PTR) -> CK_RV {
    guard("C_Initialize", || {
        if !pInitArgs.is_null() {
            // SAFETY: a non-NULL argument points to CK_C_INITIALIZE_ARGS.
            let a = unsafe { &*(pInitArgs as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(Error::ArgumentsBad("pReserved must be NULL"));
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(Error::ArgumentsBad(
                    "some but not all mutex callbacks given",
                ));
            }
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::CantLock);
            }
        }
        ok(api::general::initialize())
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Finalize(pReserved: CK_VOID_PTR) -> CK_RV {
    guard("C_Finalize", || {
        if !pReserved.is_null() {
            api::client()?;
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        ok(api::general::finalize())
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(pInfo: CK_INFO_PTR) -> CK_RV {
    guard("C_GetInfo", || {
        let i: Info = api::general::info()?;
        let mut out = CK_INFO {
            cryptokiVersion: version(&i.cryptoki_version),
            flags: i.flags,
            libraryVersion: version(&i.library_version),
            ..Default::default()
        };
        fill(&mut out.manufacturerID, &i.manufacturer_id);
        fill(&mut out.libraryDescription, &i.library_description);
        // SAFETY: out-pointer per the spec.
        unsafe { put(pInfo, out) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(ppFunctionList: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    guard("C_GetFunctionList", || {
        // SAFETY: out-pointer per the spec.
        unsafe {
            put(
                ppFunctionList,
                &FUNCTION_LIST as *const _ as CK_FUNCTION_LIST_PTR,
            )
        }?;
        Ok(CKR_OK)
    })
}

/// C_GetInterfaceList (PKCS#11 3.0 §5.4): one interface, "PKCS 11" 2.40.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(
    pInterfacesList: CK_INTERFACE_PTR,
    pulCount: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_GetInterfaceList", || {
        if pulCount.is_null() {
            return Err(Error::ArgumentsBad("NULL pulCount"));
        }
        // SAFETY: pointers per the spec, checked above or here.
        unsafe {
            if pInterfacesList.is_null() {
                *pulCount = 1;
                return Ok(CKR_OK);
            }
            if *pulCount < 1 {
                *pulCount = 1;
                return Ok(CKR_BUFFER_TOO_SMALL);
            }
            pInterfacesList.write(CK_INTERFACE { ..INTERFACE.0 });
            *pulCount = 1;
        }
        Ok(CKR_OK)
    })
}

/// C_GetInterface (PKCS#11 3.0 §5.4). Only "PKCS 11" version 2.40 without
/// flags exists here: another name (NSS asks for "Vendor NSS FIPS
/// Interface"), another version or a flag we do not offer
/// (`CKF_INTERFACE_FORK_SAFE`: a forked child must initialise again) is
/// `CKR_ARGUMENTS_BAD`, which NSS takes as "not offered" and falls back.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    pInterfaceName: CK_UTF8CHAR_PTR,
    pVersion: CK_VERSION_PTR,
    ppInterface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> CK_RV {
    guard("C_GetInterface", || {
        if ppInterface.is_null() {
            return Err(Error::ArgumentsBad("NULL ppInterface"));
        }
        if !pInterfaceName.is_null() {
            // SAFETY: a NUL-terminated string per the spec.
            let name =
                unsafe { std::ffi::CStr::from_ptr(pInterfaceName as *const std::ffi::c_char) };
            if name.to_bytes() != b"PKCS 11" {
                return Err(Error::ArgumentsBad("unknown interface name"));
            }
        }
        if !pVersion.is_null() {
            // SAFETY: checked non-NULL.
            let v = unsafe { *pVersion };
            if (v.major, v.minor) != (2, 40) {
                return Err(Error::ArgumentsBad("interface version not offered"));
            }
        }
        if flags & !INTERFACE.0.flags != 0 {
            return Err(Error::ArgumentsBad("interface flags not offered"));
        }
        // SAFETY: checked non-NULL; the interface is a static.
        unsafe { *ppInterface = &INTERFACE.0 as *const CK_INTERFACE as CK_INTERFACE_PTR };
        Ok(CKR_OK)
    })
}

// ---- slot_token (§5.5) ----

#[no_mangle]
pub unsafe extern "C" fn C_GetSlotList(
    tokenPresent: CK_BBOOL,
    pSlotList: CK_SLOT_ID_PTR,
    pulCount: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_GetSlotList", || {
        let slots = api::slot_token::slot_list(tokenPresent != 0)?;
        // SAFETY: pointers per the spec.
        unsafe { write_list(pSlotList, pulCount, &slots) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) -> CK_RV {
    guard("C_GetSlotInfo", || {
        if pInfo.is_null() {
            api::client()?;
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let s: SlotInfo = api::slot_token::slot_info(slotID)?;
        let mut out = CK_SLOT_INFO {
            flags: s.flags,
            hardwareVersion: version(&s.hardware_version),
            firmwareVersion: version(&s.firmware_version),
            ..Default::default()
        };
        fill(&mut out.slotDescription, &s.slot_description);
        fill(&mut out.manufacturerID, &s.manufacturer_id);
        // SAFETY: checked non-NULL.
        unsafe { put(pInfo, out) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) -> CK_RV {
    guard("C_GetTokenInfo", || {
        if pInfo.is_null() {
            api::client()?;
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let t: TokenInfo = api::slot_token::token_info(slotID)?;
        let mut out = CK_TOKEN_INFO {
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
            ..Default::default()
        };
        fill(&mut out.label, &t.label);
        fill(&mut out.manufacturerID, &t.manufacturer_id);
        fill(&mut out.model, &t.model);
        fill(&mut out.serialNumber, &t.serial_number);
        fill(&mut out.utcTime, &t.utc_time);
        // SAFETY: checked non-NULL.
        unsafe { put(pInfo, out) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    pSlot: CK_SLOT_ID_PTR,
    pReserved: CK_VOID_PTR,
) -> CK_RV {
    guard("C_WaitForSlotEvent", || {
        api::client()?;
        if pSlot.is_null() || !pReserved.is_null() {
            return Err(Error::ArgumentsBad("NULL pSlot or non-NULL pReserved"));
        }
        let s = api::slot_token::wait_for_slot_event(flags)?;
        // SAFETY: checked non-NULL.
        unsafe { put(pSlot, s as CK_SLOT_ID) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismList(
    slotID: CK_SLOT_ID,
    pMechanismList: CK_MECHANISM_TYPE_PTR,
    pulCount: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_GetMechanismList", || {
        if pulCount.is_null() {
            api::client()?;
            return Err(Error::ArgumentsBad("NULL pulCount"));
        }
        let list = api::slot_token::mechanism_list(slotID)?;
        // SAFETY: pointers per the spec.
        unsafe { write_list(pMechanismList, pulCount, &list) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slotID: CK_SLOT_ID,
    type_: CK_MECHANISM_TYPE,
    pInfo: CK_MECHANISM_INFO_PTR,
) -> CK_RV {
    guard("C_GetMechanismInfo", || {
        if pInfo.is_null() {
            api::client()?;
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let m: MechanismInfo = api::slot_token::mechanism_info(slotID, type_)?;
        // SAFETY: checked non-NULL.
        unsafe {
            put(
                pInfo,
                CK_MECHANISM_INFO {
                    ulMinKeySize: m.min_key_size,
                    ulMaxKeySize: m.max_key_size,
                    flags: m.flags,
                },
            )
        }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_InitToken(
    slotID: CK_SLOT_ID,
    pPin: CK_UTF8CHAR_PTR,
    ulPinLen: CK_ULONG,
    pLabel: CK_UTF8CHAR_PTR,
) -> CK_RV {
    guard("C_InitToken", || {
        api::client()?;
        if pLabel.is_null() {
            return Err(Error::ArgumentsBad("NULL pLabel"));
        }
        // SAFETY: the PIN is `ulPinLen` bytes; the label is 32 bytes by the spec.
        let (pin, label) = unsafe {
            (
                pin_in(pPin, ulPinLen)?,
                bytes_in(pLabel, 32)?.unwrap_or_default(),
            )
        };
        ok(api::slot_token::init_token(slotID, pin, label))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_InitPIN(
    hSession: CK_SESSION_HANDLE,
    pPin: CK_UTF8CHAR_PTR,
    ulPinLen: CK_ULONG,
) -> CK_RV {
    guard("C_InitPIN", || {
        api::client()?;
        // SAFETY: `ulPinLen` bytes at `pPin`.
        let pin = unsafe { pin_in(pPin, ulPinLen) }?;
        ok(api::slot_token::init_pin(hSession, pin))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SetPIN(
    hSession: CK_SESSION_HANDLE,
    pOldPin: CK_UTF8CHAR_PTR,
    ulOldLen: CK_ULONG,
    pNewPin: CK_UTF8CHAR_PTR,
    ulNewLen: CK_ULONG,
) -> CK_RV {
    guard("C_SetPIN", || {
        api::client()?;
        // SAFETY: lengths per the spec.
        let (old, new) = unsafe { (pin_in(pOldPin, ulOldLen)?, pin_in(pNewPin, ulNewLen)?) };
        ok(api::slot_token::set_pin(hSession, old, new))
    })
}

// ---- session (§5.6) ----

#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    slotID: CK_SLOT_ID,
    flags: CK_FLAGS,
    _pApplication: CK_VOID_PTR,
    _Notify: CK_NOTIFY,
    phSession: CK_SESSION_HANDLE_PTR,
) -> CK_RV {
    guard("C_OpenSession", || {
        api::client()?;
        if phSession.is_null() {
            return Err(Error::ArgumentsBad("NULL phSession"));
        }
        let h = api::session::open_session(slotID, flags)?;
        // SAFETY: checked non-NULL.
        unsafe { put(phSession, h as CK_SESSION_HANDLE) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CloseSession(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_CloseSession", || {
        ok(api::session::close_session(hSession))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CloseAllSessions(slotID: CK_SLOT_ID) -> CK_RV {
    guard("C_CloseAllSessions", || {
        ok(api::session::close_all_sessions(slotID))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(
    hSession: CK_SESSION_HANDLE,
    pInfo: CK_SESSION_INFO_PTR,
) -> CK_RV {
    guard("C_GetSessionInfo", || {
        api::client()?;
        if pInfo.is_null() {
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let s: SessionInfo = api::session::session_info(hSession)?;
        // SAFETY: checked non-NULL.
        unsafe {
            put(
                pInfo,
                CK_SESSION_INFO {
                    slotID: s.slot,
                    state: s.state,
                    flags: s.flags,
                    ulDeviceError: s.device_error,
                },
            )
        }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetOperationState(
    hSession: CK_SESSION_HANDLE,
    pOperationState: CK_BYTE_PTR,
    pulOperationStateLen: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_GetOperationState", || {
        api::client()?;
        // SAFETY: pointers per the spec.
        let cap = unsafe { out_buf(pOperationState, pulOperationStateLen) }?;
        let r = api::session::operation_state(hSession, cap)?;
        // SAFETY: as above.
        Ok(unsafe { write_out(pOperationState, pulOperationStateLen, cap, r) })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SetOperationState(
    hSession: CK_SESSION_HANDLE,
    pOperationState: CK_BYTE_PTR,
    ulOperationStateLen: CK_ULONG,
    hEncryptionKey: CK_OBJECT_HANDLE,
    hAuthenticationKey: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard("C_SetOperationState", || {
        api::client()?;
        // SAFETY: `ulOperationStateLen` bytes.
        let st = unsafe { bytes_in(pOperationState, ulOperationStateLen) }?;
        ok(api::session::set_operation_state(
            hSession,
            st,
            hEncryptionKey,
            hAuthenticationKey,
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Login(
    hSession: CK_SESSION_HANDLE,
    userType: CK_USER_TYPE,
    pPin: CK_UTF8CHAR_PTR,
    ulPinLen: CK_ULONG,
) -> CK_RV {
    guard("C_Login", || {
        api::client()?;
        // SAFETY: `ulPinLen` bytes.
        let pin = unsafe { pin_in(pPin, ulPinLen) }?;
        ok(api::session::login(hSession, userType, pin))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Logout(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_Logout", || ok(api::session::logout(hSession)))
}

// ---- object (§5.7) ----

#[no_mangle]
pub unsafe extern "C" fn C_CreateObject(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phObject: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    guard("C_CreateObject", || {
        creates(phObject, || {
            // SAFETY: template per the spec.
            let t = unsafe { template(pTemplate, ulCount) }?;
            api::object::create_object(hSession, t)
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CopyObject(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phNewObject: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    guard("C_CopyObject", || {
        creates(phNewObject, || {
            // SAFETY: template per the spec.
            let t = unsafe { template(pTemplate, ulCount) }?;
            api::object::copy_object(hSession, hObject, t)
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DestroyObject(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard("C_DestroyObject", || {
        ok(api::object::destroy_object(hSession, hObject))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetObjectSize(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pulSize: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_GetObjectSize", || {
        api::client()?;
        if pulSize.is_null() {
            return Err(Error::ArgumentsBad("NULL pulSize"));
        }
        let n = api::object::object_size(hSession, hObject)?;
        // SAFETY: checked non-NULL.
        unsafe { put(pulSize, n as CK_ULONG) }?;
        Ok(CKR_OK)
    })
}

/// C_GetAttributeValue (§5.7): every attribute is answered even when the
/// call as a whole returns `CKR_ATTRIBUTE_SENSITIVE`, `CKR_ATTRIBUTE_TYPE_INVALID`
/// or `CKR_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> CK_RV {
    guard("C_GetAttributeValue", || {
        api::client()?;
        // SAFETY: template per the spec.
        let q = unsafe { queries(pTemplate, ulCount) }?;
        let (rv, answers) = api::object::attribute_value(hSession, hObject, q.clone())?;
        // SAFETY: the same template the queries were read from.
        unsafe { write_answers(pTemplate, &q, rv, &answers) }?;
        Ok(rv)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> CK_RV {
    guard("C_SetAttributeValue", || {
        api::client()?;
        // SAFETY: template per the spec.
        let t = unsafe { template(pTemplate, ulCount) }?;
        ok(api::object::set_attribute_value(hSession, hObject, t))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> CK_RV {
    guard("C_FindObjectsInit", || {
        api::client()?;
        // SAFETY: template per the spec.
        let t = unsafe { template(pTemplate, ulCount) }?;
        ok(api::object::find_objects_init(hSession, t))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    hSession: CK_SESSION_HANDLE,
    phObject: CK_OBJECT_HANDLE_PTR,
    ulMaxObjectCount: CK_ULONG,
    pulObjectCount: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_FindObjects", || {
        api::client()?;
        if pulObjectCount.is_null() || (phObject.is_null() && ulMaxObjectCount > 0) {
            return Err(Error::ArgumentsBad("NULL phObject or pulObjectCount"));
        }
        let found = api::object::find_objects(hSession, ulMaxObjectCount as u64)?;
        // SAFETY: room for ulMaxObjectCount handles; found.len() <= that.
        unsafe {
            for (i, h) in found.iter().enumerate() {
                *phObject.add(i) = *h as CK_OBJECT_HANDLE;
            }
            *pulObjectCount = found.len() as CK_ULONG;
        }
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_FindObjectsFinal", || {
        ok(api::object::find_objects_final(hSession))
    })
}

// ---- encrypt, decrypt, digest, sign, verify (§5.8-§5.13) ----

unsafe fn init(
    name: &'static str,
    kind: ops::Init,
    s: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(name, || {
        api::client()?;
        // SAFETY: mechanism per the spec.
        let m = unsafe { mechanism(m, api::raw_vendor) }?;
        ok(ops::init(kind, s, m, key))
    })
}

unsafe fn data_out(
    name: &'static str,
    kind: ops::DataCall,
    s: CK_SESSION_HANDLE,
    p: CK_BYTE_PTR,
    n: CK_ULONG,
    out: CK_BYTE_PTR,
    pn: CK_ULONG_PTR,
) -> CK_RV {
    guard(name, || {
        api::client()?;
        // SAFETY: pointers per the spec.
        let (data, cap) = unsafe { (bytes_in(p, n)?, out_buf(out, pn)?) };
        let r = ops::data_out(kind, s, data, cap)?;
        // SAFETY: the buffer described by `cap`.
        Ok(unsafe { write_out(out, pn, cap, r) })
    })
}

unsafe fn final_out(
    name: &'static str,
    kind: ops::FinalCall,
    s: CK_SESSION_HANDLE,
    out: CK_BYTE_PTR,
    pn: CK_ULONG_PTR,
) -> CK_RV {
    guard(name, || {
        api::client()?;
        // SAFETY: pointers per the spec.
        let cap = unsafe { out_buf(out, pn) }?;
        let r = ops::final_out(kind, s, cap)?;
        // SAFETY: the buffer described by `cap`.
        Ok(unsafe { write_out(out, pn, cap, r) })
    })
}

unsafe fn data_in(
    name: &'static str,
    kind: ops::InCall,
    s: CK_SESSION_HANDLE,
    p: CK_BYTE_PTR,
    n: CK_ULONG,
) -> CK_RV {
    guard(name, || {
        api::client()?;
        // SAFETY: `n` bytes at `p`.
        let data = unsafe { bytes_in(p, n) }?;
        ok(ops::data_in(kind, s, data))
    })
}

macro_rules! init_fn {
    ($name:ident, $kind:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            hSession: CK_SESSION_HANDLE,
            pMechanism: CK_MECHANISM_PTR,
            hKey: CK_OBJECT_HANDLE,
        ) -> CK_RV {
            // SAFETY: forwarded caller contract.
            unsafe {
                init(
                    stringify!($name),
                    ops::Init::$kind,
                    hSession,
                    pMechanism,
                    hKey,
                )
            }
        }
    };
}
macro_rules! data_out_fn {
    ($name:ident, $kind:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            hSession: CK_SESSION_HANDLE,
            pIn: CK_BYTE_PTR,
            ulInLen: CK_ULONG,
            pOut: CK_BYTE_PTR,
            pulOutLen: CK_ULONG_PTR,
        ) -> CK_RV {
            // SAFETY: forwarded caller contract.
            unsafe {
                data_out(
                    stringify!($name),
                    ops::DataCall::$kind,
                    hSession,
                    pIn,
                    ulInLen,
                    pOut,
                    pulOutLen,
                )
            }
        }
    };
}
macro_rules! final_fn {
    ($name:ident, $kind:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            hSession: CK_SESSION_HANDLE,
            pOut: CK_BYTE_PTR,
            pulOutLen: CK_ULONG_PTR,
        ) -> CK_RV {
            // SAFETY: forwarded caller contract.
            unsafe {
                final_out(
                    stringify!($name),
                    ops::FinalCall::$kind,
                    hSession,
                    pOut,
                    pulOutLen,
                )
            }
        }
    };
}
macro_rules! data_in_fn {
    ($name:ident, $kind:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            hSession: CK_SESSION_HANDLE,
            pIn: CK_BYTE_PTR,
            ulInLen: CK_ULONG,
        ) -> CK_RV {
            // SAFETY: forwarded caller contract.
            unsafe {
                data_in(
                    stringify!($name),
                    ops::InCall::$kind,
                    hSession,
                    pIn,
                    ulInLen,
                )
            }
        }
    };
}

init_fn!(C_EncryptInit, Encrypt);
init_fn!(C_DecryptInit, Decrypt);
init_fn!(C_SignInit, Sign);
init_fn!(C_VerifyInit, Verify);
init_fn!(C_SignRecoverInit, SignRecover);
init_fn!(C_VerifyRecoverInit, VerifyRecover);
data_out_fn!(C_Encrypt, Encrypt);
data_out_fn!(C_EncryptUpdate, EncryptUpdate);
data_out_fn!(C_Decrypt, Decrypt);
data_out_fn!(C_DecryptUpdate, DecryptUpdate);
data_out_fn!(C_Digest, Digest);
data_out_fn!(C_Sign, Sign);
data_out_fn!(C_SignRecover, SignRecover);
data_out_fn!(C_VerifyRecover, VerifyRecover);
data_out_fn!(C_DigestEncryptUpdate, DigestEncryptUpdate);
data_out_fn!(C_DecryptDigestUpdate, DecryptDigestUpdate);
data_out_fn!(C_SignEncryptUpdate, SignEncryptUpdate);
data_out_fn!(C_DecryptVerifyUpdate, DecryptVerifyUpdate);
final_fn!(C_EncryptFinal, Encrypt);
final_fn!(C_DecryptFinal, Decrypt);
final_fn!(C_DigestFinal, Digest);
final_fn!(C_SignFinal, Sign);
data_in_fn!(C_SignUpdate, SignUpdate);
data_in_fn!(C_VerifyUpdate, VerifyUpdate);
data_in_fn!(C_DigestUpdate, DigestUpdate);
data_in_fn!(C_SeedRandom, SeedRandom);

#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
) -> CK_RV {
    guard("C_DigestInit", || {
        api::client()?;
        // SAFETY: mechanism per the spec.
        let m = unsafe { mechanism(pMechanism, api::raw_vendor) }?;
        ok(ops::digest_init(hSession, m))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE) -> CK_RV {
    guard("C_DigestKey", || ok(ops::digest_key(hSession, hKey)))
}

#[no_mangle]
pub unsafe extern "C" fn C_Verify(
    hSession: CK_SESSION_HANDLE,
    pData: CK_BYTE_PTR,
    ulDataLen: CK_ULONG,
    pSignature: CK_BYTE_PTR,
    ulSignatureLen: CK_ULONG,
) -> CK_RV {
    guard("C_Verify", || {
        api::client()?;
        // SAFETY: lengths per the spec.
        let (d, s) = unsafe {
            (
                bytes_in(pData, ulDataLen)?,
                bytes_in(pSignature, ulSignatureLen)?,
            )
        };
        ok(ops::verify(hSession, d, s))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_VerifyFinal(
    hSession: CK_SESSION_HANDLE,
    pSignature: CK_BYTE_PTR,
    ulSignatureLen: CK_ULONG,
) -> CK_RV {
    guard("C_VerifyFinal", || {
        api::client()?;
        // SAFETY: `ulSignatureLen` bytes.
        let s = unsafe { bytes_in(pSignature, ulSignatureLen) }?;
        ok(ops::verify_final(hSession, s))
    })
}

// ---- keymgmt (§5.14) ----

#[no_mangle]
pub unsafe extern "C" fn C_GenerateKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    guard("C_GenerateKey", || {
        creates(phKey, || {
            // SAFETY: mechanism and template per the spec.
            let (m, t) = unsafe {
                (
                    mechanism(pMechanism, api::raw_vendor)?,
                    template(pTemplate, ulCount)?,
                )
            };
            api::keymgmt::generate_key(hSession, m, t)
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GenerateKeyPair(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPublicKeyAttributeCount: CK_ULONG,
    pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPrivateKeyAttributeCount: CK_ULONG,
    phPublicKey: CK_OBJECT_HANDLE_PTR,
    phPrivateKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    guard("C_GenerateKeyPair", || {
        api::client()?;
        if phPublicKey.is_null() || phPrivateKey.is_null() {
            return Err(Error::ArgumentsBad("NULL key handle pointer"));
        }
        // SAFETY: mechanism and templates per the spec.
        let (m, pu, pr) = unsafe {
            (
                mechanism(pMechanism, api::raw_vendor)?,
                template(pPublicKeyTemplate, ulPublicKeyAttributeCount)?,
                template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)?,
            )
        };
        let (a, b) = api::keymgmt::generate_key_pair(hSession, m, pu, pr)?;
        // SAFETY: checked non-NULL.
        unsafe {
            put(phPublicKey, a as CK_OBJECT_HANDLE)?;
            put(phPrivateKey, b as CK_OBJECT_HANDLE)?;
        }
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_WrapKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hWrappingKey: CK_OBJECT_HANDLE,
    hKey: CK_OBJECT_HANDLE,
    pWrappedKey: CK_BYTE_PTR,
    pulWrappedKeyLen: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_WrapKey", || {
        api::client()?;
        // SAFETY: pointers per the spec.
        let (m, cap) = unsafe {
            (
                mechanism(pMechanism, api::raw_vendor)?,
                out_buf(pWrappedKey, pulWrappedKeyLen)?,
            )
        };
        let r = api::keymgmt::wrap_key(hSession, m, hWrappingKey, hKey, cap)?;
        // SAFETY: the buffer described by `cap`.
        Ok(unsafe { write_out(pWrappedKey, pulWrappedKeyLen, cap, r) })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_UnwrapKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hUnwrappingKey: CK_OBJECT_HANDLE,
    pWrappedKey: CK_BYTE_PTR,
    ulWrappedKeyLen: CK_ULONG,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulAttributeCount: CK_ULONG,
    phKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    guard("C_UnwrapKey", || {
        creates(phKey, || {
            // SAFETY: pointers per the spec.
            let (m, w, t) = unsafe {
                (
                    mechanism(pMechanism, api::raw_vendor)?,
                    bytes_in(pWrappedKey, ulWrappedKeyLen)?,
                    template(pTemplate, ulAttributeCount)?,
                )
            };
            api::keymgmt::unwrap_key(hSession, m, hUnwrappingKey, w, t)
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DeriveKey(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hBaseKey: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulAttributeCount: CK_ULONG,
    phKey: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    guard("C_DeriveKey", || {
        creates(phKey, || {
            // SAFETY: pointers per the spec.
            let (m, t) = unsafe {
                (
                    mechanism(pMechanism, api::raw_vendor)?,
                    template(pTemplate, ulAttributeCount)?,
                )
            };
            api::keymgmt::derive_key(hSession, m, hBaseKey, t)
        })
    })
}

// ---- random (§5.15) and parallel (§5.16) ----

#[no_mangle]
pub unsafe extern "C" fn C_GenerateRandom(
    hSession: CK_SESSION_HANDLE,
    RandomData: CK_BYTE_PTR,
    ulRandomLen: CK_ULONG,
) -> CK_RV {
    guard("C_GenerateRandom", || {
        api::client()?;
        if RandomData.is_null() && ulRandomLen > 0 {
            return Err(Error::ArgumentsBad("NULL RandomData"));
        }
        let d = ops::generate_random(hSession, ulRandomLen as u64)?;
        // SAFETY: the caller's buffer holds `ulRandomLen` == d.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), RandomData, d.len()) };
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionStatus(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_GetFunctionStatus", || ok(ops::function_status(hSession)))
}

#[no_mangle]
pub unsafe extern "C" fn C_CancelFunction(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_CancelFunction", || ok(ops::cancel_function(hSession)))
}

pub const LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};
