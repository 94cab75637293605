//! Key management (PKCS#11 3.0 §5.18).

use kmsp11_proto::{Body, DeriveKey, GenerateKey, GenerateKeyPair, Response, UnwrapKey, WrapKey};
use pkcs11_sys::*;

use super::{check_write, created, kind_of, mechanism, register, template};
use crate::core::call::Call;
use crate::daemon::{Context, Daemon};
use crate::error::Error;
use crate::handles::VSession;

/// C_GenerateKey (§5.18).
pub fn generate_key(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    q: GenerateKey,
) -> Result<Response, Error> {
    let s = c.session()?;
    check_write(d, ctx, &s, kind_of(&q.template, true))?;
    let mut m = mechanism(d, ctx, c, &s, &q.mechanism)?;
    let mut t = template(&q.template)?;
    let h = d.backend.generate_key(s.backend, &mut m, &mut t)?;
    created(d, ctx, &s, q.session, h)
}

/// C_GenerateKeyPair (§5.18).
pub fn generate_key_pair(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    q: GenerateKeyPair,
) -> Result<Response, Error> {
    let s = c.session()?;
    let (pub_token, pub_private) = kind_of(&q.public, false);
    let (priv_token, priv_private) = kind_of(&q.private, true);
    check_write(
        d,
        ctx,
        &s,
        (pub_token || priv_token, pub_private || priv_private),
    )?;
    let mut m = mechanism(d, ctx, c, &s, &q.mechanism)?;
    let mut pu = template(&q.public)?;
    let mut pr = template(&q.private)?;
    let (hp, hq) = d
        .backend
        .generate_key_pair(s.backend, &mut m, &mut pu, &mut pr)?;
    let handle = |h| {
        register(d, ctx, &s, h, Some(VSession(q.session)))
            .map(|o| ctx.add_object(o).0)
            .ok_or(Error::Rv(CKR_GENERAL_ERROR))
    };
    let (public, private) = (handle(hp)?, handle(hq)?);
    Ok(Response::ok(Body::KeyPair { public, private }))
}

/// C_WrapKey (§5.18).
pub fn wrap_key(d: &Daemon, ctx: &Context, c: &Call, q: WrapKey) -> Result<Response, Error> {
    let s = c.session()?;
    let mut m = mechanism(d, ctx, c, &s, &q.mechanism)?;
    let (rv, len, data) = d.backend.wrap_key(
        s.backend,
        &mut m,
        c.backend(q.wrapping_key),
        c.backend(q.key),
        q.out,
    );
    Ok(Response {
        rv,
        body: Body::Output { len, data },
    })
}

/// C_UnwrapKey (§5.18).
pub fn unwrap_key(d: &Daemon, ctx: &Context, c: &Call, q: UnwrapKey) -> Result<Response, Error> {
    let s = c.session()?;
    check_write(d, ctx, &s, kind_of(&q.template, true))?;
    let mut m = mechanism(d, ctx, c, &s, &q.mechanism)?;
    let mut t = template(&q.template)?;
    let h = d.backend.unwrap_key(
        s.backend,
        &mut m,
        c.backend(q.unwrapping_key),
        q.wrapped.as_deref(),
        &mut t,
    )?;
    created(d, ctx, &s, q.session, h)
}

/// C_DeriveKey (§5.18).
pub fn derive_key(d: &Daemon, ctx: &Context, c: &Call, q: DeriveKey) -> Result<Response, Error> {
    let s = c.session()?;
    check_write(d, ctx, &s, kind_of(&q.template, true))?;
    let mut m = mechanism(d, ctx, c, &s, &q.mechanism)?;
    let mut t = template(&q.template)?;
    let h = d
        .backend
        .derive_key(s.backend, &mut m, c.backend(q.base_key), &mut t)?;
    created(d, ctx, &s, q.session, h)
}
