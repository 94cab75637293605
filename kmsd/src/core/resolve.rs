//! Request → [`Call`]: the client's session and object handles become the
//! token, the key (with its inventory state) and the mechanism; a data
//! call is known by what its session's `*Init` armed; a creating call by
//! the key its template describes. Resolution refuses nothing by itself:
//! an unknown handle resolves to no key and the operation answers as the
//! HSM would.

use std::sync::Arc;

use kmsp11_proto::{attrs, AttrValue, Attribute, Request, Template};
use pkcs11_sys::*;

use super::active::{Stage, Step};
use super::call::{Call, Target};
use super::facts;
use crate::authz::constraints;
use crate::authz::policy::KeyView;
use crate::authz::Action;
use crate::context::{Context, Sess};
use crate::daemon::{Daemon, VToken};
use crate::handles::{VObject, VSession};
use crate::store::StoreError;

/// Resolves `req` (request id `id`) of context `ctx`.
pub fn resolve(
    d: &Daemon,
    ctx: &Context,
    req: &Request,
    step: Option<&Step>,
    id: u64,
) -> Result<Call, StoreError> {
    let mut call = Call {
        request_id: id,
        op: req.call(),
        principal: ctx.identity.clone(),
        session: None,
        action: None,
        token: None,
        mechanism: None,
        key: None,
        wrapped: None,
        creates: None,
    };
    if let Some(s) = step {
        call.session = Some(s.session());
        let Some(session) = session(ctx, s.session()) else {
            return Ok(call);
        };
        call.token = d.token(ctx, session.slot);
        let op = ctx.state.lock().active.of(s);
        if let Some(op) = op {
            call.mechanism = Some(op.mechanism);
            if let Some(h) = op.key {
                call.key = target(d, ctx, &session, h)?;
            }
        }
        // Judged at `*Init`; `C_DigestKey` judges the key it digests.
        if s.stage() == Stage::Init && call.key.is_some() {
            call.action = Some(s.kinds()[0].action());
        }
        if let Request::DigestKey(q) = req {
            call.key = target(d, ctx, &session, q.key)?;
            call.action = Some(Action::Digest);
        }
        return Ok(call);
    }
    let Some(sv) = session_of(req) else {
        if let Request::GetMechanismInfo(q) = req {
            call.mechanism = Some(q.mechanism);
        }
        return Ok(call);
    };
    call.session = Some(sv);
    let Some(s) = session(ctx, sv) else {
        return Ok(call);
    };
    call.token = d.token(ctx, s.slot);
    let token = call.token.clone();
    let key = |h: u64| target(d, ctx, &s, h);
    match req {
        Request::WrapKey(q) => {
            call.mechanism = Some(q.mechanism.mechanism);
            call.key = key(q.wrapping_key)?;
            call.wrapped = key(q.key)?;
            call.action = Some(Action::Wrap);
        }
        Request::UnwrapKey(q) => {
            call.mechanism = Some(q.mechanism.mechanism);
            call.key = key(q.unwrapping_key)?;
            call.creates = Some(view(&call, &token, &q.template, CKO_SECRET_KEY, None, None));
            call.action = Some(Action::Unwrap);
        }
        Request::DeriveKey(q) => {
            call.mechanism = Some(q.mechanism.mechanism);
            call.key = key(q.base_key)?;
            call.creates = Some(view(&call, &token, &q.template, CKO_SECRET_KEY, None, None));
            call.action = Some(Action::Derive);
        }
        Request::GenerateKey(q) => {
            let m = q.mechanism.mechanism;
            call.mechanism = Some(m);
            let kt = constraints::generated_type(m);
            call.creates = Some(view(&call, &token, &q.template, CKO_SECRET_KEY, kt, None));
            call.action = Some(Action::Generate);
        }
        Request::GenerateKeyPair(q) => {
            let m = q.mechanism.mechanism;
            call.mechanism = Some(m);
            let kt = constraints::generated_type(m);
            // The private half's template, sized from the public half's.
            call.creates = Some(view(
                &call,
                &token,
                &q.private,
                CKO_PRIVATE_KEY,
                kt,
                q.public.as_deref(),
            ));
            call.action = Some(Action::Generate);
        }
        Request::CreateObject(q) => {
            call.creates = Some(view(&call, &token, &q.template, CKO_DATA, None, None));
            call.action = Some(Action::Import);
        }
        Request::CopyObject(q) => {
            call.key = key(q.object)?;
            call.action = Some(Action::Copy);
        }
        Request::DestroyObject(q) => {
            call.key = key(q.object)?;
            call.action = Some(Action::Destroy);
        }
        Request::SetAttributeValue(q) => {
            call.key = key(q.object)?;
            call.action = Some(Action::SetAttribute);
        }
        Request::GetAttributeValue(q) => {
            call.key = key(q.object)?;
            let secret = call
                .key
                .as_ref()
                .is_some_and(|k| matches!(k.known.facts.class, CKO_PRIVATE_KEY | CKO_SECRET_KEY));
            let sensitive = q.template.iter().any(|a| SENSITIVE.contains(&a.kind));
            call.action = Some(if secret && sensitive {
                Action::ReadSensitiveAttribute
            } else {
                Action::ReadAttribute
            });
        }
        Request::GetObjectSize(q) => {
            call.key = key(q.object)?;
            call.action = Some(Action::ReadAttribute);
        }
        Request::Login(_) => call.action = Some(Action::Login),
        _ => {}
    }
    if call.key.is_none() && call.action != Some(Action::Login) && call.creates.is_none() {
        // Nothing to judge: the HSM answers for the unknown handle.
        call.action = None;
    }
    Ok(call)
}

