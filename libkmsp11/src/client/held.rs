//! What the library holds back from kmsd so that an operation costs one
//! round trip (DESIGN.md decision 4), with every answer and every operation
//! state as if each call had gone to kmsd alone.
//!
//! * An `*Init` the library has seen kmsd accept before (the same call,
//!   mechanism and key, since the login state and the objects last changed)
//!   on a session with no operation active is answered `CKR_OK` here and
//!   sent in one [`Batch`] with the session's next call. If kmsd refuses it
//!   then (the key was revoked, the policy changed), the operation's next
//!   call answers that refusal and no operation is active.
//! * A length query of a single-part call right after such an `*Init`
//!   (init, `C_Sign(NULL)`, `C_Sign(buf)`, as most applications do) runs
//!   the call in full; its answer is kept and handed over by the next call
//!   with the same input and a large enough buffer, without a round trip.
//! * `C_FindObjectsInit` is held and sent with the first `C_FindObjects`
//!   and `C_FindObjectsFinal`, so a search of up to [`FIND_AHEAD`] objects
//!   is one exchange.
//!
//! Any other call on a session with something held first puts kmsd where
//! the application believes it is (the held `*Init`, the search up to the
//! handles already handed out), in the same exchange as the call itself.
//! Calls whose effect reaches every session (login, logout, object changes)
//! release what every session holds first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use kmsp11_proto::{
    Batch, Body, CallId, DataOut, FindObjects, FindObjectsInit, Request, Response, SessionOnly,
    Template,
};
use parking_lot::Mutex;
use pkcs11_sys::*;
use zeroize::Zeroizing;

use super::Client;
use crate::error::{Error, Result};

/// How many handles the first exchange of a search asks for.
pub const FIND_AHEAD: u64 = 64;
/// Room for a length query's output beyond its input when the call is run
/// in full (signatures and ciphertext overhead are smaller); a longer
/// output is answered as the length query it was.
const ROOM: u64 = 1024;
/// The most accepted `*Init` calls remembered; forgotten all at once beyond.
const MAX_ACCEPTED: usize = 4096;

#[derive(Default)]
pub(crate) struct Held {
    sessions: Mutex<HashMap<u64, Arc<Entry>>>,
    /// `*Init` calls kmsd accepted (call, mechanism, key; any session).
    accepted: Mutex<HashSet<Vec<u8>>>,
}

struct Entry {
    slot: u64,
    /// Held across the call's round trip: one call at a time per session.
    state: Mutex<Session>,
}

struct Session {
    /// No operation is active at kmsd on this session, as far as known
    /// for certain; `false` when unsure.
    idle: bool,
    pending: Option<Pending>,
}

enum Pending {
    /// An `*Init` answered here that kmsd has not seen.
    Init(Request),
    /// A search kmsd has not seen.
    Find(Template),
    /// A single-part call kmsd ran in full at a length query; kmsd's
    /// operation is over and `init` starts it again.
    Answer {
        init: Request,
        call: CallId,
        data: Option<Vec<u8>>,
        out: Zeroizing<Vec<u8>>,
    },
    /// A search kmsd ran and ended: the handles not yet handed out, and
    /// whether there are no more than these.
    Found {
        template: Template,
        given: u64,
        rest: VecDeque<u64>,
        complete: bool,
    },
}

impl Pending {
    /// The calls that put kmsd where the application believes it is.
    fn restore(self) -> Vec<Request> {
        match self {
            Pending::Init(init) | Pending::Answer { init, .. } => vec![init],
            Pending::Find(template) => vec![find_init(0, template)],
            Pending::Found {
                template, given, ..
            } => {
                let mut v = vec![find_init(0, template)];
                if given > 0 {
                    v.push(Request::FindObjects(FindObjects {
                        session: 0,
                        max: given,
                    }));
                }
                v
            }
        }
    }

    /// The `*Init` whose operation this is, if it is one.
    fn init(&self) -> Option<CallId> {
        match self {
            Pending::Init(r) | Pending::Answer { init: r, .. } => Some(r.call()),
            _ => None,
        }
    }
}

