//! General-purpose functions (PKCS#11 3.0 §5.4) and the legacy parallel
//! function management (§5.20).

use pkcs11_sys::*;

use super::list::FUNCTION_LIST;
use kmsp11_proto::pad;

use super::ptr::put;
use super::{guard, ok, version, with_client, INTERFACE};
use crate::api;
use crate::error::Error;

kmsp11_proto::calls!(chapter_shells, general);
use super::chapter_shells;

/// C_Initialize (§5.4). Application mutex callbacks without
/// `CKF_OS_LOCKING_OK` are `CKR_CANT_LOCK`: the library locks with the OS.
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

/// C_Finalize (§5.4).
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

/// C_GetInfo (§5.4): answered by the library.
#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(pInfo: CK_INFO_PTR) -> CK_RV {
    with_client("C_GetInfo", |_| {
        let i = api::general::info();
        let mut out = CK_INFO {
            cryptokiVersion: version(&i.cryptoki_version),
            flags: i.flags,
            libraryVersion: version(&i.library_version),
            ..Default::default()
        };
        out.manufacturerID = pad(&i.manufacturer_id);
        out.libraryDescription = pad(&i.library_description);
        // SAFETY: out-pointer per the spec.
        unsafe { put(pInfo, out) }?;
        Ok(CKR_OK)
    })
}

/// C_GetFunctionList (§5.4).
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
