//! The operations: one function per call, in files named after the spec
//! chapters (the same names as proto's call table and the library's `api`).
//! Each acts on the backend for one request of a client context, already
//! resolved and decided (`core::pipeline`): the [`Call`] holds its session
//! and the backend handles of the objects it names, so an operation looks
//! nothing up; it lets the backend decide and returns its `CK_RV` unchanged (an [`Error`] names
//! what was refused, and the backend function). Dispatch is generated
//! from proto's call table; calls of a shared shape go to one function per
//! shape in `crypto`.

mod control;
mod crypto;
mod general;
mod keymgmt;
mod object;
mod session;
mod slot_token;

use std::sync::atomic::Ordering;

use kmsp11_proto::{attrs, AttrValue, Body, CallId, Mechanism, Request, Response, Template};
use pkcs11_sys::*;

use crate::core::call::Call;
use crate::daemon::{Context, Daemon, Obj, Sess};
use crate::error::Error;
use crate::handles::{BObject, VSession};
use crate::hsm::{CMechanism, CTemplate};

/// Where a call goes: the shape's operation for calls of a shared shape,
/// else the call's own operation in its chapter.
macro_rules! route {
    ($v:ident $h:ident $ch:ident OpInit, $d:ident $ctx:ident $rc:ident $x:ident) => {
        crypto::init($d, $ctx, $rc, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident DataOut, $d:ident $ctx:ident $rc:ident $x:ident) => {
        crypto::data_out($d, $ctx, $rc, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident OutOnly, $d:ident $ctx:ident $rc:ident $x:ident) => {
        crypto::out_only($d, $ctx, $rc, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident DataIn, $d:ident $ctx:ident $rc:ident $x:ident) => {
        crypto::data_in($d, $ctx, $rc, CallId::$v, $x)
    };
    ($v:ident $h:ident $ch:ident $p:ident, $d:ident $ctx:ident $rc:ident $x:ident) => {
        $ch::$h($d, $ctx, $rc, $x)
    };
}

macro_rules! dispatcher {
    (() $([$id:literal $v:ident $h:ident $c:ident $ch:ident $p:ident])*) => {
        /// Runs one resolved request on the backend. Called on a blocking thread.
        pub fn dispatch(d: &Daemon, ctx: &Context, rc: &Call, req: Request) -> Response {
            let call = req.call();
            let result = match req {
                $( Request::$v(x) => route!($v $h $ch $p, d ctx rc x), )*
            };
            result.unwrap_or_else(|e| {
                tracing::debug!(context = ctx.id, call = call.c_name(), "{e}");
                e.into()
            })
        }
    };
}

kmsp11_proto::calls!(dispatcher);

/// Gives a backend object a handle in this context, reading what decides
/// its visibility (`CKA_TOKEN`, `CKA_PRIVATE`). `created_in` is the client
/// session that just created it, if any.
fn register(
    d: &Daemon,
    ctx: &Context,
    s: &Sess,
    h: BObject,
    created_in: Option<VSession>,
) -> Option<Obj> {
    {
        let st = ctx.state.lock();
        if let Some(v) = st.objects.handle_of(h) {
            return st.objects.get(v).copied();
        }
    }
    let t = d.token(ctx, s.slot)?;
    let owner = if created_in.is_some() {
        ctx.identity.name.as_str()
    } else {
        ""
    };
    let known = match d
        .inventory
        .known(&d.backend, s.backend, t.backend_slot, &t.name, h, owner)
    {
        Ok(k) => k?,
        Err(e) => {
            tracing::error!("store: {e}; object not given a handle");
            return None;
        }
    };
    let (token, private) = (known.facts.token, known.facts.private);
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

/// The C mechanism for a client's mechanism, or the refusal. A parameter
/// not in the form its mechanism takes (DESIGN.md decision 3) never reaches
/// the HSM: `CKR_MECHANISM_PARAM_INVALID`, or `CKR_MECHANISM_INVALID` as
/// the backend itself answers for a mechanism it does not have. Handles
/// inside the parameter are translated like any other handle.
fn mechanism(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    s: &Sess,
    m: &Mechanism,
) -> Result<CMechanism, Error> {
    if let Err(e) = kmsp11_proto::mechanism::check(m, |v| d.raw_vendor.contains(&v)) {
        tracing::debug!(identity = %ctx.identity.name, "mechanism parameter refused: {e}");
        let known = d
            .token(ctx, s.slot)
            .is_some_and(|t| t.mechanisms.contains(&m.mechanism));
        return Err(Error::MechanismParam {
            mechanism: m.mechanism,
            known,
        });
    }
    Ok(CMechanism::new(m, d.backend.v3(), |h| c.backend(h).0))
}

/// The C template for a client's template, refused when a value's form
/// contradicts its type (an attribute array where bytes belong, raw bytes
/// where an attribute array belongs).
fn template(t: &Template) -> Result<CTemplate, Error> {
    if let Some(t) = t {
        attrs::check_template(t).map_err(|e| Error::AttributeForm(e.0))?;
    }
    Ok(CTemplate::from_opt(t.as_deref()))
}

/// What an object made from this template would be: (token object,
/// private object), with the spec's defaults (keys private, everything
/// else public unless `private_default`).
fn kind_of(t: &Template, private_default: bool) -> (bool, bool) {
    let t = t.as_deref().unwrap_or_default();
    let class = t.iter().find(|a| a.kind == CKA_CLASS).map(|a| &a.value);
    let key =
        matches!(class, Some(AttrValue::Ulong(c)) if *c == CKO_PRIVATE_KEY || *c == CKO_SECRET_KEY);
    (
        attrs::flag(t, CKA_TOKEN).unwrap_or(false),
        attrs::flag(t, CKA_PRIVATE).unwrap_or(key || private_default),
    )
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
    (token, private): (bool, bool),
) -> Result<(), Error> {
    let objects = ctx.identity.usage.objects.load(Ordering::Acquire);
    if !token && objects >= d.limits.max_objects_per_identity {
        tracing::warn!(identity = %ctx.identity.name, "session object refused: limits.max_objects_per_identity reached");
        return Err(Error::Limit {
            limit: "max_objects_per_identity",
            rv: CKR_DEVICE_MEMORY,
        });
    }
    if !private || ctx.state.lock().logged_in(s.slot) {
        return Ok(());
    }
    if token && s.flags & CKF_RW_SESSION == 0 {
        return Ok(());
    }
    Err(Error::NotLoggedIn)
}

/// The answer to a call that created object `h` in session `v`: the
/// object gets a handle in this context.
fn created(d: &Daemon, ctx: &Context, s: &Sess, v: u64, h: BObject) -> Result<Response, Error> {
    let o = register(d, ctx, s, h, Some(VSession(v))).ok_or(Error::Rv(CKR_GENERAL_ERROR))?;
    Ok(Response::ok(Body::Handle(ctx.add_object(o).0)))
}

/// `CKR_OK` and nothing else.
fn done() -> Result<Response, Error> {
    Ok(Response::rv(CKR_OK))
}

fn answer(body: Body) -> Result<Response, Error> {
    Ok(Response::ok(body))
}
