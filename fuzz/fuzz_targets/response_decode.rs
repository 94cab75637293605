//! The library's response decoder (a rogue or broken kmsd must never crash
//! the host application): any bytes decode or are refused.
#![no_main]

use kmsp11_proto::{decode, encode, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode::<Response>(data) {
        let again = encode(&r).expect("a decoded response encodes");
        assert_eq!(decode::<Response>(&again).expect("re-decodes"), r);
    }
});
