//! Session management (PKCS#11 3.0 §5.6). Login state is the context's own:
//! on a token whose PIN kmsd holds, the backend stays logged in with that
//! PIN and a client's `C_Login` is checked against its identity's PIN hash.

use kmsp11_proto::{
    Body, CloseAllSessions, GetSessionInfo, Login, OpenSession, Response, SessionInfo, SessionOnly,
};
use pkcs11_sys::*;

use super::{answer, done};
use crate::core::call::Call;
use crate::daemon::{give, take, Context, Daemon, Sess, VToken};
use crate::error::Error;
use crate::handles::VSession;
use crate::pin::Refused;

/// C_OpenSession (§5.6). Beyond `limits.max_sessions_per_identity`: `CKR_SESSION_COUNT`.
pub fn open_session(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: OpenSession,
) -> Result<Response, Error> {
    let t = d.token(ctx, q.slot).ok_or(Error::UnknownSlot(q.slot))?;
    let usage = &ctx.identity.usage;
    if !take(&usage.sessions, d.limits.max_sessions_per_identity) {
        tracing::warn!(identity = %ctx.identity.name, "C_OpenSession refused: limits.max_sessions_per_identity reached");
        return Err(Error::Limit {
            limit: "max_sessions_per_identity",
            rv: CKR_SESSION_COUNT,
        });
    }
    let h = d
        .backend
        .open_session(t.backend_slot, q.flags)
        .inspect_err(|_| give(&usage.sessions, 1))?;
    let s = Sess {
        backend: h,
        slot: q.slot,
        flags: q.flags,
    };
    match ctx.add_session(s) {
        Some(v) => answer(Body::Handle(v.0)),
        None => {
            // The context ended while the backend opened the session.
            let _ = d.backend.close_session(h);
            give(&usage.sessions, 1);
            Err(Error::ContextEnded)
        }
    }
}

/// C_CloseSession (§5.6): session objects go with the session; closing the
/// last session on a token ends the login there.
pub fn close_session(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: SessionOnly,
) -> Result<Response, Error> {
    let v = VSession(q.session);
    let s = ctx
        .state
        .lock()
        .sessions
        .remove(v)
        .ok_or(Error::UnknownSession(v))?;
    let closed = d.backend.close_session(s.backend);
    forget(d, ctx, &[v], s.slot);
    closed?;
    done()
}

/// C_CloseAllSessions (§5.6): this application's sessions only, never the
/// backend's other clients'.
pub fn close_all_sessions(
    d: &Daemon,
    ctx: &Context,
    _c: &Call,
    q: CloseAllSessions,
) -> Result<Response, Error> {
    d.token(ctx, q.slot).ok_or(Error::UnknownSlot(q.slot))?;
    let closed = ctx.state.lock().sessions.remove_where(|s| s.slot == q.slot);
    for (_, s) in &closed {
        let _ = d.backend.close_session(s.backend);
    }
    let ids: Vec<VSession> = closed.iter().map(|(v, _)| *v).collect();
    forget(d, ctx, &ids, q.slot);
    done()
}

fn forget(d: &Daemon, ctx: &Context, sessions: &[VSession], slot: u64) {
    let (objects, logged_out) = ctx.forget_sessions(sessions, slot);
    d.forget_session_objects(&objects);
    if logged_out {
        // The context's last session on the token closed: its login ends,
        // and its private session objects went with their sessions.
        d.forget_session_objects(&ctx.logged_out(slot));
        if let Some(t) = d.token(ctx, slot).filter(|t| !t.anchored()) {
            d.leave_backend_login(ctx, &t);
        }
    }
}

/// C_GetSessionInfo (§5.6): the state reflects this context's login, not the backend's.
pub fn session_info(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    q: GetSessionInfo,
) -> Result<Response, Error> {
    let s = c.session()?;
    let si = d.backend.session_info(s.backend)?;
    let st = ctx.state.lock();
    let rw = s.flags & CKF_RW_SESSION != 0;
    let state = if st.so.contains(&s.slot) {
        CKS_RW_SO_FUNCTIONS
    } else if st.user.contains(&s.slot) {
        if rw {
            CKS_RW_USER_FUNCTIONS
        } else {
            CKS_RO_USER_FUNCTIONS
        }
    } else if rw {
        CKS_RW_PUBLIC_SESSION
    } else {
        CKS_RO_PUBLIC_SESSION
    };
    answer(Body::SessionInfo(SessionInfo {
        slot: s.slot,
        state,
        flags: si.flags,
        device_error: st
            .device_errors
            .get(&q.session)
            .copied()
            .unwrap_or(si.ulDeviceError),
    }))
}

/// C_GetOperationState and C_SetOperationState (§5.6): refused. An
/// operation state is the module's own memory, serialised: kmsd never hands
/// the module a blob a client made (SoftHSM does not implement it either).
pub fn operation_state<Q>(
    _d: &Daemon,
    _ctx: &Context,
    _c: &Call,
    _q: Q,
) -> Result<Response, Error> {
    Err(Error::NotOffered("operation state"))
}

