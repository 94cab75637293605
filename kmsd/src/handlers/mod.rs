//! One handler per request, files named after the PKCS#11 chapters. Every
//! handler translates the context's virtual handles to backend handles, lets
//! the backend decide, and returns its `CK_RV` unchanged.

// A handler's early exit is the response itself: `Result<_, Response>` is
// the natural shape, and the response is sent as it is, never propagated far.
#![allow(clippy::result_large_err)]

/// `let s = sess!(ctx, handle);` in a handler: this context's session, or
/// an early `CKR_SESSION_HANDLE_INVALID` response.
macro_rules! sess {
    ($ctx:expr, $v:expr) => {
        match $crate::handlers::lookup_session($ctx, $v) {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
}

mod general;
mod keymgmt;
mod object;
mod operations;
mod session;
mod slot_token;

use kmsp11_proto::{attrs, AttrValue, Attribute, Body, Mechanism, Request, Response, Template};
use pkcs11_sys::*;

use crate::daemon::{Context, Daemon, Obj, Sess};
use crate::hsm::{CMechanism, CTemplate};

/// Runs one request on the backend. Called on a blocking thread.
pub fn dispatch(d: &Daemon, ctx: &Context, req: Request) -> Response {
    use Request as R;
    match req {
        R::Hello(_) => Response::rv(CKR_GENERAL_ERROR),
        R::Goodbye => {
            let sessions = d.end_context(ctx);
            tracing::debug!(
                context = ctx.id,
                pid = ctx.pid,
                sessions,
                "client finalized"
            );
            Response::rv(CKR_OK)
        }
        R::GetInfo => general::info(d),
        R::GetSlotList { token_present } => slot_token::slot_list(d, ctx, token_present),
        R::GetSlotInfo { slot } => slot_token::slot_info(d, ctx, slot),
        R::GetTokenInfo { slot } => slot_token::token_info(d, ctx, slot),
        R::WaitForSlotEvent { flags } => slot_token::wait_for_slot_event(d, ctx, flags),
        R::GetMechanismList { slot } => slot_token::mechanism_list(d, ctx, slot),
        R::GetMechanismInfo { slot, mechanism } => {
            slot_token::mechanism_info(d, ctx, slot, mechanism)
        }
        R::InitToken { slot, pin, label } => slot_token::init_token(d, ctx, slot, pin, &label),
        R::InitPin { session, pin } => slot_token::init_pin(d, ctx, session, pin),
        R::SetPin { session, old, new } => slot_token::set_pin(d, ctx, session, old, new),
        R::OpenSession { slot, flags } => session::open(d, ctx, slot, flags),
        R::CloseSession { session } => session::close(d, ctx, session),
        R::CloseAllSessions { slot } => session::close_all(d, ctx, slot),
        R::GetSessionInfo { session } => session::info(d, ctx, session),
        // An operation state is the module's own memory, serialised: kmsd
        // never hands the module a blob a client made (SoftHSM does not
        // implement them either).
        R::GetOperationState(_) | R::SetOperationState { .. } => {
            Response::rv(CKR_FUNCTION_NOT_SUPPORTED)
        }
        R::Login {
            session,
            user_type,
            pin,
        } => session::login(d, ctx, session, user_type, pin),
        R::Logout { session } => session::logout(d, ctx, session),
        R::CreateObject { session, template } => object::create(d, ctx, session, template),
        R::CopyObject {
            session,
            object,
            template,
        } => object::copy(d, ctx, session, object, template),
        R::DestroyObject { session, object } => object::destroy(d, ctx, session, object),
        R::GetObjectSize { session, object } => object::size(d, ctx, session, object),
        R::GetAttributeValue {
            session,
            object,
            template,
        } => object::attribute_value(d, ctx, session, object, &template),
        R::SetAttributeValue {
            session,
            object,
            template,
        } => object::set_attribute_value(d, ctx, session, object, template),
        R::FindObjectsInit { session, template } => object::find_init(d, ctx, session, template),
        R::FindObjects { session, max } => object::find(d, ctx, session, max),
        R::FindObjectsFinal { session } => object::find_final(d, ctx, session),
        R::EncryptInit(i) => operations::init(d, ctx, crate::hsm::OpInitFn::EncryptInit, i),
        R::DecryptInit(i) => operations::init(d, ctx, crate::hsm::OpInitFn::DecryptInit, i),
        R::SignInit(i) => operations::init(d, ctx, crate::hsm::OpInitFn::SignInit, i),
        R::VerifyInit(i) => operations::init(d, ctx, crate::hsm::OpInitFn::VerifyInit, i),
        R::SignRecoverInit(i) => operations::init(d, ctx, crate::hsm::OpInitFn::SignRecoverInit, i),
        R::VerifyRecoverInit(i) => {
            operations::init(d, ctx, crate::hsm::OpInitFn::VerifyRecoverInit, i)
        }
        R::Encrypt(o) => operations::data_out(d, ctx, crate::hsm::DataOutFn::Encrypt, o),
        R::EncryptUpdate(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::EncryptUpdate, o)
        }
        R::Decrypt(o) => operations::data_out(d, ctx, crate::hsm::DataOutFn::Decrypt, o),
        R::DecryptUpdate(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::DecryptUpdate, o)
        }
        R::Digest(o) => operations::data_out(d, ctx, crate::hsm::DataOutFn::Digest, o),
        R::Sign(o) => operations::data_out(d, ctx, crate::hsm::DataOutFn::Sign, o),
        R::SignRecover(o) => operations::data_out(d, ctx, crate::hsm::DataOutFn::SignRecover, o),
        R::VerifyRecover(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::VerifyRecover, o)
        }
        R::DigestEncryptUpdate(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::DigestEncryptUpdate, o)
        }
        R::DecryptDigestUpdate(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::DecryptDigestUpdate, o)
        }
        R::SignEncryptUpdate(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::SignEncryptUpdate, o)
        }
        R::DecryptVerifyUpdate(o) => {
            operations::data_out(d, ctx, crate::hsm::DataOutFn::DecryptVerifyUpdate, o)
        }
        R::EncryptFinal(o) => operations::out_only(d, ctx, crate::hsm::OutOnlyFn::EncryptFinal, o),
        R::DecryptFinal(o) => operations::out_only(d, ctx, crate::hsm::OutOnlyFn::DecryptFinal, o),
        R::DigestFinal(o) => operations::out_only(d, ctx, crate::hsm::OutOnlyFn::DigestFinal, o),
        R::SignFinal(o) => operations::out_only(d, ctx, crate::hsm::OutOnlyFn::SignFinal, o),
        R::SignUpdate(i) => {
            operations::data_in(d, ctx, crate::hsm::DataInFn::SignUpdate, i.session, i.data)
        }
        R::VerifyUpdate(i) => operations::data_in(
            d,
            ctx,
            crate::hsm::DataInFn::VerifyUpdate,
            i.session,
            i.data,
        ),
        R::DigestUpdate(i) => operations::data_in(
            d,
            ctx,
            crate::hsm::DataInFn::DigestUpdate,
            i.session,
            i.data,
        ),
        R::SeedRandom(i) => {
            operations::data_in(d, ctx, crate::hsm::DataInFn::SeedRandom, i.session, i.data)
        }
        R::VerifyFinal { session, signature } => operations::data_in(
            d,
            ctx,
            crate::hsm::DataInFn::VerifyFinal,
            session,
            signature,
        ),
        R::Verify {
            session,
            data,
            signature,
        } => operations::verify(d, ctx, session, data, signature),
        R::DigestInit { session, mechanism } => operations::digest_init(d, ctx, session, mechanism),
        R::DigestKey { session, key } => operations::digest_key(d, ctx, session, key),
        R::GenerateKey {
            session,
            mechanism,
            template,
        } => keymgmt::generate_key(d, ctx, session, mechanism, template),
        R::GenerateKeyPair {
            session,
            mechanism,
            public,
            private,
        } => keymgmt::generate_key_pair(d, ctx, session, mechanism, public, private),
        R::WrapKey {
            session,
            mechanism,
            wrapping_key,
            key,
            out,
        } => keymgmt::wrap_key(d, ctx, session, mechanism, wrapping_key, key, out),
        R::UnwrapKey {
            session,
            mechanism,
            unwrapping_key,
            wrapped,
            template,
        } => keymgmt::unwrap_key(
            d,
            ctx,
            session,
            mechanism,
            unwrapping_key,
            wrapped,
            template,
        ),
        R::DeriveKey {
            session,
            mechanism,
            base_key,
            template,
        } => keymgmt::derive_key(d, ctx, session, mechanism, base_key, template),
        R::GenerateRandom { session, len } => operations::generate_random(d, ctx, session, len),
        R::GetFunctionStatus { session } => with_session(ctx, session, |s| {
            Response::rv(d.backend.function_status(s.backend))
        }),
        R::CancelFunction { session } => with_session(ctx, session, |s| {
            Response::rv(d.backend.cancel_function(s.backend))
        }),
    }
}

