//! The operations: one function per call, in files named after the spec
//! chapters (the same names as proto's call table and the library's `api`).
//! Each acts on the backend for one request of a client context: it
//! translates the context's virtual handles to backend handles, lets the
//! backend decide, and returns its `CK_RV` unchanged. Dispatch is generated
//! from proto's call table; calls of a shared shape go to one function per
//! shape in `crypto`.

// An operation's early exit is the response itself: `Result<_, Response>` is
// the natural shape, and the response is sent as it is, never propagated far.
#![allow(clippy::result_large_err)]

/// `let s = sess!(ctx, handle);` in an operation: this context's session, or
/// an early `CKR_SESSION_HANDLE_INVALID` response.
macro_rules! sess {
    ($ctx:expr, $v:expr) => {
        match $crate::ops::lookup_session($ctx, $v) {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
}

mod control;
mod crypto;
mod general;
mod keymgmt;
mod object;
mod session;
mod slot_token;

use kmsp11_proto::{
    attrs, AttrValue, Attribute, Body, CallId, Mechanism, Request, Response, Template,
};
use pkcs11_sys::*;

use crate::daemon::{Context, Daemon, Obj, Sess};
use crate::hsm::{CMechanism, CTemplate};

/// Where a call goes: the shape's operation for calls of a shared shape,
/// else the call's own operation in its chapter.
macro_rules! route {
    ($v:ident $h:ident $ch:ident OpInit, $d:ident $ctx:ident $x:ident) => {
        crypto::init($d, $ctx, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident DataOut, $d:ident $ctx:ident $x:ident) => {
        crypto::data_out($d, $ctx, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident OutOnly, $d:ident $ctx:ident $x:ident) => {
        crypto::out_only($d, $ctx, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident DataIn, $d:ident $ctx:ident $x:ident) => {
        crypto::data_in($d, $ctx, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident $p:ident, $d:ident $ctx:ident $x:ident) => {
        $ch::$h($d, $ctx, $x)
    };
}

macro_rules! dispatcher {
    (() $([$id:literal $v:ident $h:ident $c:ident $ch:ident $p:ident])*) => {
        /// Runs one request on the backend. Called on a blocking thread.
        pub fn dispatch(d: &Daemon, ctx: &Context, req: Request) -> Response {
            match req {
                $( Request::$v(x) => route!($v $h $ch $p, d ctx x), )*
            }
        }
    };
}

kmsp11_proto::calls!(dispatcher);

/// Looks up a session of this context; an unknown handle is `CKR_SESSION_HANDLE_INVALID`.
fn lookup_session(ctx: &Context, v: u64) -> Result<Sess, Response> {
    ctx.state
        .lock()
        .sessions
        .get(&v)
        .copied()
        .ok_or(Response::rv(CKR_SESSION_HANDLE_INVALID))
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
