//! Object management (PKCS#11 3.0 §5.7).

use kmsp11_proto::{
    Body, CopyObject, CreateObject, DestroyObject, FindObjects, FindObjectsInit, GetAttributeValue,
    GetObjectSize, Response, SessionOnly, SetAttributeValue,
};
use pkcs11_sys::*;

use super::{
    add, check_write, created, object, register, template, template_private, template_token,
    try_resp,
};
use crate::daemon::{Context, Daemon};

/// C_CreateObject (§5.7).
pub fn create_object(d: &Daemon, ctx: &Context, q: CreateObject) -> Response {
    let CreateObject {
        session: v,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let raw = t.as_deref().unwrap_or_default();
    try_resp!(check_write(
        d,
        ctx,
        &s,
        template_token(raw),
        template_private(raw, false)
    ));
    let mut ct = try_resp!(template(&t));
    let (rv, h) = d.backend.create_object(s.backend, &mut ct);
    created(d, ctx, &s, v, rv, h)
}

/// C_CopyObject (§5.7).
pub fn copy_object(d: &Daemon, ctx: &Context, q: CopyObject) -> Response {
    let CopyObject {
        session: v,
        object: obj,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let src = object(ctx, obj);
    let raw = t.as_deref().unwrap_or_default();
    try_resp!(check_write(
        d,
        ctx,
        &s,
        template_token(raw),
        template_private(raw, false)
    ));
    let mut ct = try_resp!(template(&t));
    let (rv, h) = d.backend.copy_object(s.backend, src, &mut ct);
    created(d, ctx, &s, v, rv, h)
}

/// C_DestroyObject (§5.7).
pub fn destroy_object(d: &Daemon, ctx: &Context, q: DestroyObject) -> Response {
    let DestroyObject {
        session: v,
        object: obj,
    } = q;
    let s = sess!(ctx, v);
    let h = object(ctx, obj);
    let rv = d.backend.destroy_object(s.backend, h);
    if rv == CKR_OK {
        ctx.remove_object(obj);
        d.forget_session_objects(&[h]);
    }
    Response::rv(rv)
}

/// C_GetObjectSize (§5.7).
pub fn object_size(d: &Daemon, ctx: &Context, q: GetObjectSize) -> Response {
    let GetObjectSize {
        session: v,
        object: obj,
    } = q;
    let s = sess!(ctx, v);
    let (rv, n) = d.backend.object_size(s.backend, object(ctx, obj));
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    Response::ok(Body::Size(n))
}

/// C_GetAttributeValue (§5.7): every attribute answered, with the backend's
/// per-attribute lengths (`CK_UNAVAILABLE_INFORMATION` for invalid or
/// sensitive ones) and its overall `CK_RV`. Memory follows what the object
/// holds, not what the client claims (see `Backend::attribute_value`).
pub fn attribute_value(d: &Daemon, ctx: &Context, q: GetAttributeValue) -> Response {
    let GetAttributeValue {
        session: v,
        object: obj,
        template: q,
    } = q;
    let s = sess!(ctx, v);
    let (rv, answers) = d.backend.attribute_value(s.backend, object(ctx, obj), &q);
    Response {
        rv,
        body: Body::Attributes(answers),
    }
}

/// C_SetAttributeValue (§5.7).
pub fn set_attribute_value(d: &Daemon, ctx: &Context, q: SetAttributeValue) -> Response {
    let SetAttributeValue {
        session: v,
        object: obj,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let mut ct = try_resp!(template(&t));
    Response::rv(
        d.backend
            .set_attribute_value(s.backend, object(ctx, obj), &mut ct),
    )
}

/// C_FindObjectsInit (§5.7).
pub fn find_objects_init(d: &Daemon, ctx: &Context, q: FindObjectsInit) -> Response {
    let FindObjectsInit {
        session: v,
        template: t,
    } = q;
    let s = sess!(ctx, v);
    let mut ct = try_resp!(template(&t));
    Response::rv(d.backend.find_objects_init(s.backend, &mut ct))
}

/// C_FindObjects (§5.7). Objects this context may not see (other clients'
/// session objects, private objects before login) are skipped, and the
/// backend is asked again so that a short answer still means "no more".
pub fn find_objects(d: &Daemon, ctx: &Context, q: FindObjects) -> Response {
    let FindObjects { session: v, max } = q;
    let s = sess!(ctx, v);
    let mut out = Vec::new();
    loop {
        let want = max.saturating_sub(out.len() as u64);
        let (rv, found) = d.backend.find_objects(s.backend, want);
        if rv != CKR_OK {
            return Response::rv(rv);
        }
        let exhausted = (found.len() as u64) < want || want == 0;
        for h in found {
            let Some(o) = register(d, ctx, &s, h, None) else {
                continue;
            };
            if o.private && !ctx.state.lock().logged_in(s.slot) {
                continue;
            }
            out.push(add(ctx, o));
        }
        if exhausted || out.len() as u64 >= max {
            break;
        }
    }
    Response::ok(Body::Handles(out))
}

/// C_FindObjectsFinal (§5.7).
pub fn find_objects_final(d: &Daemon, ctx: &Context, q: SessionOnly) -> Response {
    let v = q.session;
    let s = sess!(ctx, v);
    Response::rv(d.backend.find_objects_final(s.backend))
}