/// Looks up a session of this context; an unknown handle is `CKR_SESSION_HANDLE_INVALID`.
fn lookup_session(ctx: &Context, v: u64) -> Result<Sess, Response> {
    ctx.state
        .lock()
        .sessions
        .get(&v)
        .copied()
        .ok_or(Response::rv(CKR_SESSION_HANDLE_INVALID))
}

fn with_session(ctx: &Context, v: u64, f: impl FnOnce(Sess) -> Response) -> Response {
    match lookup_session(ctx, v) {
        Ok(s) => f(s),
        Err(r) => r,
    }
}

/// The backend handle for a virtual object handle. Unknown handles, and
/// private objects while the context is not logged in, become
/// `CK_INVALID_HANDLE` so that the backend answers with its own error code
/// for an invalid handle in that position.
fn object(ctx: &Context, v: u64) -> CK_OBJECT_HANDLE {
    let st = ctx.state.lock();
    match st.objects.get(&v) {
        Some(o) if !o.private || st.logged_in(o.slot) => o.backend,
        _ => CK_INVALID_HANDLE,
    }
}

/// Gives a backend object a handle in this context, reading what decides
/// its visibility (`CKA_TOKEN`, `CKA_PRIVATE`). `created_in` is the virtual
/// session that just created it, if any.
fn register(
    d: &Daemon,
    ctx: &Context,
    s: &Sess,
    h: CK_OBJECT_HANDLE,
    created_in: Option<u64>,
) -> Option<Obj> {
    {
        let st = ctx.state.lock();
        if let Some(v) = st.by_backend.get(&h) {
            return st.objects.get(v).copied();
        }
    }
    let q = [
        kmsp11_proto::AttrQuery {
            kind: CKA_TOKEN,
            buf: Some(1),
        },
        kmsp11_proto::AttrQuery {
            kind: CKA_PRIVATE,
            buf: Some(1),
        },
    ];
    let (rv, a) = d.backend.attribute_value(s.backend, h, &q);
    if rv != CKR_OK {
        return None;
    }
    let flag = |x: &kmsp11_proto::AttrAnswer| matches!(&x.value, Some(AttrValue::Bytes(b)) if b.first() == Some(&1));
    let token = flag(&a[0]);
    let private = flag(&a[1]);
    let session = if token {
        None
    } else {
        match created_in {
            Some(vs) => {
                d.own_session_object(ctx, h);
                Some(vs)
            }
            // A session object nobody registered: it belongs to another context
            // unless this one owns it.
            None => match d.session_object_owner(h) {
                Some(owner) if owner == ctx.id => None,
                _ => return None,
            },
        }
    };
    Some(Obj {
        backend: h,
        slot: s.slot,
        private,
        session,
    })
}

