//! General-purpose functions (PKCS#11 3.0 §5.4) and the legacy parallel
//! function management (§5.20).

use pkcs11_sys::*;

use super::list::FUNCTION_LIST;
use kmsp11_proto::pad;

use super::ptr::write_list;
use super::{answer, export, ok, version, INTERFACE};
use crate::api;
use crate::error::Error;

kmsp11_proto::calls!(chapter_shells, general);
use super::chapter_shells;

export! {
    /// C_Initialize (§5.4). Application mutex callbacks without
    /// `CKF_OS_LOCKING_OK` are `CKR_CANT_LOCK`: the library locks with the OS.
    fn C_Initialize(pInitArgs: CK_VOID_PTR) {
        if !pInitArgs.is_null() {
            // SAFETY: a non-NULL argument points to CK_C_INITIALIZE_ARGS.
            let a = unsafe { &*(pInitArgs as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(Error::ArgumentsBad("pReserved must be NULL"));
            }
            let given = [a.CreateMutex.is_some(), a.DestroyMutex.is_some(), a.LockMutex.is_some(), a.UnlockMutex.is_some()];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(Error::ArgumentsBad("some but not all mutex callbacks given"));
            }
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::CantLock);
            }
        }
        ok(api::general::initialize())
    }

    /// C_Finalize (§5.4).
    fn C_Finalize(pReserved: CK_VOID_PTR) {
        if !pReserved.is_null() {
            api::client()?;
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        ok(api::general::finalize())
    }

    /// C_GetInfo (§5.4): answered by the library.
    fn C_GetInfo(pInfo: CK_INFO_PTR) |_| {
        answer(pInfo, || {
            let i = api::general::info();
            Ok(CK_INFO {
                cryptokiVersion: version(&i.cryptoki_version),
                manufacturerID: pad(&i.manufacturer_id),
                flags: i.flags,
                libraryDescription: pad(&i.library_description),
                libraryVersion: version(&i.library_version),
            })
        })
    }

    /// C_GetFunctionList (§5.4).
    fn C_GetFunctionList(ppFunctionList: CK_FUNCTION_LIST_PTR_PTR) {
        answer(ppFunctionList, || Ok(&FUNCTION_LIST as *const _ as CK_FUNCTION_LIST_PTR))
    }

    /// C_GetInterfaceList (PKCS#11 3.0 §5.4): one interface, "PKCS 11" 2.40.
    fn C_GetInterfaceList(pInterfacesList: CK_INTERFACE_PTR, pulCount: CK_ULONG_PTR) {
        // SAFETY: pointers per the spec.
        unsafe { write_list(pInterfacesList, pulCount, std::iter::once(CK_INTERFACE { ..INTERFACE.0 })) }
    }

    /// C_GetInterface (PKCS#11 3.0 §5.4). Only "PKCS 11" version 2.40 without
    /// flags exists here: another name (NSS asks for "Vendor NSS FIPS
    /// Interface"), another version or a flag we do not offer
    /// (`CKF_INTERFACE_FORK_SAFE`: a forked child must initialise again) is
    /// `CKR_ARGUMENTS_BAD`, which NSS takes as "not offered" and falls back.
    fn C_GetInterface(pInterfaceName: CK_UTF8CHAR_PTR, pVersion: CK_VERSION_PTR, ppInterface: CK_INTERFACE_PTR_PTR, flags: CK_FLAGS) {
        answer(ppInterface, || {
            if !pInterfaceName.is_null() {
                // SAFETY: a NUL-terminated string per the spec.
                let name = unsafe { std::ffi::CStr::from_ptr(pInterfaceName as *const std::ffi::c_char) };
                if name.to_bytes() != b"PKCS 11" {
                    return Err(Error::ArgumentsBad("unknown interface name"));
                }
            }
            // SAFETY: NULL or a CK_VERSION per the spec.
            if let Some(v) = unsafe { pVersion.as_ref() } {
                if (v.major, v.minor) != (2, 40) {
                    return Err(Error::ArgumentsBad("interface version not offered"));
                }
            }
            if flags & !INTERFACE.0.flags != 0 {
                return Err(Error::ArgumentsBad("interface flags not offered"));
            }
            Ok(&INTERFACE.0 as *const CK_INTERFACE as CK_INTERFACE_PTR)
        })
    }
}