fn find_init(session: u64, template: Template) -> Request {
    Request::FindObjectsInit(FindObjectsInit { session, template })
}

/// The calls of the operation an `*Init` starts.
fn family(init: CallId) -> &'static [CallId] {
    use CallId::*;
    match init {
        EncryptInit => &[Encrypt, EncryptUpdate, EncryptFinal],
        DecryptInit => &[Decrypt, DecryptUpdate, DecryptFinal],
        DigestInit => &[Digest, DigestUpdate, DigestKey, DigestFinal],
        SignInit => &[Sign, SignUpdate, SignFinal],
        SignRecoverInit => &[SignRecover],
        VerifyInit => &[Verify, VerifyUpdate, VerifyFinal],
        VerifyRecoverInit => &[VerifyRecover],
        _ => &[],
    }
}

/// Single-part calls and finals: their answer ends the operation unless it
/// was a length query or `CKR_BUFFER_TOO_SMALL`.
fn finishing(call: CallId) -> bool {
    use CallId::*;
    matches!(
        call,
        Encrypt
            | Decrypt
            | Digest
            | Sign
            | SignRecover
            | VerifyRecover
            | EncryptFinal
            | DecryptFinal
            | DigestFinal
            | SignFinal
    )
}

/// Answers of a single-part call or final that end the operation for
/// certain: the input did not do. Others (kmsd's refusals among them) may
/// leave it active, and are taken as such.
fn fails_operation(rv: CK_RV) -> bool {
    matches!(
        rv,
        CKR_DATA_INVALID
            | CKR_DATA_LEN_RANGE
            | CKR_ENCRYPTED_DATA_INVALID
            | CKR_ENCRYPTED_DATA_LEN_RANGE
    )
}

/// What identifies an `*Init` across sessions: the call, the mechanism
/// with its parameter, the key. `None` for calls that are not held.
fn accept_key(r: &Request) -> Option<Vec<u8>> {
    let (call, m, key) = match r {
        Request::EncryptInit(o)
        | Request::DecryptInit(o)
        | Request::SignInit(o)
        | Request::SignRecoverInit(o)
        | Request::VerifyInit(o)
        | Request::VerifyRecoverInit(o) => (r.call(), &o.mechanism, o.key),
        Request::DigestInit(d) => (r.call(), &d.mechanism, 0),
        _ => return None,
    };
    kmsp11_proto::encode(&(call as u16, m, key)).ok()
}

/// Whether a call changes what every session may do (login state, objects,
/// PINs), so that what sessions hold is released first and accepted
/// `*Init` calls are forgotten.
fn reaches_all(r: &Request) -> bool {
    matches!(
        r,
        Request::Login(_)
            | Request::Logout(_)
            | Request::DestroyObject(_)
            | Request::SetAttributeValue(_)
            | Request::InitPin(_)
            | Request::SetPin(_)
            | Request::InitToken(_)
    )
}

/// The request with its session set (restore calls are built without one).
fn in_session(mut r: Request, s: u64) -> Request {
    match &mut r {
        Request::FindObjectsInit(f) => f.session = s,
        Request::FindObjects(f) => f.session = s,
        _ => {}
    }
    r
}

impl Held {
    /// kmsd lost this client's context (it restarted): its sessions are
    /// gone, and kmsd answers for their handles from now on.
    pub fn forget(&self) {
        self.sessions.lock().clear();
        self.accepted.lock().clear();
    }

    fn session(&self, s: u64) -> Option<Arc<Entry>> {
        self.sessions.lock().get(&s).cloned()
    }

    fn accept(&self, key: Vec<u8>) {
        let mut a = self.accepted.lock();
        if a.len() >= MAX_ACCEPTED {
            a.clear();
        }
        a.insert(key);
    }
}

/// One call of the application, through what is held.
pub(crate) fn call(c: &Client, req: Request) -> Result<Response> {
    if reaches_all(&req) {
        c.held.accepted.lock().clear();
        release_all(c, req.session())?;
    }
    let Some(s) = req.session() else {
        return sessionless(c, req);
    };
    let Some(entry) = c.held.session(s) else {
        // Not a session this library opened: kmsd answers.
        return c.send(req);
    };
    let mut sess = entry.state.lock();
    match sess.pending.take() {
        None => fresh(c, s, &mut sess, req),
        Some(p) => with_pending(c, s, &mut sess, p, req),
    }
}

