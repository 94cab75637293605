//! The data operations: encryption (§5.8), decryption (§5.9), message
//! digesting (§5.10), signing (§5.11), verification (§5.12), dual-function
//! operations (§5.13) and random numbers (§5.15). They share four call
//! shapes, so one table-driven file serves them all.

use kmsp11_proto::{Body, DataOut, Mechanism, OpInit, OutOnly, Response};
use pkcs11_sys::*;

use super::{mechanism, object, try_resp};
use crate::daemon::{Context, Daemon};
use crate::hsm::{DataInFn, DataOutFn, OpInitFn, OutOnlyFn};

/// C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit, C_SignRecoverInit, C_VerifyRecoverInit.
pub fn init(d: &Daemon, ctx: &Context, f: OpInitFn, i: OpInit) -> Response {
    let s = sess!(ctx, i.session);
    let key = object(ctx, i.key);
    let mut m = try_resp!(mechanism(d, ctx, &s, &i.mechanism));
    Response::rv(d.backend.op_init(f, s.backend, &mut m, key))
}

/// C_DigestInit (§5.10).
pub fn digest_init(d: &Daemon, ctx: &Context, v: u64, m: Mechanism) -> Response {
    let s = sess!(ctx, v);
    let mut m = try_resp!(mechanism(d, ctx, &s, &m));
    Response::rv(d.backend.digest_init(s.backend, &mut m))
}

/// C_DigestKey (§5.10).
pub fn digest_key(d: &Daemon, ctx: &Context, v: u64, key: u64) -> Response {
    let s = sess!(ctx, v);
    Response::rv(d.backend.digest_key(s.backend, object(ctx, key)))
}

/// Single-part and update calls that produce output, with the caller's
/// buffer semantics (NULL length query, `CKR_BUFFER_TOO_SMALL`) left to the backend.
pub fn data_out(d: &Daemon, ctx: &Context, f: DataOutFn, o: DataOut) -> Response {
    let s = sess!(ctx, o.session);
    let (rv, len, data) = d.backend.data_out(f, s.backend, o.data.as_deref(), o.out);
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// `C_*Final` and C_GetOperationState.
pub fn out_only(d: &Daemon, ctx: &Context, f: OutOnlyFn, o: OutOnly) -> Response {
    let s = sess!(ctx, o.session);
    let (rv, len, data) = d.backend.out_only(f, s.backend, o.out);
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// C_SignUpdate, C_VerifyUpdate, C_DigestUpdate, C_SeedRandom, C_VerifyFinal.
pub fn data_in(d: &Daemon, ctx: &Context, f: DataInFn, v: u64, data: Option<Vec<u8>>) -> Response {
    let s = sess!(ctx, v);
    Response::rv(d.backend.data_in(f, s.backend, data.as_deref()))
}

/// C_Verify (§5.12).
pub fn verify(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    data: Option<Vec<u8>>,
    sig: Option<Vec<u8>>,
) -> Response {
    let s = sess!(ctx, v);
    Response::rv(d.backend.verify(s.backend, data.as_deref(), sig.as_deref()))
}

/// C_GenerateRandom (§5.15).
pub fn generate_random(d: &Daemon, ctx: &Context, v: u64, len: u64) -> Response {
    let s = sess!(ctx, v);
    if len > crate::hsm::MAX_OUT {
        return Response::rv(CKR_DATA_LEN_RANGE);
    }
    let (rv, data) = d.backend.generate_random(s.backend, len);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    Response::ok(Body::Output {
        len,
        data: Some(data),
    })
}
