//! Encryption (§5.8), decryption (§5.9), message digesting (§5.10), signing
//! (§5.11), verification (§5.12), dual-function operations (§5.13) and random
//! numbers (§5.15). Most of their calls share four shapes: one operation per
//! shape serves them all, the backend entry picked by the call's id.

use kmsp11_proto::{
    Body, CallId, DataIn, DataOut, DigestInit, DigestKey, GenerateRandom, OpInit, OutOnly,
    Response, Verify,
};
use pkcs11_sys::*;

use super::{answer, done, mechanism};
use crate::core::call::Call;
use crate::daemon::{Context, Daemon};
use crate::error::Error;

/// The `*Init` calls with a mechanism and a key.
pub fn init(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    call: CallId,
    i: OpInit,
) -> Result<Response, Error> {
    let s = c.session()?;
    let mut m = mechanism(d, ctx, c, &s, &i.mechanism)?;
    d.backend
        .op_init(call, s.backend, &mut m, c.backend(i.key))?;
    done()
}

/// Single-part and update calls that produce output, with the caller's
/// buffer semantics (NULL length query, `CKR_BUFFER_TOO_SMALL`) left to the backend.
pub fn data_out(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    call: CallId,
    o: DataOut,
) -> Result<Response, Error> {
    let s = c.session()?;
    let (rv, len, data) = d
        .backend
        .data_out(call, s.backend, o.data.as_deref(), o.out);
    Ok(Response {
        rv,
        body: Body::Output { len, data },
    })
}

/// The `C_*Final` calls that produce output.
pub fn out_only(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    call: CallId,
    o: OutOnly,
) -> Result<Response, Error> {
    let s = c.session()?;
    let (rv, len, data) = d.backend.out_only(call, s.backend, o.out);
    Ok(Response {
        rv,
        body: Body::Output { len, data },
    })
}

/// Calls that take data only (`C_*Update` of signing and digesting,
/// `C_SeedRandom`, `C_VerifyFinal`).
pub fn data_in(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    call: CallId,
    i: DataIn,
) -> Result<Response, Error> {
    let s = c.session()?;
    d.backend.data_in(call, s.backend, i.data.as_deref())?;
    done()
}

/// C_DigestInit (§5.10).
pub fn digest_init(d: &Daemon, ctx: &Context, c: &Call, q: DigestInit) -> Result<Response, Error> {
    let s = c.session()?;
    let mut m = mechanism(d, ctx, c, &s, &q.mechanism)?;
    d.backend.digest_init(s.backend, &mut m)?;
    done()
}

/// C_DigestKey (§5.10).
pub fn digest_key(d: &Daemon, _ctx: &Context, c: &Call, q: DigestKey) -> Result<Response, Error> {
    let s = c.session()?;
    d.backend.digest_key(s.backend, c.backend(q.key))?;
    done()
}

/// C_Verify (§5.12).
pub fn verify(d: &Daemon, _ctx: &Context, c: &Call, q: Verify) -> Result<Response, Error> {
    let s = c.session()?;
    d.backend
        .verify(s.backend, q.data.as_deref(), q.signature.as_deref())?;
    done()
}

/// C_GenerateRandom (§5.15): at most a frame's worth at once.
pub fn generate_random(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    q: GenerateRandom,
) -> Result<Response, Error> {
    let s = c.session()?;
    if q.len > crate::hsm::MAX_OUT {
        return Err(Error::Rv(CKR_DATA_LEN_RANGE));
    }
    let data = d.backend.generate_random(s.backend, q.len)?;
    answer(Body::Output {
        len: q.len,
        data: Some(data),
    })
}
