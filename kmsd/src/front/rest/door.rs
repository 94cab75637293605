//! How a REST request reaches the HSM: as the PKCS#11 calls a client would
//! make (open a session, find the key by label, `*Init`, the data call),
//! each run by [`Pipeline::run_traced`] in a context of the caller's own,
//! so policy, quotas, dual control and audit are the ones every PKCS#11
//! call meets. The context lives for one request and ends with it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use kmsp11_proto::{
    AttrQuery, AttrValue, Attribute, Body, DataOut, FindObjects, FindObjectsInit,
    GetAttributeValue, Mechanism, OpInit, OpenSession, Request, Response, SessionOnly,
};
use pkcs11_sys::*;

use super::Problem;
use crate::audit::log::Entry;
use crate::context::Context;
use crate::core::inventory::Known;
use crate::core::pipeline::{Origin, Outcome, Pipeline};
use crate::core::refusal::Refusal;
use crate::daemon::{Daemon, Identity, VToken};
use crate::handles::VObject;
use crate::store::KeyRecord;

/// Objects asked for per `C_FindObjects`.
const FIND_BATCH: u64 = 64;
/// Objects a listing reads at most per class and token.
pub const MAX_LISTED: usize = 4096;

/// One REST request's PKCS#11 context.
pub struct Door {
    d: Arc<Daemon>,
    ctx: Arc<Context>,
    peer: SocketAddr,
    next_id: u64,
    /// The open session and its token.
    session: Option<(u64, Arc<VToken>)>,
}

impl Drop for Door {
    fn drop(&mut self) {
        self.d.end_context(&self.ctx);
    }
}

/// A call's answer and the record of its outcome.
pub struct Done {
    pub body: Body,
    pub rv: CK_RV,
    pub entry: Option<Entry>,
}