/// Attributes that hold a private or secret key's material.
const SENSITIVE: [CK_ATTRIBUTE_TYPE; 7] = [
    CKA_VALUE,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];

/// The key a template describes, as policy sees it: `class` and
/// `key_type` when the template does not say; its size from `sizing` (the
/// public half of a pair) when given.
fn view(
    call: &Call,
    token: &Option<Arc<VToken>>,
    t: &Template,
    class: u64,
    key_type: Option<u64>,
    sizing: Option<&[Attribute]>,
) -> KeyView {
    let t = t.as_deref().unwrap_or_default();
    let ulong = |kind| {
        t.iter()
            .find(|a| a.kind == kind)
            .and_then(|a| match a.value {
                AttrValue::Ulong(v) => Some(v),
                _ => None,
            })
    };
    let class = ulong(CKA_CLASS).unwrap_or(class);
    let key_type = ulong(CKA_KEY_TYPE).or(key_type);
    let size = key_type.and_then(|kt| constraints::size_of(kt, sizing.unwrap_or(t)));
    let label = t
        .iter()
        .find(|a| a.kind == CKA_LABEL)
        .and_then(|a| match &a.value {
            AttrValue::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .unwrap_or_default();
    KeyView {
        id: String::new(),
        label,
        token: token.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
        class: facts::class_name(class).to_string(),
        key_type: key_type.map(facts::key_type_name).unwrap_or_default(),
        size: size.unwrap_or(0) as i64,
        owner: call.principal.name.clone(),
        state: "active".into(),
        tags: vec![],
        session_object: !attrs::flag(t, CKA_TOKEN).unwrap_or(false),
        sensitive: attrs::flag(t, CKA_SENSITIVE).unwrap_or(false),
        extractable: attrs::flag(t, CKA_EXTRACTABLE).unwrap_or(false),
    }
}

fn session(ctx: &Context, v: u64) -> Option<Sess> {
    ctx.state.lock().sessions.get(VSession(v)).copied()
}

/// The object behind handle `h`, read through session `s`, with its state.
/// `None` for unknown handles, and private objects while not logged in.
fn target(d: &Daemon, ctx: &Context, s: &Sess, h: u64) -> Result<Option<Target>, StoreError> {
    let o = {
        let st = ctx.state.lock();
        match st.objects.get(VObject(h)) {
            Some(o) if !o.private || st.logged_in(o.slot) => *o,
            _ => return Ok(None),
        }
    };
    found(d, ctx, s, &o, h)
}

/// The object `o` (the client's handle `h`), read through session `s`,
/// with its state.
pub fn found(
    d: &Daemon,
    ctx: &Context,
    s: &Sess,
    o: &crate::context::Obj,
    h: u64,
) -> Result<Option<Target>, StoreError> {
    let Some(tok) = d.token(ctx, o.slot) else {
        return Ok(None);
    };
    let Some(known) = d.inventory.known(
        &d.backend,
        s.backend,
        tok.backend_slot,
        &tok.name,
        o.backend,
        "",
    )?
    else {
        return Ok(None);
    };
    let status = match &known.key {
        Some(id) => d.inventory.status(id)?,
        None => None,
    };
    Ok(Some(Target {
        handle: h,
        backend: o.backend,
        known,
        status,
    }))
}

/// The session handle of a request, if it has one.
fn session_of(req: &Request) -> Option<u64> {
    Some(match req {
        Request::WrapKey(q) => q.session,
        Request::UnwrapKey(q) => q.session,
        Request::DeriveKey(q) => q.session,
        Request::GenerateKey(q) => q.session,
        Request::GenerateKeyPair(q) => q.session,
        Request::CreateObject(q) => q.session,
        Request::CopyObject(q) => q.session,
        Request::DestroyObject(q) => q.session,
        Request::SetAttributeValue(q) => q.session,
        Request::GetAttributeValue(q) => q.session,
        Request::GetObjectSize(q) => q.session,
        Request::Login(q) => q.session,
        _ => return None,
    })
}
