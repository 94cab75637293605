//! What a REST caller's bytes meet before any call runs (request bodies,
//! key names, ciphertexts, base64, peer public keys, ECDSA signatures):
//! refused or read, never a crash, and what is read reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kmsd::front::rest::fuzz_inputs(data);
});