fn sessionless(c: &Client, req: Request) -> Result<Response> {
    match req {
        Request::OpenSession(o) => {
            let slot = o.slot;
            let r = c.send(Request::OpenSession(o))?;
            if let (CKR_OK, Body::Handle(h)) = (r.rv, &r.body) {
                let state = Mutex::new(Session {
                    idle: true,
                    pending: None,
                });
                c.held
                    .sessions
                    .lock()
                    .insert(*h, Arc::new(Entry { slot, state }));
            }
            Ok(r)
        }
        Request::CloseAllSessions(a) => {
            let slot = a.slot;
            let r = c.send(Request::CloseAllSessions(a))?;
            if r.rv == CKR_OK {
                c.held.sessions.lock().retain(|_, e| e.slot != slot);
            }
            Ok(r)
        }
        req => c.send(req),
    }
}

/// Sends what every session (but `except`) holds.
fn release_all(c: &Client, except: Option<u64>) -> Result<()> {
    let all: Vec<_> = c
        .held
        .sessions
        .lock()
        .iter()
        .filter(|(s, _)| Some(**s) != except)
        .map(|(s, x)| (*s, x.clone()))
        .collect();
    for (s, entry) in all {
        let mut sess = entry.state.lock();
        if let Some(p) = sess.pending.take() {
            let calls: Vec<_> = p.restore().into_iter().map(|r| in_session(r, s)).collect();
            sess.idle = false;
            batch(c, calls)?;
        }
    }
    Ok(())
}

/// A call on a session with nothing held.
fn fresh(c: &Client, s: u64, sess: &mut Session, req: Request) -> Result<Response> {
    match req {
        Request::CloseSession(x) => close(c, s, x),
        Request::FindObjectsInit(f) if sess.idle => {
            sess.pending = Some(Pending::Find(f.template));
            sess.idle = false;
            Ok(Response::rv(CKR_OK))
        }
        req => {
            let key = accept_key(&req);
            if sess.idle
                && key
                    .as_ref()
                    .is_some_and(|k| c.held.accepted.lock().contains(k))
            {
                sess.pending = Some(Pending::Init(req));
                sess.idle = false;
                return Ok(Response::rv(CKR_OK));
            }
            let (call, query) = (req.call(), length_query(&req));
            let r = c.send(req)?;
            note(c, sess, call, query, key, &r);
            Ok(r)
        }
    }
}

fn close(c: &Client, s: u64, x: SessionOnly) -> Result<Response> {
    let r = c.send(Request::CloseSession(x))?;
    if matches!(
        r.rv,
        CKR_OK | CKR_SESSION_HANDLE_INVALID | CKR_SESSION_CLOSED
    ) {
        c.held.sessions.lock().remove(&s);
    }
    Ok(r)
}

fn length_query(r: &Request) -> bool {
    match r {
        Request::Encrypt(d)
        | Request::Decrypt(d)
        | Request::Digest(d)
        | Request::Sign(d)
        | Request::SignRecover(d)
        | Request::VerifyRecover(d) => d.out.is_none(),
        Request::EncryptFinal(o)
        | Request::DecryptFinal(o)
        | Request::DigestFinal(o)
        | Request::SignFinal(o) => o.out.is_none(),
        _ => false,
    }
}

/// What kmsd's answer to a call says about the session's operation.
fn note(
    c: &Client,
    sess: &mut Session,
    call: CallId,
    query: bool,
    key: Option<Vec<u8>>,
    r: &Response,
) {
    use CallId::*;
    match call {
        _ if (!family(call).is_empty() || call == FindObjectsInit) && r.rv == CKR_OK => {
            sess.idle = false;
            if let Some(k) = key {
                c.held.accept(k);
            }
        }
        _ if finishing(call) && ((r.rv == CKR_OK && !query) || fails_operation(r.rv)) => {
            sess.idle = true;
        }
        Verify | VerifyFinal => {
            if matches!(
                r.rv,
                CKR_OK | CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE
            ) {
                sess.idle = true;
            }
        }
        FindObjectsFinal if r.rv == CKR_OK => sess.idle = true,
        SetOperationState => sess.idle = false,
        _ => {}
    }
}

