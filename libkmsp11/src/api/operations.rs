//! Encryption (§5.8), decryption (§5.9), message digesting (§5.10),
//! signing (§5.11), verification (§5.12), dual-function operations (§5.13)
//! and random numbers (§5.15). Output buffers keep the caller's semantics:
//! a `NULL` buffer is a length query and the operation stays active, as does
//! a `CKR_BUFFER_TOO_SMALL` answer; the HSM runs the operation once.

use kmsp11_proto::{Body, DataIn, DataOut, Mechanism, OpInit, OutBuf, OutOnly, Request};

use super::{body, output, rv_only, Output};
use crate::error::{Error, Result};

/// The `*Init` calls with a mechanism and a key.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    SignRecover,
    VerifyRecover,
}

/// C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit, C_SignRecoverInit, C_VerifyRecoverInit.
pub fn init(kind: Init, session: u64, mechanism: Mechanism, key: u64) -> Result<()> {
    let i = OpInit {
        session,
        mechanism,
        key,
    };
    rv_only(match kind {
        Init::Encrypt => Request::EncryptInit(i),
        Init::Decrypt => Request::DecryptInit(i),
        Init::Sign => Request::SignInit(i),
        Init::Verify => Request::VerifyInit(i),
        Init::SignRecover => Request::SignRecoverInit(i),
        Init::VerifyRecover => Request::VerifyRecoverInit(i),
    })
}

/// Calls that take data and write output.
#[derive(Debug, Clone, Copy)]
pub enum DataCall {
    Encrypt,
    EncryptUpdate,
    Decrypt,
    DecryptUpdate,
    Digest,
    Sign,
    SignRecover,
    VerifyRecover,
    DigestEncryptUpdate,
    DecryptDigestUpdate,
    SignEncryptUpdate,
    DecryptVerifyUpdate,
}

pub fn data_out(
    kind: DataCall,
    session: u64,
    data: Option<Vec<u8>>,
    out: OutBuf,
) -> Result<Output> {
    let d = DataOut { session, data, out };
    let req = match kind {
        DataCall::Encrypt => Request::Encrypt(d),
        DataCall::EncryptUpdate => Request::EncryptUpdate(d),
        DataCall::Decrypt => Request::Decrypt(d),
        DataCall::DecryptUpdate => Request::DecryptUpdate(d),
        DataCall::Digest => Request::Digest(d),
        DataCall::Sign => Request::Sign(d),
        DataCall::SignRecover => Request::SignRecover(d),
        DataCall::VerifyRecover => Request::VerifyRecover(d),
        DataCall::DigestEncryptUpdate => Request::DigestEncryptUpdate(d),
        DataCall::DecryptDigestUpdate => Request::DecryptDigestUpdate(d),
        DataCall::SignEncryptUpdate => Request::SignEncryptUpdate(d),
        DataCall::DecryptVerifyUpdate => Request::DecryptVerifyUpdate(d),
    };
    output(req, "data operation")
}

/// The `C_*Final` calls that write output.
#[derive(Debug, Clone, Copy)]
pub enum FinalCall {
    Encrypt,
    Decrypt,
    Digest,
    Sign,
}

pub fn final_out(kind: FinalCall, session: u64, out: OutBuf) -> Result<Output> {
    let o = OutOnly { session, out };
    let req = match kind {
        FinalCall::Encrypt => Request::EncryptFinal(o),
        FinalCall::Decrypt => Request::DecryptFinal(o),
        FinalCall::Digest => Request::DigestFinal(o),
        FinalCall::Sign => Request::SignFinal(o),
    };
    output(req, "final")
}

/// Calls that take data only.
#[derive(Debug, Clone, Copy)]
pub enum InCall {
    SignUpdate,
    VerifyUpdate,
    DigestUpdate,
    SeedRandom,
}

pub fn data_in(kind: InCall, session: u64, data: Option<Vec<u8>>) -> Result<()> {
    let d = DataIn { session, data };
    rv_only(match kind {
        InCall::SignUpdate => Request::SignUpdate(d),
        InCall::VerifyUpdate => Request::VerifyUpdate(d),
        InCall::DigestUpdate => Request::DigestUpdate(d),
        InCall::SeedRandom => Request::SeedRandom(d),
    })
}

/// C_DigestInit (§5.10).
pub fn digest_init(session: u64, mechanism: Mechanism) -> Result<()> {
    rv_only(Request::DigestInit { session, mechanism })
}

/// C_DigestKey (§5.10).
pub fn digest_key(session: u64, key: u64) -> Result<()> {
    rv_only(Request::DigestKey { session, key })
}

/// C_Verify (§5.12).
pub fn verify(session: u64, data: Option<Vec<u8>>, signature: Option<Vec<u8>>) -> Result<()> {
    rv_only(Request::Verify {
        session,
        data,
        signature,
    })
}

/// C_VerifyFinal (§5.12).
pub fn verify_final(session: u64, signature: Option<Vec<u8>>) -> Result<()> {
    rv_only(Request::VerifyFinal { session, signature })
}

/// C_GenerateRandom (§5.15).
pub fn generate_random(session: u64, len: u64) -> Result<Vec<u8>> {
    match body(Request::GenerateRandom { session, len })? {
        Body::Output { data: Some(d), .. } if d.len() as u64 == len => Ok(d),
        _ => Err(Error::Protocol("C_GenerateRandom")),
    }
}

/// C_GetFunctionStatus (§5.16).
pub fn function_status(session: u64) -> Result<()> {
    rv_only(Request::GetFunctionStatus { session })
}

/// C_CancelFunction (§5.16).
pub fn cancel_function(session: u64) -> Result<()> {
    rv_only(Request::CancelFunction { session })
}
