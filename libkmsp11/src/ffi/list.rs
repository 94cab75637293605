//! The function list (PKCS#11 3.0 §5.4): a non-`mut` static, version 2.40,
//! filled from proto's call table plus the three functions the library
//! answers itself.

use pkcs11_sys::*;

/// Sets the field of one table row's C function; nothing for protocol calls.
macro_rules! entry {
    ($l:ident, none, $ch:ident) => {};
    ($l:ident, $c:ident, $ch:ident) => {
        $l.$c = Some(super::$ch::$c);
    };
}

macro_rules! build_list {
    (() $([$id:literal $v:ident $h:ident $c:ident $ch:ident $p:ident])*) => {
        /// Every entry of the list.
        pub static FUNCTION_LIST: CK_FUNCTION_LIST = {
            // SAFETY: CK_FUNCTION_LIST holds a CK_VERSION (bytes) and
            // `Option<fn>`s, for which all-zero bytes are valid (`None`).
            let mut l: CK_FUNCTION_LIST = unsafe { std::mem::zeroed() };
            l.version = CK_VERSION { major: 2, minor: 40 };
            l.C_Initialize = Some(super::general::C_Initialize);
            l.C_Finalize = Some(super::general::C_Finalize);
            l.C_GetFunctionList = Some(super::general::C_GetFunctionList);
            $( entry!(l, $c, $ch); )*
            l
        };
    };
}

kmsp11_proto::calls!(build_list);

#[cfg(test)]
mod tests {
    use super::*;

    // Every one of the 68 entries of a 2.40 function list is set.
    #[test]
    fn every_function_is_listed() {
        const ENTRIES: usize = 68;
        let base = std::mem::offset_of!(CK_FUNCTION_LIST, C_Initialize);
        assert_eq!(
            std::mem::size_of::<CK_FUNCTION_LIST>(),
            base + ENTRIES * std::mem::size_of::<usize>()
        );
        let p = (&FUNCTION_LIST as *const CK_FUNCTION_LIST).cast::<u8>();
        for i in 0..ENTRIES {
            // SAFETY: within the list, at pointer alignment (checked by the size above).
            let f = unsafe {
                p.add(base + i * std::mem::size_of::<usize>())
                    .cast::<usize>()
                    .read()
            };
            assert_ne!(f, 0, "entry {i} of the function list is empty");
        }
    }
}
