//! kmsd's request decoder: any bytes decode or are refused, never a panic,
//! a stack overflow or an allocation beyond the input's own size; what
//! decodes encodes back to the same bytes.
#![no_main]

use kmsp11_proto::{decode, encode, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = decode::<Envelope>(data) {
        let again = encode(&env).expect("a decoded envelope encodes");
        assert_eq!(decode::<Envelope>(&again).expect("re-decodes"), env);
    }
});
