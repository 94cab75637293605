//! Key management (PKCS#11 3.0 §5.18).

use kmsp11_proto::{
    Body, DeriveKey, GenerateKey, GenerateKeyPair, Response, Template, UnwrapKey, WrapKey,
};
use pkcs11_sys::*;

use super::{
    add, check_write, created, mechanism, object, register, template, template_private,
    template_token, try_resp,
};
use crate::daemon::{Context, Daemon};

/// The object a template would create: (token object, private object).
fn kind(t: &Template, private_default: bool) -> (bool, bool) {
    let t = t.as_deref().unwrap_or_default();
    (template_token(t), template_private(t, private_default))
}

/// C_GenerateKey (§5.18).
pub fn generate_key(d: &Daemon, ctx: &Context, q: GenerateKey) -> Response {
    let GenerateKey {
        session: v,
        mechanism: m,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let (token, private) = kind(&t, true);
    try_resp!(check_write(d, ctx, &s, token, private));
    let mut m = try_resp!(mechanism(d, ctx, &s, &m));
    let mut t = try_resp!(template(&t));
    let (rv, h) = d.backend.generate_key(s.backend, &mut m, &mut t);
    created(d, ctx, &s, v, rv, h)
}

/// C_GenerateKeyPair (§5.18).
pub fn generate_key_pair(d: &Daemon, ctx: &Context, q: GenerateKeyPair) -> Response {
    let GenerateKeyPair {
        session: v,
        mechanism: m,
        public,
        private,
    } = q;
    let s = sess!(ctx, v);
    let (pub_token, pub_private) = kind(&public, false);
    let (priv_token, priv_private) = kind(&private, true);
    try_resp!(check_write(
        d,
        ctx,
        &s,
        pub_token || priv_token,
        pub_private || priv_private
    ));
    let mut m = try_resp!(mechanism(d, ctx, &s, &m));
    let mut pu = try_resp!(template(&public));
    let mut pr = try_resp!(template(&private));
    let (rv, hp, hq) = d
        .backend
        .generate_key_pair(s.backend, &mut m, &mut pu, &mut pr);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    let p = register(d, ctx, &s, hp, Some(v)).map(|o| add(ctx, o));
    let q = register(d, ctx, &s, hq, Some(v)).map(|o| add(ctx, o));
    match (p, q) {
        (Some(public), Some(private)) => Response::ok(Body::KeyPair { public, private }),
        _ => Response::rv(CKR_GENERAL_ERROR),
    }
}

/// C_WrapKey (§5.18).
pub fn wrap_key(d: &Daemon, ctx: &Context, q: WrapKey) -> Response {
    let WrapKey {
        session: v,
        mechanism: m,
        wrapping_key: wrapping,
        key,
        out,
    } = q;
    let s = sess!(ctx, v);
    let mut m = try_resp!(mechanism(d, ctx, &s, &m));
    let (rv, len, data) = d.backend.wrap_key(
        s.backend,
        &mut m,
        object(ctx, wrapping),
        object(ctx, key),
        out,
    );
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// C_UnwrapKey (§5.18).
pub fn unwrap_key(d: &Daemon, ctx: &Context, q: UnwrapKey) -> Response {
    let UnwrapKey {
        session: v,
        mechanism: m,
        unwrapping_key: unwrapping,
        wrapped,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let (token, private) = kind(&t, true);
    try_resp!(check_write(d, ctx, &s, token, private));
    let mut m = try_resp!(mechanism(d, ctx, &s, &m));
    let mut t = try_resp!(template(&t));
    let (rv, h) = d.backend.unwrap_key(
        s.backend,
        &mut m,
        object(ctx, unwrapping),
        wrapped.as_deref(),
        &mut t,
    );
    created(d, ctx, &s, v, rv, h)
}

/// C_DeriveKey (§5.18).
pub fn derive_key(d: &Daemon, ctx: &Context, q: DeriveKey) -> Response {
    let DeriveKey {
        session: v,
        mechanism: m,
        base_key: base,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let (token, private) = kind(&t, true);
    try_resp!(check_write(d, ctx, &s, token, private));
    let mut m = try_resp!(mechanism(d, ctx, &s, &m));
    let mut t = try_resp!(template(&t));
    let (rv, h) = d
        .backend
        .derive_key(s.backend, &mut m, object(ctx, base), &mut t);
    created(d, ctx, &s, v, rv, h)
}
