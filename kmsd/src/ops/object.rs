//! Object management (PKCS#11 3.0 §5.7).

use kmsp11_proto::{
    Body, CopyObject, CreateObject, DestroyObject, FindObjects, FindObjectsInit, GetAttributeValue,
    GetObjectSize, Response, SessionOnly, SetAttributeValue,
};

use super::{answer, check_write, created, done, kind_of, register, template};
use crate::core::call::Call;
use crate::daemon::{Context, Daemon, Obj, Sess};
use crate::error::Error;
use crate::handles::VObject;

/// C_CreateObject (§5.7).
pub fn create_object(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    q: CreateObject,
) -> Result<Response, Error> {
    let s = c.session()?;
    check_write(d, ctx, &s, kind_of(&q.template, false))?;
    let mut t = template(&q.template)?;
    let h = d.backend.create_object(s.backend, &mut t)?;
    created(d, ctx, &s, q.session, h)
}

/// C_CopyObject (§5.7).
pub fn copy_object(d: &Daemon, ctx: &Context, c: &Call, q: CopyObject) -> Result<Response, Error> {
    let s = c.session()?;
    let src = c.backend(q.object);
    check_write(d, ctx, &s, kind_of(&q.template, false))?;
    let mut t = template(&q.template)?;
    let h = d.backend.copy_object(s.backend, src, &mut t)?;
    created(d, ctx, &s, q.session, h)
}

/// C_DestroyObject (§5.7).
pub fn destroy_object(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    q: DestroyObject,
) -> Result<Response, Error> {
    let s = c.session()?;
    let h = c.backend(q.object);
    d.backend.destroy_object(s.backend, h)?;
    if let Some(t) = d.token(ctx, s.slot) {
        d.inventory.forget(t.backend_slot, h);
    }
    ctx.remove_object(VObject(q.object));
    d.forget_session_objects(&[h]);
    done()
}

/// C_GetObjectSize (§5.7).
pub fn object_size(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    q: GetObjectSize,
) -> Result<Response, Error> {
    let s = c.session()?;
    let n = d.backend.object_size(s.backend, c.backend(q.object))?;
    answer(Body::Size(n))
}

/// C_GetAttributeValue (§5.7): every attribute answered, with the backend's
/// per-attribute lengths (`CK_UNAVAILABLE_INFORMATION` for invalid or
/// sensitive ones) and its overall `CK_RV`. Memory follows what the object
/// holds, not what the client claims (see `Backend::attribute_value`).
pub fn attribute_value(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    q: GetAttributeValue,
) -> Result<Response, Error> {
    let s = c.session()?;
    let (rv, answers) = d
        .backend
        .attribute_value(s.backend, c.backend(q.object), &q.template);
    Ok(Response {
        rv,
        body: Body::Attributes(answers),
    })
}

/// C_SetAttributeValue (§5.7).
pub fn set_attribute_value(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    q: SetAttributeValue,
) -> Result<Response, Error> {
    let s = c.session()?;
    let mut t = template(&q.template)?;
    d.backend
        .set_attribute_value(s.backend, c.backend(q.object), &mut t)?;
    done()
}

/// C_FindObjectsInit (§5.7).
pub fn find_objects_init(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    q: FindObjectsInit,
) -> Result<Response, Error> {
    let s = c.session()?;
    let mut t = template(&q.template)?;
    d.backend.find_objects_init(s.backend, &mut t)?;
    done()
}

/// C_FindObjects (§5.7). Objects this context may not see (other clients'
/// session objects, private objects before login, keys pending destroy,
/// keys policy does not let it `find`) are skipped, and the backend is
/// asked again so that a short answer still means "no more".
pub fn find_objects(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    q: FindObjects,
) -> Result<Response, Error> {
    let s = c.session()?;
    let mut out = Vec::new();
    loop {
        let want = q.max.saturating_sub(out.len() as u64);
        let found = d.backend.find_objects(s.backend, want)?;
        let exhausted = (found.len() as u64) < want || want == 0;
        for h in found {
            let Some(o) = register(d, ctx, &s, h, None) else {
                continue;
            };
            if o.private && !ctx.state.lock().logged_in(s.slot) {
                continue;
            }
            if !visible(d, ctx, &s, &o)? {
                continue;
            }
            out.push(ctx.add_object(o).0);
        }
        if exhausted || out.len() as u64 >= q.max {
            break;
        }
    }
    answer(Body::Handles(out))
}

/// Whether the found object `o` is visible to this context (see
/// `core::pipeline::visible`). The store failing is `CKR_DEVICE_ERROR`.
fn visible(d: &Daemon, ctx: &Context, s: &Sess, o: &Obj) -> Result<bool, Error> {
    let store = |e: crate::store::StoreError| {
        tracing::error!("store: {e}");
        Error::Rv(pkcs11_sys::CKR_DEVICE_ERROR)
    };
    let Some(t) = crate::core::resolve::found(d, ctx, s, o, 0).map_err(store)? else {
        return Ok(false);
    };
    let token = d
        .token(ctx, s.slot)
        .map(|t| t.name.clone())
        .unwrap_or_default();
    crate::core::pipeline::visible(d, ctx, &token, &t).map_err(|r| Error::Rv(r.rv()))
}

/// C_FindObjectsFinal (§5.7).
pub fn find_objects_final(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    _q: SessionOnly,
) -> Result<Response, Error> {
    let s = c.session()?;
    d.backend.find_objects_final(s.backend)?;
    done()
}
