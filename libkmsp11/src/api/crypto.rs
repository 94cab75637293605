//! Encryption, decryption, message digesting, signing, verification,
//! dual-function operations and random numbers (PKCS#11 3.0 §5.8-§5.15):
//! the calls of their own shape. Output buffers keep the caller's
//! semantics: a `NULL` buffer is a length query and the operation stays
//! active, as does a `CKR_BUFFER_TOO_SMALL` answer; the HSM runs the
//! operation once.

use kmsp11_proto::{Body, DigestInit, DigestKey, GenerateRandom, Mechanism, Request, Verify};

use super::{body, rv_only};
use crate::client::Client;
use crate::error::{Error, Result};

/// C_DigestInit (§5.10).
pub fn digest_init(c: &Client, session: u64, mechanism: Mechanism) -> Result<()> {
    rv_only(c, Request::DigestInit(DigestInit { session, mechanism }))
}

/// C_DigestKey (§5.10).
pub fn digest_key(c: &Client, session: u64, key: u64) -> Result<()> {
    rv_only(c, Request::DigestKey(DigestKey { session, key }))
}

/// C_Verify (§5.12).
pub fn verify(
    c: &Client,
    session: u64,
    data: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
) -> Result<()> {
    rv_only(
        c,
        Request::Verify(Verify {
            session,
            data,
            signature,
        }),
    )
}

/// C_GenerateRandom (§5.15).
pub fn generate_random(c: &Client, session: u64, len: u64) -> Result<Vec<u8>> {
    match body(c, Request::GenerateRandom(GenerateRandom { session, len }))? {
        Body::Output { data: Some(d), .. } if d.len() as u64 == len => Ok(d),
        _ => Err(Error::Protocol("C_GenerateRandom")),
    }
}
