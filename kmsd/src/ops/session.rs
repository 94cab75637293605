//! Session management (PKCS#11 3.0 §5.6). Login state is the context's own:
//! on a token whose PIN kmsd holds, the backend stays logged in with that
//! PIN and a client's `C_Login` is checked against its identity's PIN hash.

use kmsp11_proto::{
    Body, CloseAllSessions, GetOperationState, GetSessionInfo, Login, OpenSession, Response,
    SessionInfo, SessionOnly, SetOperationState,
};
use pkcs11_sys::*;

use crate::daemon::{give, take, Context, Daemon, Sess, VToken};
use crate::pin::Refused;

/// C_OpenSession (§5.6). Beyond `limits.max_sessions_per_identity`: `CKR_SESSION_COUNT`.
pub fn open_session(d: &Daemon, ctx: &Context, q: OpenSession) -> Response {
    let OpenSession { slot, flags } = q;
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    let usage = &ctx.identity.usage;
    if !take(&usage.sessions, d.limits.max_sessions_per_identity) {
        tracing::warn!(identity = %ctx.identity.name, "C_OpenSession refused: limits.max_sessions_per_identity reached");
        return Response::rv(CKR_SESSION_COUNT);
    }
    let (rv, h) = d.backend.open_session(t.backend_slot, flags);
    if rv != CKR_OK {
        give(&usage.sessions, 1);
        return Response::rv(rv);
    }
    match ctx.add_session(Sess {
        backend: h,
        slot,
        flags,
    }) {
        Some(v) => Response::ok(Body::Handle(v)),
        None => {
            // The context ended while the backend opened the session.
            d.backend.close_session(h);
            give(&usage.sessions, 1);
            Response::rv(CKR_DEVICE_REMOVED)
        }
    }
}

/// C_CloseSession (§5.6): session objects go with the session; closing the
/// last session on a token ends the login there.
pub fn close_session(d: &Daemon, ctx: &Context, q: SessionOnly) -> Response {
    let v = q.session;
    let s = match ctx.state.lock().sessions.remove(&v) {
        Some(s) => s,
        None => return Response::rv(CKR_SESSION_HANDLE_INVALID),
    };
    let rv = d.backend.close_session(s.backend);
    forget(d, ctx, &[v], s.slot);
    Response::rv(rv)
}

/// C_CloseAllSessions (§5.6): this application's sessions only, never the
/// backend's other clients'.
pub fn close_all_sessions(d: &Daemon, ctx: &Context, q: CloseAllSessions) -> Response {
    let slot = q.slot;
    if d.token(ctx, slot).is_none() {
        return Response::rv(CKR_SLOT_ID_INVALID);
    }
    let closed: Vec<(u64, Sess)> = {
        let mut st = ctx.state.lock();
        let ids: Vec<u64> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(k, _)| *k)
            .collect();
        ids.into_iter()
            .filter_map(|k| st.sessions.remove(&k).map(|s| (k, s)))
            .collect()
    };
    for (_, s) in &closed {
        d.backend.close_session(s.backend);
    }
    let ids: Vec<u64> = closed.iter().map(|(k, _)| *k).collect();
    forget(d, ctx, &ids, slot);
    Response::rv(CKR_OK)
}

fn forget(d: &Daemon, ctx: &Context, sessions: &[u64], slot: u64) {
    let (objects, logged_out) = ctx.forget_sessions(sessions, slot);
    d.forget_session_objects(&objects);
    if logged_out {
        if let Some(t) = d.token(ctx, slot).filter(|t| !t.anchored()) {
            d.leave_backend_login(ctx, &t);
        }
    }
}

/// C_GetSessionInfo (§5.6): the state reflects this context's login, not the backend's.
pub fn session_info(d: &Daemon, ctx: &Context, q: GetSessionInfo) -> Response {
    let v = q.session;
    let s = sess!(ctx, v);
    let (rv, si) = d.backend.session_info(s.backend);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
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
    Response::ok(Body::SessionInfo(SessionInfo {
        slot: s.slot,
        state,
        flags: si.flags,
        device_error: si.ulDeviceError,
    }))
}

