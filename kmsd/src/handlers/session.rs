//! Session management (PKCS#11 2.40 §5.6). Login state is the context's own:
//! the backend stays logged in with the PIN kmsd holds.

use kmsp11_proto::{Body, Response, SessionInfo};
use pkcs11_sys::*;
use zeroize::Zeroizing;

use super::object;
use crate::daemon::{Context, Daemon, Sess};

/// C_OpenSession (§5.6).
pub fn open(d: &Daemon, ctx: &Context, slot: u64, flags: u64) -> Response {
    let Some(t) = d.token(ctx, slot) else {
        return Response::rv(CKR_SLOT_ID_INVALID);
    };
    let (rv, h) = d.backend.open_session(t.backend_slot, flags);
    if rv != CKR_OK {
        return Response::rv(rv);
    }
    let v = ctx.state.lock().add_session(Sess {
        backend: h,
        slot,
        flags,
    });
    Response::ok(Body::Handle(v))
}

/// C_CloseSession (§5.6): session objects go with the session; closing the
/// last session on a token ends the login there.
pub fn close(d: &Daemon, ctx: &Context, v: u64) -> Response {
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
pub fn close_all(d: &Daemon, ctx: &Context, slot: u64) -> Response {
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
    let mut st = ctx.state.lock();
    let gone: Vec<(u64, CK_OBJECT_HANDLE)> = st
        .objects
        .iter()
        .filter(|(_, o)| o.session.is_some_and(|s| sessions.contains(&s)))
        .map(|(v, o)| (*v, o.backend))
        .collect();
    for (v, _) in &gone {
        st.remove_object(*v);
    }
    let last = !st.sessions.values().any(|s| s.slot == slot);
    let so = last && st.so.remove(&slot);
    if last {
        st.user.remove(&slot);
    }
    drop(st);
    let handles: Vec<CK_OBJECT_HANDLE> = gone.into_iter().map(|(_, h)| h).collect();
    d.forget_session_objects(&handles);
    let _ = so; // the backend ends a forwarded SO login itself with its last session
}

/// C_GetSessionInfo (§5.6): the state reflects this context's login, not the backend's.
pub fn info(d: &Daemon, ctx: &Context, v: u64) -> Response {
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

/// C_SetOperationState (§5.6).
pub fn set_operation_state(
    d: &Daemon,
    ctx: &Context,
    v: u64,
    state: Option<Vec<u8>>,
    enc: u64,
    auth: u64,
) -> Response {
    let s = sess!(ctx, v);
    let enc = if enc == 0 { 0 } else { object(ctx, enc) };
    let auth = if auth == 0 { 0 } else { object(ctx, auth) };
    Response::rv(
        d.backend
            .set_operation_state(s.backend, state.as_deref(), enc, auth),
    )
}

/// C_Login (§5.6). A user login on a token whose backend PIN kmsd holds is
/// checked against the identity's PIN hash and never reaches the backend.
pub fn login(d: &Daemon, ctx: &Context, v: u64, user: u64, pin: Option<Vec<u8>>) -> Response {
    let pin = pin.map(Zeroizing::new);
    let s = sess!(ctx, v);
    let Some(t) = d.token(ctx, s.slot) else {
        return Response::rv(CKR_SESSION_HANDLE_INVALID);
    };
    match user {
        CKU_USER if t.anchored => {
            {
                let st = ctx.state.lock();
                if st.user.contains(&s.slot) {
                    return Response::rv(CKR_USER_ALREADY_LOGGED_IN);
                }
                if st.so.contains(&s.slot) {
                    return Response::rv(CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
                }
            }
            let Some(pin) = pin else {
                return Response::rv(CKR_ARGUMENTS_BAD);
            };
            if !crate::authz::verify_pin(ctx.identity.pin_hash.as_deref(), &pin) {
                tracing::warn!(identity = %ctx.identity.name, token = %t.name, "C_Login: PIN incorrect");
                return Response::rv(CKR_PIN_INCORRECT);
            }
            ctx.state.lock().user.insert(s.slot);
            Response::rv(CKR_OK)
        }
        CKU_SO if !t.so_functions => Response::rv(CKR_USER_TYPE_INVALID),
        CKU_CONTEXT_SPECIFIC if t.anchored => {
            // The backend is logged in with kmsd's PIN; re-authentication of an
            // always-authenticate key is the identity's PIN checked here.
            let Some(pin) = pin else {
                return Response::rv(CKR_ARGUMENTS_BAD);
            };
            if !ctx.state.lock().user.contains(&s.slot) {
                return Response::rv(CKR_USER_NOT_LOGGED_IN);
            }
            if !crate::authz::verify_pin(ctx.identity.pin_hash.as_deref(), &pin) {
                return Response::rv(CKR_PIN_INCORRECT);
            }
            Response::rv(CKR_OK)
        }
        _ => {
            // Transparent tokens without a kmsd-held PIN: the login is the backend's.
            let rv = d
                .backend
                .login(s.backend, user, pin.as_deref().map(|p| p.as_slice()));
            if rv == CKR_OK {
                let mut st = ctx.state.lock();
                if user == CKU_SO {
                    st.so.insert(s.slot);
                } else {
                    st.user.insert(s.slot);
                }
            }
            Response::rv(rv)
        }
    }
}

/// C_Logout (§5.6).
pub fn logout(d: &Daemon, ctx: &Context, v: u64) -> Response {
    let s = sess!(ctx, v);
    let anchored = d.token(ctx, s.slot).is_some_and(|t| t.anchored);
    let mut st = ctx.state.lock();
    if st.so.remove(&s.slot) {
        drop(st);
        return Response::rv(d.backend.logout(s.backend));
    }
    if st.user.remove(&s.slot) {
        drop(st);
        if !anchored {
            return Response::rv(d.backend.logout(s.backend));
        }
        return Response::rv(CKR_OK);
    }
    Response::rv(CKR_USER_NOT_LOGGED_IN)
}

/// Runs an SO function where the configuration forwards them.
pub fn with_so(d: &Daemon, ctx: &Context, v: u64, f: impl FnOnce(&Sess) -> CK_RV) -> Response {
    let s = sess!(ctx, v);
    match d.token(ctx, s.slot) {
        Some(t) if t.so_functions => Response::rv(f(&s)),
        _ => Response::rv(CKR_FUNCTION_NOT_SUPPORTED),
    }
}