/// C_Login (§5.6). Every PIN check counts against the identity's
/// failed-login budget (`[login]`); a locked-out identity gets
/// `CKR_PIN_LOCKED` whatever PIN it gives.
pub fn login(d: &Daemon, ctx: &Context, c: &Call, q: Login) -> Result<Response, Error> {
    let s = c.session()?;
    let t = d
        .token(ctx, s.slot)
        .ok_or(Error::UnknownSession(VSession(q.session)))?;
    let user = q.user_type;
    let pin = q.pin.as_ref().map(|p| p.expose());
    if user != CKU_CONTEXT_SPECIFIC {
        let st = ctx.state.lock();
        let already = |as_this: bool| {
            Err(Error::Rv(if as_this {
                CKR_USER_ALREADY_LOGGED_IN
            } else {
                CKR_USER_ANOTHER_ALREADY_LOGGED_IN
            }))
        };
        if st.user.contains(&s.slot) {
            return already(user == CKU_USER);
        }
        if st.so.contains(&s.slot) {
            return already(user == CKU_SO);
        }
    }
    let attempt = Attempt {
        d,
        ctx,
        t: &t,
        s: &s,
        user,
        pin,
    };
    match user {
        CKU_USER | CKU_CONTEXT_SPECIFIC if t.anchored() => attempt.identity_pin()?,
        CKU_SO if !t.so_functions => return Err(Error::Rv(CKR_USER_TYPE_INVALID)),
        CKU_CONTEXT_SPECIFIC => d.backend.login(s.backend, user, pin)?,
        CKU_USER | CKU_SO => attempt.backend_pin()?,
        _ => return Err(Error::Rv(CKR_USER_TYPE_INVALID)),
    }
    if user != CKU_CONTEXT_SPECIFIC {
        let mut st = ctx.state.lock();
        if user == CKU_SO {
            st.so.insert(s.slot);
        } else {
            st.user.insert(s.slot);
        }
    }
    done()
}

/// One `C_Login`: who, on which token and session, as which user, with what PIN.
struct Attempt<'a> {
    d: &'a Daemon,
    ctx: &'a Context,
    t: &'a VToken,
    s: &'a Sess,
    user: u64,
    pin: Option<&'a [u8]>,
}

impl Attempt<'_> {
    /// A token whose PIN kmsd holds: the identity's PIN, checked here. For
    /// `CKU_CONTEXT_SPECIFIC` (a key with `CKA_ALWAYS_AUTHENTICATE`) the
    /// backend session is then re-authenticated with the PIN kmsd holds, as
    /// the backend requires before the key's next use.
    fn identity_pin(&self) -> Result<(), Error> {
        let (d, ctx, t, s, user) = (self.d, self.ctx, self.t, self.s, self.user);
        let pin = self.pin.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        if user == CKU_CONTEXT_SPECIFIC && !ctx.state.lock().user.contains(&s.slot) {
            return Err(Error::NotLoggedIn);
        }
        match d
            .pins
            .check(&ctx.identity.name, ctx.identity.pin_hash.as_deref(), pin)
        {
            Err(Refused::Locked) => {
                tracing::warn!(identity = %ctx.identity.name, token = %t.name, "C_Login refused: identity locked out");
                Err(Error::Rv(CKR_PIN_LOCKED))
            }
            Ok(false) => {
                tracing::warn!(identity = %ctx.identity.name, token = %t.name, "C_Login: PIN incorrect");
                Err(Error::Rv(CKR_PIN_INCORRECT))
            }
            Ok(true) if user == CKU_CONTEXT_SPECIFIC => {
                let backend_pin = t.backend_pin.as_deref().map(|p| p.as_slice());
                d.backend
                    .login(s.backend, CKU_CONTEXT_SPECIFIC, backend_pin)
            }
            Ok(true) => Ok(()),
        }
    }

    /// A token whose PIN kmsd does not hold (transparent mode): the backend
    /// checks the PIN, once for all the contexts logged in; each check
    /// still counts against the identity's budget.
    fn backend_pin(&self) -> Result<(), Error> {
        let (d, ctx, t, s, user, pin) = (self.d, self.ctx, self.t, self.s, self.user, self.pin);
        let mut result = Err(Error::Rv(CKR_GENERAL_ERROR));
        let checked = d.pins.check_with(&ctx.identity.name, || {
            result = d.join_backend_login(ctx, t, s.backend, user, pin);
            match &result {
                Ok(()) => Some(true),
                Err(e) if e.rv() == CKR_PIN_INCORRECT => Some(false),
                // Not a verdict on the PIN.
                Err(_) => None,
            }
        });
        match checked {
            Err(Refused::Locked) => Err(Error::Rv(CKR_PIN_LOCKED)),
            Ok(_) => result,
        }
    }
}

/// C_Logout (§5.6).
pub fn logout(d: &Daemon, ctx: &Context, c: &Call, q: SessionOnly) -> Result<Response, Error> {
    let s = c.session()?;
    let t = d
        .token(ctx, s.slot)
        .ok_or(Error::UnknownSession(VSession(q.session)))?;
    let was = {
        let mut st = ctx.state.lock();
        st.so.remove(&s.slot) | st.user.remove(&s.slot)
    };
    if !was {
        return Err(Error::NotLoggedIn);
    }
    // As the spec has it: the application's handles to private objects
    // become invalid and its private session objects are destroyed. The
    // backend may stay logged in for others, so kmsd destroys them itself.
    let private = ctx.logged_out(s.slot);
    for h in &private {
        if let Err(e) = d.backend.destroy_object(s.backend, *h) {
            tracing::warn!(
                context = ctx.id,
                "destroying a private session object at logout: {e}"
            );
        }
    }
    d.forget_session_objects(&private);
    if !t.anchored() {
        d.leave_backend_login(ctx, &t);
    }
    done()
}

/// Runs an SO function where the configuration forwards them.
pub fn with_so(
    d: &Daemon,
    ctx: &Context,
    c: &Call,
    f: impl FnOnce(&Sess, &VToken) -> Result<(), Error>,
) -> Result<Response, Error> {
    let s = c.session()?;
    match d.token(ctx, s.slot) {
        Some(t) if t.so_functions => f(&s, &t).and_then(|_| done()),
        _ => Err(Error::NotOffered("SO functions on this token")),
    }
}