fn add(ctx: &Context, o: Obj) -> u64 {
    ctx.add_object(o)
}

/// The C mechanism for a client's mechanism, or the refusal. A parameter
/// not in the form its mechanism takes (DESIGN.md decision 3) never reaches
/// the HSM: `CKR_MECHANISM_PARAM_INVALID`, or `CKR_MECHANISM_INVALID` as
/// the backend itself answers for a mechanism it does not have. Handles
/// inside the parameter are translated like any other handle.
fn mechanism(d: &Daemon, ctx: &Context, s: &Sess, m: &Mechanism) -> Result<CMechanism, Response> {
    if let Err(e) = kmsp11_proto::mechanism::check(m, |v| d.raw_vendor.contains(&v)) {
        let known = d
            .token(ctx, s.slot)
            .is_some_and(|t| t.mechanisms.contains(&m.mechanism));
        tracing::debug!(identity = %ctx.identity.name, "mechanism parameter refused: {e}");
        return Err(Response::rv(if known {
            CKR_MECHANISM_PARAM_INVALID
        } else {
            CKR_MECHANISM_INVALID
        }));
    }
    Ok(CMechanism::new(m, d.backend.v3(), |h| object(ctx, h)))
}

/// The C template for a client's template, or `CKR_ATTRIBUTE_VALUE_INVALID`
/// when a value's form contradicts its type (an attribute array where bytes
/// belong, raw bytes where an attribute array belongs).
fn template(t: &Template) -> Result<CTemplate, Response> {
    if let Some(t) = t {
        attrs::check_template(t).map_err(|e| {
            tracing::debug!("template refused: {e}");
            Response::rv(CKR_ATTRIBUTE_VALUE_INVALID)
        })?;
    }
    Ok(CTemplate::from_opt(t.as_deref()))
}