/// A call on a session that holds something.
fn with_pending(
    c: &Client,
    s: u64,
    sess: &mut Session,
    p: Pending,
    req: Request,
) -> Result<Response> {
    match (p, req) {
        // What was held ends with the session.
        (_, Request::CloseSession(x)) => close(c, s, x),
        (Pending::Init(init), req) if runs_ahead(&init, &req) => {
            let call = req.call();
            let d = into_d(req).expect("a single-part data call");
            run_ahead(c, sess, init, call, d)
        }
        (Pending::Find(template), Request::FindObjects(q)) => {
            first_find(c, s, sess, template, q.max)
        }
        (Pending::Find(_) | Pending::Found { .. }, Request::FindObjectsFinal(_)) => {
            sess.idle = true;
            Ok(Response::rv(CKR_OK))
        }
        (
            Pending::Found {
                template,
                mut given,
                mut rest,
                complete,
            },
            Request::FindObjects(q),
        ) if complete || rest.len() as u64 >= q.max => {
            let n = (q.max.min(rest.len() as u64)) as usize;
            let out: Vec<u64> = rest.drain(..n).collect();
            given += n as u64;
            sess.pending = Some(Pending::Found {
                template,
                given,
                rest,
                complete,
            });
            Ok(Response::ok(Body::Handles(out)))
        }
        (
            Pending::Answer {
                init,
                call,
                data,
                mut out,
            },
            req,
        ) if req.call() == call && d_of(&req).is_some_and(|d| d.data == data) => {
            let cap = d_of(&req).and_then(|d| d.out);
            let len = out.len() as u64;
            match cap {
                Some(cap) if cap >= len => {
                    sess.idle = true;
                    // Handed over as kmsd's answers are, without a copy.
                    Ok(output(CKR_OK, len, Some(std::mem::take(&mut *out))))
                }
                cap => {
                    let rv = if cap.is_some() {
                        CKR_BUFFER_TOO_SMALL
                    } else {
                        CKR_OK
                    };
                    sess.pending = Some(Pending::Answer {
                        init,
                        call,
                        data,
                        out,
                    });
                    Ok(output(rv, len, None))
                }
            }
        }
        (p, req) => restore_then(c, s, sess, p, req),
    }
}

/// A length query, with input, of the single-part call of a held `*Init`.
fn runs_ahead(init: &Request, req: &Request) -> bool {
    family(init.call()).contains(&req.call())
        && d_of(req).is_some_and(|d| d.out.is_none() && d.data.is_some())
}

/// The payload of a single-part call that may run ahead.
fn d_of(r: &Request) -> Option<&DataOut> {
    match r {
        Request::Encrypt(d) | Request::Decrypt(d) | Request::Digest(d) | Request::Sign(d) => {
            Some(d)
        }
        _ => None,
    }
}

fn into_d(r: Request) -> Option<DataOut> {
    match r {
        Request::Encrypt(d) | Request::Decrypt(d) | Request::Digest(d) | Request::Sign(d) => {
            Some(d)
        }
        _ => None,
    }
}

fn with_d(call: CallId, d: DataOut) -> Request {
    match call {
        CallId::Encrypt => Request::Encrypt(d),
        CallId::Decrypt => Request::Decrypt(d),
        CallId::Digest => Request::Digest(d),
        _ => Request::Sign(d),
    }
}

fn output(rv: CK_RV, len: u64, data: Option<Vec<u8>>) -> Response {
    Response {
        rv,
        body: Body::Output { len, data },
    }
}