/// C_Login (§5.6). Every PIN check counts against the identity's
/// failed-login budget (`[login]`); a locked-out identity gets
/// `CKR_PIN_LOCKED` whatever PIN it gives.
pub fn login(d: &Daemon, ctx: &Context, q: Login) -> Response {
    let Login {
        session: v,
        user_type: user,
        pin,
    } = q;
    let s = sess!(ctx, v);
    let Some(t) = d.token(ctx, s.slot) else {
        return Response::rv(CKR_SESSION_HANDLE_INVALID);
    };
    let pin = pin.as_ref().map(|p| p.expose());
    if user != CKU_CONTEXT_SPECIFIC {
        let st = ctx.state.lock();
        if st.user.contains(&s.slot) {
            return Response::rv(if user == CKU_USER {
                CKR_USER_ALREADY_LOGGED_IN
            } else {
                CKR_USER_ANOTHER_ALREADY_LOGGED_IN
            });
        }
        if st.so.contains(&s.slot) {
            return Response::rv(if user == CKU_SO {
                CKR_USER_ALREADY_LOGGED_IN
            } else {
                CKR_USER_ANOTHER_ALREADY_LOGGED_IN
            });
        }
    }
    let rv = match user {
        CKU_USER | CKU_CONTEXT_SPECIFIC if t.anchored() => {
            identity_login(d, ctx, &t, &s, user, pin)
        }
        CKU_SO if !t.so_functions => CKR_USER_TYPE_INVALID,
        CKU_CONTEXT_SPECIFIC => d.backend.login(s.backend, user, pin),
        CKU_USER | CKU_SO => {
            // A token whose PIN kmsd does not hold (transparent mode): the
            // backend checks the PIN, once for all the contexts logged in.
            let mut rv = CKR_GENERAL_ERROR;
            let checked = d.pins.check_with(&ctx.identity.name, || {
                rv = d.join_backend_login(ctx, &t, s.backend, user, pin);
                match rv {
                    CKR_OK => Some(true),
                    CKR_PIN_INCORRECT => Some(false),
                    // Not a verdict on the PIN.
                    _ => None,
                }
            });
            match checked {
                Err(Refused::Locked) => CKR_PIN_LOCKED,
                Ok(_) => rv,
            }
        }
        _ => CKR_USER_TYPE_INVALID,
    };
    if rv == CKR_OK && user != CKU_CONTEXT_SPECIFIC {
        let mut st = ctx.state.lock();
        if user == CKU_SO {
            st.so.insert(s.slot);
        } else {
            st.user.insert(s.slot);
        }
    }
    Response::rv(rv)
}

/// A login on a token whose PIN kmsd holds: the identity's PIN, checked
/// here. For `CKU_CONTEXT_SPECIFIC` (a key with `CKA_ALWAYS_AUTHENTICATE`)
/// the backend session is then re-authenticated with the PIN kmsd holds,
/// as the backend requires before the key's next use.
fn identity_login(
    d: &Daemon,
    ctx: &Context,
    t: &VToken,
    s: &Sess,
    user: u64,
    pin: Option<&[u8]>,
) -> CK_RV {
    let Some(pin) = pin else {
        return CKR_ARGUMENTS_BAD;
    };
    if user == CKU_CONTEXT_SPECIFIC && !ctx.state.lock().user.contains(&s.slot) {
        return CKR_USER_NOT_LOGGED_IN;
    }
    match d
        .pins
        .check(&ctx.identity.name, ctx.identity.pin_hash.as_deref(), pin)
    {
        Err(Refused::Locked) => {
            tracing::warn!(identity = %ctx.identity.name, token = %t.name, "C_Login refused: identity locked out");
            CKR_PIN_LOCKED
        }
        Ok(false) => {
            tracing::warn!(identity = %ctx.identity.name, token = %t.name, "C_Login: PIN incorrect");
            CKR_PIN_INCORRECT
        }
        Ok(true) if user == CKU_CONTEXT_SPECIFIC => {
            let backend_pin = t.backend_pin.as_deref().map(|p| p.as_slice());
            d.backend
                .login(s.backend, CKU_CONTEXT_SPECIFIC, backend_pin)
        }
        Ok(true) => CKR_OK,
    }
}

/// C_Logout (§5.6).
pub fn logout(d: &Daemon, ctx: &Context, q: SessionOnly) -> Response {
    let v = q.session;
    let s = sess!(ctx, v);
    let Some(t) = d.token(ctx, s.slot) else {
        return Response::rv(CKR_SESSION_HANDLE_INVALID);
    };
    let was = {
        let mut st = ctx.state.lock();
        st.so.remove(&s.slot) | st.user.remove(&s.slot)
    };
    if !was {
        return Response::rv(CKR_USER_NOT_LOGGED_IN);
    }
    if !t.anchored() {
        d.leave_backend_login(ctx, &t);
    }
    Response::rv(CKR_OK)
}

/// C_GetOperationState (§5.6): refused. An operation state is the module's
/// own memory, serialised: kmsd never hands the module a blob a client made
/// (SoftHSM does not implement it either).
pub fn operation_state(_d: &Daemon, _ctx: &Context, _q: GetOperationState) -> Response {
    Response::rv(CKR_FUNCTION_NOT_SUPPORTED)
}

/// C_SetOperationState (§5.6): refused, as `C_GetOperationState`.
pub fn set_operation_state(_d: &Daemon, _ctx: &Context, _q: SetOperationState) -> Response {
    Response::rv(CKR_FUNCTION_NOT_SUPPORTED)
}

/// Runs an SO function where the configuration forwards them.
pub fn with_so(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    f: impl FnOnce(&Sess, &VToken) -> CK_RV,
) -> Response {
    let s = sess!(ctx, v);
    match d.token(ctx, s.slot) {
        Some(t) if t.so_functions => Response::rv(f(&s, &t)),
        _ => Response::rv(CKR_FUNCTION_NOT_SUPPORTED),
    }
}
