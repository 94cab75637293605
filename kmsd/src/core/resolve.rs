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
        session: req.session(),
        sess: None,
        named: vec![],
        params: vec![],
        action: None,
        token: None,
        mechanism: None,
        key: None,
        wrapped: None,
        creates: None,
    };
    if let Request::GetMechanismInfo(q) = req {
        call.mechanism = Some(q.mechanism);
    }
    let Some(s) = call.session.and_then(|v| session(ctx, v)) else {
        return Ok(call);
    };
    call.sess = Some(s);
    call.token = d.token(ctx, s.slot);
    let mut named = Vec::new();
    if let Some(m) = mechanism_of(req) {
        call.mechanism = Some(m.mechanism);
        for h in m.param.handles() {
            if let Some(t) = object(d, ctx, &s, h, &mut named)? {
                call.params.push(t);
            }
        }
    }
    if let Some(st) = step {
        let op = ctx.state.lock().active.of(st);
        if let Some(op) = op {
            call.mechanism = Some(op.mechanism);
            if let Some(h) = op.key {
                call.key = object(d, ctx, &s, h, &mut named)?;
            }
        }
        // Judged at `*Init`; `C_DigestKey` judges the key it digests.
        if st.stage() == Stage::Init && call.key.is_some() {
            call.action = Some(st.kinds()[0].action());
        }
        if let Request::DigestKey(q) = req {
            call.key = object(d, ctx, &s, q.key, &mut named)?;
            call.action = Some(Action::Digest);
        }
        call.named = named;
        return Ok(call);
    }
    let token = call.token.clone();
    match req {
        Request::WrapKey(q) => {
            call.key = object(d, ctx, &s, q.wrapping_key, &mut named)?;
            call.wrapped = object(d, ctx, &s, q.key, &mut named)?;
            call.action = Some(Action::Wrap);
        }
        Request::UnwrapKey(q) => {
            call.key = object(d, ctx, &s, q.unwrapping_key, &mut named)?;
            call.creates = Some(view(&call, &token, &q.template, CKO_SECRET_KEY, None, None));
            call.action = Some(Action::Unwrap);
        }
        Request::DeriveKey(q) => {
            call.key = object(d, ctx, &s, q.base_key, &mut named)?;
            call.creates = Some(view(&call, &token, &q.template, CKO_SECRET_KEY, None, None));
            call.action = Some(Action::Derive);
        }
        Request::GenerateKey(q) => {
            let kt = constraints::generated_type(q.mechanism.mechanism);
            call.creates = Some(view(&call, &token, &q.template, CKO_SECRET_KEY, kt, None));
            call.action = Some(Action::Generate);
        }
        Request::GenerateKeyPair(q) => {
            let kt = constraints::generated_type(q.mechanism.mechanism);
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
            call.key = object(d, ctx, &s, q.object, &mut named)?;
            call.action = Some(Action::Copy);
        }
        Request::DestroyObject(q) => {
            call.key = object(d, ctx, &s, q.object, &mut named)?;
            call.action = Some(Action::Destroy);
        }
        Request::SetAttributeValue(q) => {
            call.key = object(d, ctx, &s, q.object, &mut named)?;
            call.action = Some(Action::SetAttribute);
        }
        Request::GetAttributeValue(q) => {
            call.key = object(d, ctx, &s, q.object, &mut named)?;
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
            call.key = object(d, ctx, &s, q.object, &mut named)?;
            call.action = Some(Action::ReadAttribute);
        }
        Request::Login(_) => call.action = Some(Action::Login),
        _ => {}
    }
    call.named = named;
    let judged = call.key.is_some() || !call.params.is_empty() || call.creates.is_some();
    if !judged && call.action != Some(Action::Login) {
        // Nothing to judge: the HSM answers for the unknown handle.
        call.action = None;
    }
    Ok(call)
}

/// The mechanism a request names, if any.
fn mechanism_of(req: &Request) -> Option<&kmsp11_proto::Mechanism> {
    Some(match req {
        Request::EncryptInit(q)
        | Request::DecryptInit(q)
        | Request::SignInit(q)
        | Request::SignRecoverInit(q)
        | Request::VerifyInit(q)
        | Request::VerifyRecoverInit(q) => &q.mechanism,
        Request::DigestInit(q) => &q.mechanism,
        Request::GenerateKey(q) => &q.mechanism,
        Request::GenerateKeyPair(q) => &q.mechanism,
        Request::WrapKey(q) => &q.mechanism,
        Request::UnwrapKey(q) => &q.mechanism,
        Request::DeriveKey(q) => &q.mechanism,
        _ => return None,
    })
}

/// The object behind the client's handle `h`: its backend handle added to
/// `named`, and the object with its state when kmsd can read it. `None`
/// for unknown handles, and private objects while not logged in.
fn object(
    d: &Daemon,
    ctx: &Context,
    s: &Sess,
    h: u64,
    named: &mut Vec<(u64, crate::handles::BObject)>,
) -> Result<Option<Target>, StoreError> {
    let o = {
        let st = ctx.state.lock();
        match st.objects.get(VObject(h)) {
            Some(o) if !o.private || st.logged_in(o.slot) => *o,
            _ => return Ok(None),
        }
    };
    named.push((h, o.backend));
    found(d, ctx, s, &o, h)
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
