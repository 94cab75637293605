//! Key management (PKCS#11 2.40 §5.14).

use kmsp11_proto::{Body, Mechanism, OutBuf, Response, Template};
use pkcs11_sys::*;

use super::operations::mechanism;
use super::{add, check_write, created, object, register, template_private, template_token};
use crate::daemon::{Context, Daemon};
use crate::hsm::CTemplate;

/// C_GenerateKey (§5.14).
pub fn generate_key(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    m: Mechanism,
    template: Template,
) -> Response {
    let s = sess!(ctx, v);
    if let Err(r) = check_write(
        ctx,
        &s,
        template_token(template.as_deref().unwrap_or_default()),
        template_private(template.as_deref().unwrap_or_default(), true),
    ) {
        return r;
    }
    let (rv, h) = d.backend.generate_key(
        s.backend,
        &mut mechanism(ctx, &m),
        &mut CTemplate::from_opt(template.as_deref()),
    );
    created(d, ctx, &s, v, rv, h)
}

/// C_GenerateKeyPair (§5.14).
pub fn generate_key_pair(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    m: Mechanism,
    public: Template,
    private: Template,
) -> Response {
    let s = sess!(ctx, v);
    let token = template_token(public.as_deref().unwrap_or_default())
        || template_token(private.as_deref().unwrap_or_default());
    let private_obj = template_private(private.as_deref().unwrap_or_default(), true)
        || template_private(public.as_deref().unwrap_or_default(), false);
    if let Err(r) = check_write(ctx, &s, token, private_obj) {
        return r;
    }
    let (rv, hp, hq) = d.backend.generate_key_pair(
        s.backend,
        &mut mechanism(ctx, &m),
        &mut CTemplate::from_opt(public.as_deref()),
        &mut CTemplate::from_opt(private.as_deref()),
    );
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

/// C_WrapKey (§5.14).
pub fn wrap_key(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    m: Mechanism,
    wrapping: u64,
    key: u64,
    out: OutBuf,
) -> Response {
    let s = sess!(ctx, v);
    let (rv, len, data) = d.backend.wrap_key(
        s.backend,
        &mut mechanism(ctx, &m),
        object(ctx, wrapping),
        object(ctx, key),
        out,
    );
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// C_UnwrapKey (§5.14).
pub fn unwrap_key(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    m: Mechanism,
    unwrapping: u64,
    wrapped: Option<Vec<u8>>,
    template: Template,
) -> Response {
    let s = sess!(ctx, v);
    if let Err(r) = check_write(
        ctx,
        &s,
        template_token(template.as_deref().unwrap_or_default()),
        template_private(template.as_deref().unwrap_or_default(), true),
    ) {
        return r;
    }
    let (rv, h) = d.backend.unwrap_key(
        s.backend,
        &mut mechanism(ctx, &m),
        object(ctx, unwrapping),
        wrapped.as_deref(),
        &mut CTemplate::from_opt(template.as_deref()),
    );
    created(d, ctx, &s, v, rv, h)
}

/// C_DeriveKey (§5.14).
pub fn derive_key(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    m: Mechanism,
    base: u64,
    template: Template,
) -> Response {
    let s = sess!(ctx, v);
    if let Err(r) = check_write(
        ctx,
        &s,
        template_token(template.as_deref().unwrap_or_default()),
        template_private(template.as_deref().unwrap_or_default(), true),
    ) {
        return r;
    }
    let (rv, h) = d.backend.derive_key(
        s.backend,
        &mut mechanism(ctx, &m),
        object(ctx, base),
        &mut CTemplate::from_opt(template.as_deref()),
    );
    created(d, ctx, &s, v, rv, h)
}