impl Door {
    pub fn open(
        d: &Arc<Daemon>,
        identity: &Arc<Identity>,
        peer: SocketAddr,
    ) -> Result<Door, Problem> {
        let (ctx, _) = d.open_context(identity, None, 0).ok_or_else(|| {
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "limit",
                "limits.max_contexts_per_identity reached",
            )
        })?;
        Ok(Door {
            d: d.clone(),
            ctx,
            peer,
            next_id: 1,
            session: None,
        })
    }

    fn origin(&mut self) -> Origin {
        self.next_id += 1;
        Origin {
            request_id: self.next_id,
            peer: self.peer,
            audited: true,
        }
    }

    /// A read-write session on token `t`, logged in by the caller's
    /// certificate (closing the one before).
    pub fn session_on(&mut self, t: &Arc<VToken>) -> Result<u64, Problem> {
        if let Some((s, cur)) = &self.session {
            if Arc::ptr_eq(cur, t) {
                return Ok(*s);
            }
            let s = *s;
            self.session = None;
            let _ = self.run(Request::CloseSession(SessionOnly { session: s }));
        }
        if !t.anchored() {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "token_not_served",
                format!(
                    "token {} is served in transparent mode (kmsd does not hold its PIN): use it through PKCS#11",
                    t.name
                ),
            ));
        }
        let open = self.run(Request::OpenSession(OpenSession {
            slot: t.slot,
            flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
        }));
        let s = match open.response.body {
            Body::Handle(h) if open.response.rv == CKR_OK => h,
            _ => return Err(failed(&open, "C_OpenSession")),
        };
        self.session = Some((s, t.clone()));
        let origin = self.origin();
        let login = Pipeline {
            daemon: &self.d,
            ctx: &self.ctx,
        }
        .certificate_login(s, origin);
        if login.response.rv != CKR_OK {
            return Err(failed(&login, "login"));
        }
        Ok(s)
    }

    /// The open session (after [`Door::session_on`]).
    pub fn session(&self) -> u64 {
        self.session.as_ref().map_or(0, |(s, _)| *s)
    }

    pub fn run(&mut self, request: Request) -> Outcome {
        let origin = self.origin();
        Pipeline {
            daemon: &self.d,
            ctx: &self.ctx,
        }
        .run_traced(request, origin)
    }

    /// Runs a call that must answer `CKR_OK`; anything else is the
    /// caller's error (`what` names the call in it).
    pub fn ok(&mut self, request: Request, what: &str) -> Result<Done, Problem> {
        let out = self.run(request);
        if out.response.rv != CKR_OK {
            return Err(failed(&out, what));
        }
        Ok(done(out))
    }

    /// Runs a call whose CK_RV the caller reads (a verify's).
    pub fn any(&mut self, request: Request, what: &str) -> Result<Done, Problem> {
        let out = self.run(request);
        if out.refusal.is_some() {
            return Err(failed(&out, what));
        }
        Ok(done(out))
    }

    /// The objects of `class` (and `label`, when given) this caller finds
    /// on the open session's token, as policy lets it see them.
    pub fn find(&mut self, class: u64, label: Option<&str>) -> Result<Vec<u64>, Problem> {
        let session = self.session();
        let mut template = vec![Attribute {
            kind: CKA_CLASS,
            value: AttrValue::Ulong(class),
        }];
        if let Some(l) = label {
            template.push(Attribute {
                kind: CKA_LABEL,
                value: AttrValue::Bytes(l.as_bytes().to_vec()),
            });
        }
        self.ok(
            Request::FindObjectsInit(FindObjectsInit {
                session,
                template: Some(template),
            }),
            "C_FindObjectsInit",
        )?;
        let mut found = Vec::new();
        let r = loop {
            let out = self.ok(
                Request::FindObjects(FindObjects {
                    session,
                    max: FIND_BATCH,
                }),
                "C_FindObjects",
            );
            match out.map(|d| d.body) {
                Ok(Body::Handles(h)) if h.is_empty() => break Ok(()),
                Ok(Body::Handles(h)) => {
                    found.extend(h);
                    if found.len() >= MAX_LISTED {
                        break Ok(());
                    }
                }
                Ok(_) => break Err(Problem::hsm("C_FindObjects answered no handles")),
                Err(e) => break Err(e),
            }
        };
        let _ = self.run(Request::FindObjectsFinal(SessionOnly { session }));
        r.map(|_| found)
    }

    /// The one object of `class` labelled `label`.
    pub fn find_one(&mut self, class: u64, label: &str) -> Result<u64, Problem> {
        let found = self.find(class, Some(label))?;
        match found.as_slice() {
            [h] => Ok(*h),
            [] => Err(Problem::unseen()),
            _ => Err(Problem::new(
                StatusCode::CONFLICT,
                "ambiguous",
                format!(
                    "{} objects of class {} are labelled {label:?}",
                    found.len(),
                    crate::core::facts::class_name(class)
                ),
            )),
        }
    }

    /// Attribute values of an object (public attributes: policy's
    /// `read-attribute`); one absent or unreadable is `None`.
    pub fn attributes(
        &mut self,
        object: u64,
        kinds: &[u64],
    ) -> Result<Vec<Option<Vec<u8>>>, Problem> {
        let session = self.session();
        let template = kinds
            .iter()
            .map(|&kind| AttrQuery {
                kind,
                buf: Some(4096),
            })
            .collect();
        let out = self.run(Request::GetAttributeValue(GetAttributeValue {
            session,
            object,
            template,
        }));
        if out.refusal.is_some() {
            return Err(failed(&out, "C_GetAttributeValue"));
        }
        match out.response.body {
            Body::Attributes(a) => Ok(a
                .into_iter()
                .map(|a| match a.value {
                    Some(AttrValue::Bytes(b)) => Some(b),
                    Some(AttrValue::Ulong(u)) => Some(u.to_ne_bytes().to_vec()),
                    _ => None,
                })
                .collect()),
            _ => Err(failed(&out, "C_GetAttributeValue")),
        }
    }

    /// What kmsd knows of an object this context holds a handle of.
    fn known(&self, handle: u64) -> Option<Arc<Known>> {
        let o = self
            .ctx
            .state
            .lock()
            .objects
            .get(VObject(handle))
            .copied()?;
        let t = self.d.token(&self.ctx, o.slot)?;
        self.d.inventory.cached(t.backend_slot, o.backend)
    }

    /// kmsd's record of a key this context holds a handle of.
    pub fn record_of(&self, handle: u64) -> Option<KeyRecord> {
        let id = self.known(handle)?.key.clone()?;
        self.d.inventory.store.key(&id).ok().flatten()
    }

    /// The size in bits kmsd knows of a key this context holds.
    pub fn size_of(&self, handle: u64) -> Option<u64> {
        self.known(handle)?.facts.size
    }

    /// A single-part operation with `key`: its `*Init`, then the data
    /// call with room for `out` bytes; the data call's output and record.
    pub fn single(
        &mut self,
        op: Single,
        key: u64,
        mechanism: Mechanism,
        data: Vec<u8>,
        out: u64,
    ) -> Result<(Vec<u8>, Option<Entry>), Problem> {
        let session = self.session();
        let init = OpInit {
            session,
            mechanism,
            key,
        };
        let call = DataOut {
            session,
            data: Some(data),
            out: Some(out),
        };
        let (init, call, name) = match op {
            Single::Sign => (Request::SignInit(init), Request::Sign(call), "C_Sign"),
            Single::Encrypt => (
                Request::EncryptInit(init),
                Request::Encrypt(call),
                "C_Encrypt",
            ),
            Single::Decrypt => (
                Request::DecryptInit(init),
                Request::Decrypt(call),
                "C_Decrypt",
            ),
        };
        self.ok(init, &format!("{name}Init"))?;
        let done = self.ok(call, name)?;
        match done.body {
            Body::Output { data: Some(d), .. } => Ok((d, done.entry)),
            _ => Err(Problem::hsm(format!("{name} answered no data"))),
        }
    }
}