/// `let x = try_resp!(f());` in a handler: the value, or an early return of the refusal.
macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}
pub(crate) use try_resp;

/// Whether an object made from this template would be private, with the
/// spec's defaults (keys private, everything else public).
fn template_private(t: &[Attribute], default: bool) -> bool {
    let flag = t
        .iter()
        .find(|a| a.kind == CKA_PRIVATE)
        .map(|a| matches!(&a.value, AttrValue::Bytes(b) if b.first().is_some_and(|x| *x != 0)));
    if let Some(f) = flag {
        return f;
    }
    match t.iter().find(|a| a.kind == CKA_CLASS).map(|a| &a.value) {
        Some(AttrValue::Ulong(c)) => *c == CKO_PRIVATE_KEY || *c == CKO_SECRET_KEY,
        _ => default,
    }
}

fn template_token(t: &[Attribute]) -> bool {
    t.iter().any(|a| {
        a.kind == CKA_TOKEN
            && matches!(&a.value, AttrValue::Bytes(b) if b.first().is_some_and(|x| *x != 0))
    })
}

/// `CKR_USER_NOT_LOGGED_IN` where the backend (logged in on kmsd's behalf)
/// would allow what the client's own login state forbids. The order follows
/// the spec's session-state table: a token object in a read-only session is
/// `CKR_SESSION_READ_ONLY`, which the backend reports itself. A session
/// object beyond the identity's `limits.max_objects_per_identity` is
/// `CKR_DEVICE_MEMORY`.
fn check_write(
    d: &Daemon,
    ctx: &Context,
    s: &Sess,
    token: bool,
    private: bool,
) -> Result<(), Response> {
    if !token
        && ctx
            .identity
            .usage
            .objects
            .load(std::sync::atomic::Ordering::Acquire)
            >= d.limits.max_objects_per_identity
    {
        tracing::warn!(identity = %ctx.identity.name, "session object refused: limits.max_objects_per_identity reached");
        return Err(Response::rv(CKR_DEVICE_MEMORY));
    }
    if !private || ctx.state.lock().logged_in(s.slot) {
        return Ok(());
    }
    if token && s.flags & CKF_RW_SESSION == 0 {
        return Ok(());
    }
    Err(Response::rv(CKR_USER_NOT_LOGGED_IN))
}

/// The answer to a call that created object `h` in session `v`: the
/// object gets a handle in this context, or the backend's error goes back.
fn created(
    d: &Daemon,
    ctx: &Context,
    s: &Sess,
    v: u64,
    rv: CK_RV,
    h: CK_OBJECT_HANDLE,
) -> Response {
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    match register(d, ctx, s, h, Some(v)) {
        Some(o) => Response::ok(Body::Handle(add(ctx, o))),
        None => Response::rv(CKR_GENERAL_ERROR),
    }
}