/// A held `*Init` and a length query of its single-part call: both sent,
/// the call run in full with room for its output; the answer kept for the
/// call that brings the buffer.
fn run_ahead(
    c: &Client,
    sess: &mut Session,
    init: Request,
    call: CallId,
    d: DataOut,
) -> Result<Response> {
    // The input is kept (to compare with the call that brings the buffer)
    // and sent: one copy.
    let (session, data) = (d.session, d.data);
    let room = data
        .as_ref()
        .map_or(0, |b| b.len() as u64)
        .saturating_add(ROOM);
    let ask = |out| {
        with_d(
            call,
            DataOut {
                session,
                data: data.clone(),
                out,
            },
        )
    };
    let full = ask(Some(room));
    let key = accept_key(&init);
    let (r, refused) = pair(batch(c, vec![init.clone(), full])?);
    if refused {
        return Ok(refused_init(c, sess, key, r));
    }
    match (r.rv, r.body) {
        (
            CKR_OK,
            Body::Output {
                len,
                data: Some(out),
            },
        ) if out.len() as u64 == len => {
            sess.pending = Some(Pending::Answer {
                init,
                call,
                data,
                out: Zeroizing::new(out),
            });
            Ok(output(CKR_OK, len, None))
        }
        // Longer than the room given: kmsd's operation is still active,
        // and this was the length query the application asked for.
        (CKR_BUFFER_TOO_SMALL, Body::Output { len, .. }) => {
            sess.idle = false;
            Ok(output(CKR_OK, len, None))
        }
        // The call failed in full, which may have ended the operation
        // (SoftHSM ends it on any failure of the input) where a length
        // query would not have failed: asked as the application asked, on
        // a new start of the operation; if the operation is still active
        // (kmsd refused the call before the HSM saw it), on that one.
        _ => {
            let (r, refused) = pair(batch(c, vec![init, ask(None)])?);
            let r = match (refused, r.rv) {
                (false, _) => r,
                (true, CKR_OPERATION_ACTIVE) => c.send(ask(None))?,
                (true, _) => return Ok(refused_init(c, sess, key, r)),
            };
            sess.idle = false;
            note(c, sess, call, true, None, &r);
            Ok(r)
        }
    }
}

/// The answer of a held `*Init`'s call, or the `*Init`'s refusal (`true`)
/// when kmsd stopped there.
fn pair(answers: Vec<Response>) -> (Response, bool) {
    let mut a = answers.into_iter();
    let first = a.next().unwrap_or_else(|| Response::rv(CKR_GENERAL_ERROR));
    match a.next() {
        Some(r) => (r, false),
        None => (first, true),
    }
}

/// kmsd refused a held `*Init`: the operation's call answers the refusal,
/// no operation is active, and the `*Init` is no longer taken as accepted.
fn refused_init(c: &Client, sess: &mut Session, key: Option<Vec<u8>>, r: Response) -> Response {
    if let Some(k) = key {
        c.held.accepted.lock().remove(&k);
    }
    sess.idle = true;
    r
}

/// The first `C_FindObjects` of a held search: init, up to
/// [`FIND_AHEAD`] handles, final, in one exchange.
fn first_find(
    c: &Client,
    s: u64,
    sess: &mut Session,
    template: Template,
    max: u64,
) -> Result<Response> {
    let ahead = max.max(FIND_AHEAD);
    let answers = batch(
        c,
        vec![
            find_init(s, template.clone()),
            Request::FindObjects(FindObjects {
                session: s,
                max: ahead,
            }),
            Request::FindObjectsFinal(SessionOnly { session: s }),
        ],
    )?;
    let n = answers.len();
    let mut answers = answers.into_iter();
    let init = answers.next().expect("one answer");
    if n == 1 {
        // The search did not start: its first call answers why.
        sess.idle = true;
        return Ok(init);
    }
    let found = answers.next().expect("two answers");
    if found.rv != CKR_OK {
        sess.idle = false;
        return Ok(found);
    }
    let Body::Handles(h) = found.body else {
        return Err(Error::Protocol("C_FindObjects"));
    };
    if h.len() as u64 > ahead {
        return Err(Error::Protocol("C_FindObjects"));
    }
    // A final kmsd did not take leaves its search active there.
    let ended = n == 3;
    let complete = (h.len() as u64) < ahead;
    let mut rest: VecDeque<u64> = h.into();
    let give: Vec<u64> = rest
        .drain(..(max.min(rest.len() as u64) as usize))
        .collect();
    if ended {
        sess.pending = Some(Pending::Found {
            template,
            given: give.len() as u64,
            rest,
            complete,
        });
    } else {
        sess.idle = false;
    }
    Ok(Response::ok(Body::Handles(give)))
}

