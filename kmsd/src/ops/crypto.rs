//! Encryption (§5.8), decryption (§5.9), message digesting (§5.10), signing
//! (§5.11), verification (§5.12), dual-function operations (§5.13) and random
//! numbers (§5.15). Most of their calls share four shapes: one operation per
//! shape serves them all, the backend entry picked by the call's id.

use kmsp11_proto::{
    Body, CallId, DataIn, DataOut, DigestInit, DigestKey, GenerateRandom, OpInit, OutOnly,
    Response, Verify,
};
use pkcs11_sys::*;

use super::{mechanism, object, try_resp};
use crate::daemon::{Context, Daemon};

/// The `*Init` calls with a mechanism and a key.
pub fn init(d: &Daemon, ctx: &Context, call: CallId, i: OpInit) -> Response {
    let s = sess!(ctx, i.session);
    let key = object(ctx, i.key);
    let mut m = try_resp!(mechanism(d, ctx, &s, &i.mechanism));
    Response::rv(d.backend.op_init(call, s.backend, &mut m, key))
}

/// Single-part and update calls that produce output, with the caller's
/// buffer semantics (NULL length query, `CKR_BUFFER_TOO_SMALL`) left to the backend.
pub fn data_out(d: &Daemon, ctx: &Context, call: CallId, o: DataOut) -> Response {
    let s = sess!(ctx, o.session);
    let (rv, len, data) = d
        .backend
        .data_out(call, s.backend, o.data.as_deref(), o.out);
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// The `C_*Final` calls that produce output.
pub fn out_only(d: &Daemon, ctx: &Context, call: CallId, o: OutOnly) -> Response {
    let s = sess!(ctx, o.session);
    let (rv, len, data) = d.backend.out_only(call, s.backend, o.out);
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// Calls that take data only (`C_*Update` of signing and digesting,
/// `C_SeedRandom`, `C_VerifyFinal`).
pub fn data_in(d: &Daemon, ctx: &Context, call: CallId, i: DataIn) -> Response {
    let s = sess!(ctx, i.session);
    Response::rv(d.backend.data_in(call, s.backend, i.data.as_deref()))
}

/// C_DigestInit (§5.10).
pub fn digest_init(d: &Daemon, ctx: &Context, q: DigestInit) -> Response {
    let s = sess!(ctx, q.session);
    let mut m = try_resp!(mechanism(d, ctx, &s, &q.mechanism));
    Response::rv(d.backend.digest_init(s.backend, &mut m))
}

/// C_DigestKey (§5.10).
pub fn digest_key(d: &Daemon, ctx: &Context, q: DigestKey) -> Response {
    let s = sess!(ctx, q.session);
    Response::rv(d.backend.digest_key(s.backend, object(ctx, q.key)))
}

/// C_Verify (§5.12).
pub fn verify(d: &Daemon, ctx: &Context, q: Verify) -> Response {
    let s = sess!(ctx, q.session);
    Response::rv(
        d.backend
            .verify(s.backend, q.data.as_deref(), q.signature.as_deref()),
    )
}

/// C_GenerateRandom (§5.15).
pub fn generate_random(d: &Daemon, ctx: &Context, q: GenerateRandom) -> Response {
    let s = sess!(ctx, q.session);
    if q.len > crate::hsm::MAX_OUT {
        return Response::rv(CKR_DATA_LEN_RANGE);
    }
    let (rv, data) = d.backend.generate_random(s.backend, q.len);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    Response::ok(Body::Output {
        len: q.len,
        data: Some(data),
    })
}