/// The single-part operations the API runs.
#[derive(Debug, Clone, Copy)]
pub enum Single {
    Sign,
    Encrypt,
    Decrypt,
}

fn done(out: Outcome) -> Done {
    let Response { rv, body } = out.response;
    Done {
        body,
        rv,
        entry: out.entry,
    }
}

/// A call that did not answer `CKR_OK`, as the REST caller sees it: a
/// refusal by its reason, otherwise by the CK_RV.
pub fn failed(out: &Outcome, what: &str) -> Problem {
    let rv = out.response.rv;
    let rv_name = crate::error::rv_name(rv).into_owned();
    let mut p = match &out.refusal {
        Some(r) => refused(r),
        None => by_rv(rv, what),
    };
    p.rv = Some(rv_name);
    p.receipt_entry = out.entry.clone().map(Box::new);
    p
}

fn refused(r: &Refusal) -> Problem {
    let (status, code, message) = match r {
        Refusal::Policy { rule } | Refusal::Mechanism { rule } => (
            StatusCode::FORBIDDEN,
            "policy_denied",
            format!("policy does not permit this ({rule})"),
        ),
        Refusal::Hidden { .. } => return Problem::unseen(),
        Refusal::Constraint(v) => (StatusCode::FORBIDDEN, "constraint", v.rule().to_string()),
        Refusal::KeyDisabled => (
            StatusCode::FORBIDDEN,
            "key_disabled",
            "the key is disabled".into(),
        ),
        Refusal::KeyRevoked { reason } => (
            StatusCode::FORBIDDEN,
            "key_revoked",
            format!("the key is revoked: {reason}"),
        ),
        Refusal::KeyExpired => (
            StatusCode::FORBIDDEN,
            "key_expired",
            "the key (or this version of it) is past its expiry: it verifies and decrypts only"
                .into(),
        ),
        Refusal::Quota(e) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", e.rule()),
        Refusal::Pending { id, have, need } => {
            let mut p = Problem::new(
                StatusCode::FORBIDDEN,
                "approval_pending",
                format!("needs {need} approvals ({have} so far): request {id}; approvers run `kmsctl approvals approve {id}`, then repeat this"),
            );
            p.approval = Some(id.clone());
            return p;
        }
        Refusal::Denied { id, state } => {
            let mut p = Problem::new(
                StatusCode::FORBIDDEN,
                "approval_denied",
                format!("approval request {id} is {state}"),
            );
            p.approval = Some(id.clone());
            return p;
        }
        Refusal::Audit | Refusal::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("kmsd cannot record or check this now ({})", r.reason()),
        ),
    };
    Problem::new(status, code, message)
}

fn by_rv(rv: CK_RV, what: &str) -> Problem {
    let name = crate::error::rv_name(rv);
    let (status, code) = match rv {
        CKR_ENCRYPTED_DATA_INVALID | CKR_ENCRYPTED_DATA_LEN_RANGE => {
            (StatusCode::BAD_REQUEST, "invalid_ciphertext")
        }
        CKR_DATA_LEN_RANGE
        | CKR_DATA_INVALID
        | CKR_ARGUMENTS_BAD
        | CKR_MECHANISM_PARAM_INVALID
        | CKR_DOMAIN_PARAMS_INVALID
        | CKR_ATTRIBUTE_VALUE_INVALID => (StatusCode::BAD_REQUEST, "bad_request"),
        CKR_KEY_TYPE_INCONSISTENT | CKR_KEY_FUNCTION_NOT_PERMITTED | CKR_MECHANISM_INVALID => {
            (StatusCode::BAD_REQUEST, "key_unsuitable")
        }
        CKR_SESSION_COUNT => (StatusCode::TOO_MANY_REQUESTS, "limit"),
        CKR_DEVICE_ERROR | CKR_DEVICE_REMOVED | CKR_TOKEN_NOT_PRESENT => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        _ => (StatusCode::BAD_GATEWAY, "hsm_error"),
    };
    Problem::new(status, code, format!("{what}: {name}"))
}