/// Any other call: what was held is sent first, in the same exchange.
fn restore_then(
    c: &Client,
    s: u64,
    sess: &mut Session,
    p: Pending,
    req: Request,
) -> Result<Response> {
    let init = p.init();
    let key = match &p {
        Pending::Init(r) | Pending::Answer { init: r, .. } => accept_key(r),
        _ => None,
    };
    let mut calls: Vec<_> = p.restore().into_iter().map(|r| in_session(r, s)).collect();
    let n = calls.len();
    let (call, query, req_key) = (req.call(), length_query(&req), accept_key(&req));
    calls.push(req.clone());
    let answers = batch(c, calls)?;
    sess.idle = false;
    if answers.len() <= n {
        // What was held failed at kmsd.
        let refusal = answers.into_iter().last();
        if let (Some(r), true) = (refusal, init.is_some_and(|i| family(i).contains(&call))) {
            return Ok(refused_init(c, sess, key, r));
        }
        if let Some(k) = key {
            c.held.accepted.lock().remove(&k);
        }
        sess.idle = true;
        let r = c.send(req)?;
        note(c, sess, call, query, req_key, &r);
        return Ok(r);
    }
    let r = answers.into_iter().last().expect("the call's answer");
    note(c, sess, call, query, req_key, &r);
    Ok(r)
}

/// Sends calls in one exchange (a lone call as itself); the answers of the
/// calls kmsd ran, the last one the first that was not `CKR_OK`.
fn batch(c: &Client, calls: Vec<Request>) -> Result<Vec<Response>> {
    let n = calls.len();
    if n == 1 {
        return Ok(vec![c.send(calls.into_iter().next().expect("one call"))?]);
    }
    answers(c.send(Request::Batch(Batch { calls }))?, n)
}

/// kmsd's answer to a batch of `n` calls, held to what a batch may
/// answer: one answer per call run, all `CKR_OK` but the last when it
/// stopped early. A batch refused as a whole (memory, execution slot,
/// audit) answers as if its first call had been.
fn answers(r: Response, n: usize) -> Result<Vec<Response>> {
    match r.body {
        Body::Batch(a)
            if r.rv == CKR_OK
                && !a.is_empty()
                && a.len() <= n
                && a.iter().rev().skip(1).all(|x| x.rv == CKR_OK)
                && (a.len() == n || a.last().is_some_and(|x| x.rv != CKR_OK)) =>
        {
            Ok(a)
        }
        _ if r.rv != CKR_OK => Ok(vec![Response::rv(r.rv)]),
        _ => Err(Error::Protocol("batch")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(rvs: &[CK_RV]) -> Response {
        Response::ok(Body::Batch(
            rvs.iter().map(|rv| Response::rv(*rv)).collect(),
        ))
    }

    // What kmsd may answer to a batch, and what it may not: a wrong
    // answer is a protocol error, never taken as a call's outcome.
    #[test]
    fn batch_answers_are_held_to_their_shape() {
        assert_eq!(answers(batch_of(&[CKR_OK, CKR_OK]), 2).unwrap().len(), 2);
        let stopped = answers(batch_of(&[CKR_KEY_HANDLE_INVALID]), 2).unwrap();
        assert_eq!(stopped[0].rv, CKR_KEY_HANDLE_INVALID);
        let whole = answers(Response::rv(CKR_DEVICE_MEMORY), 2).unwrap();
        assert_eq!((whole.len(), whole[0].rv), (1, CKR_DEVICE_MEMORY));
        for bad in [
            batch_of(&[]),
            batch_of(&[CKR_OK]),
            batch_of(&[CKR_OK, CKR_OK, CKR_OK]),
            batch_of(&[CKR_KEY_HANDLE_INVALID, CKR_OK]),
            Response::ok(Body::Empty),
        ] {
            assert!(
                matches!(answers(bad.clone(), 2), Err(Error::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}
