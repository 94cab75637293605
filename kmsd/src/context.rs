//! Client contexts (DESIGN.md decision 2): one application's sessions,
//! object handles and login state, which survive reconnection within the
//! grace period, and the answers it was given, kept by request id so that a
//! request sent again after a lost connection is answered, not run twice.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsp11_proto::Response;
use parking_lot::{Condvar, Mutex};
use pkcs11_sys::*;
use rand::RngCore;

use crate::daemon::{give, Identity};
use crate::handles::{BObject, BSession, Backed, HandleMap, VObject, VSession};

/// One application's view: sessions, object handles and login state
/// survive reconnection within the grace period.
pub struct Context {
    pub id: u64,
    /// The client's process id as it said in Hello (for logs only).
    pub pid: u32,
    pub token: Vec<u8>,
    pub identity: Arc<Identity>,
    pub state: Mutex<CtxState>,
    conns: Mutex<(usize, Option<Instant>)>,
    replay: Mutex<Replay>,
    replay_done: Condvar,
}

pub struct CtxState {
    /// Set by `C_Finalize` (Goodbye) or expiry: every connection of the
    /// context is closed at its next request and nothing new is added.
    pub ended: bool,
    /// Virtual slots where this context is logged in as user.
    pub user: HashSet<u64>,
    /// Virtual slots where this context's SO login was forwarded to the backend.
    pub so: HashSet<u64>,
    pub sessions: HandleMap<VSession, Sess>,
    pub objects: HandleMap<VObject, Obj>,
    /// The operation each session has active, by kind.
    pub active: crate::core::active::Active,
    /// kmsd's device error for a session's last refused call, reported by
    /// `C_GetSessionInfo` (DESIGN.md decision 8).
    pub device_errors: std::collections::HashMap<u64, u64>,
    /// Session objects this context created that still exist.
    owned_objects: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Sess {
    pub backend: BSession,
    pub slot: u64,
    pub flags: u64,
}

impl Backed for Sess {
    type Backend = BSession;
    fn backend(&self) -> BSession {
        self.backend
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub backend: BObject,
    pub slot: u64,
    pub private: bool,
    /// The client session a session object belongs to.
    pub session: Option<VSession>,
}

impl Backed for Obj {
    type Backend = BObject;
    fn backend(&self) -> BObject {
        self.backend
    }
}

impl Context {
    pub(crate) fn new(id: u64, token: Vec<u8>, identity: Arc<Identity>, pid: u32) -> Context {
        // Handles start at a random base so that a handle from before a
        // daemon restart does not name something in the new context. Fuzzing
        // needs them predictable.
        let mut r = rand::thread_rng();
        let mut base = || {
            if cfg!(fuzzing) {
                0x10000
            } else {
                0x10000 + (r.next_u32() as u64 & 0x3fff_0000)
            }
        };
        let state = CtxState {
            ended: false,
            user: HashSet::new(),
            so: HashSet::new(),
            sessions: HandleMap::new(base()),
            objects: HandleMap::new(base()),
            active: Default::default(),
            device_errors: Default::default(),
            owned_objects: 0,
        };
        Context {
            id,
            pid,
            token,
            identity,
            state: Mutex::new(state),
            conns: Mutex::new((0, None)),
            replay: Mutex::new(Replay::default()),
            replay_done: Condvar::new(),
        }
    }

    pub fn attach(&self) {
        let mut c = self.conns.lock();
        c.0 += 1;
        c.1 = None;
    }

    pub fn detach(&self) {
        let mut c = self.conns.lock();
        c.0 = c.0.saturating_sub(1);
        if c.0 == 0 {
            c.1 = Some(Instant::now());
        }
    }

    pub fn ended(&self) -> bool {
        self.state.lock().ended
    }

    pub(crate) fn idle_for(&self) -> Option<Duration> {
        let c = self.conns.lock();
        if c.0 == 0 {
            c.1.map(|t| t.elapsed())
        } else {
            None
        }
    }

    /// Marks the context ended and takes its sessions and the slots where it
    /// was logged in; its handles and session objects are forgotten (the
    /// caller closes the backend sessions). `None` if it had ended already.
    pub(crate) fn end(&self) -> Option<(Vec<Sess>, Vec<u64>)> {
        let mut st = self.state.lock();
        if st.ended {
            return None;
        }
        st.ended = true;
        let sessions: Vec<Sess> = st
            .sessions
            .remove_where(|_| true)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        st.objects.remove_where(|_| true);
        give(&self.identity.usage.objects, st.owned_objects);
        st.owned_objects = 0;
        let mut slots: Vec<u64> = st.user.drain().collect();
        slots.extend(st.so.drain());
        Some((sessions, slots))
    }

    /// Records a new session; `None` if the context ended meanwhile (the
    /// caller closes the backend session).
    pub fn add_session(&self, s: Sess) -> Option<VSession> {
        let mut st = self.state.lock();
        if st.ended {
            return None;
        }
        Some(st.sessions.insert(s))
    }

    /// Gives a backend object a handle in this context (the same handle if it has one).
    pub fn add_object(&self, o: Obj) -> VObject {
        let mut st = self.state.lock();
        if let Some(v) = st.objects.handle_of(o.backend) {
            return v;
        }
        let v = st.objects.insert(o);
        if o.session.is_some() {
            st.owned_objects += 1;
            self.identity.usage.objects.fetch_add(1, Ordering::AcqRel);
        }
        v
    }

    pub fn remove_object(&self, v: VObject) {
        let mut st = self.state.lock();
        if let Some(o) = st.objects.remove(v) {
            if o.session.is_some() {
                st.owned_objects -= 1;
                give(&self.identity.usage.objects, 1);
            }
        }
    }

    /// This context's login on `slot` ended (PKCS#11 3.0 §5.6, C_Logout):
    /// its handles to private objects there become invalid, even after a
    /// later login, and its private session objects there are to be
    /// destroyed. Returns those objects' backend handles.
    pub fn logged_out(&self, slot: u64) -> Vec<BObject> {
        let mut st = self.state.lock();
        let gone = st.objects.remove_where(|o| o.slot == slot && o.private);
        let owned: Vec<BObject> = gone
            .iter()
            .filter(|(_, o)| o.session.is_some())
            .map(|(_, o)| o.backend)
            .collect();
        st.owned_objects -= owned.len();
        give(&self.identity.usage.objects, owned.len());
        owned
    }

    /// Removes closed sessions and their session objects; returns the
    /// backend handles of those objects and whether the token's last session
    /// of this context closed (its login ends).
    pub fn forget_sessions(&self, closed: &[VSession], slot: u64) -> (Vec<BObject>, bool) {
        let mut st = self.state.lock();
        let gone = st
            .objects
            .remove_where(|o| o.session.is_some_and(|s| closed.contains(&s)));
        st.owned_objects -= gone.len();
        st.active.forget(closed.iter().map(|v| v.0));
        for v in closed {
            st.device_errors.remove(&v.0);
        }
        give(&self.identity.usage.objects, gone.len());
        give(&self.identity.usage.sessions, closed.len());
        let last = !st.sessions.values().any(|s| s.slot == slot);
        let was_logged_in = last && (st.user.remove(&slot) | st.so.remove(&slot));
        (
            gone.into_iter().map(|(_, o)| o.backend).collect(),
            was_logged_in,
        )
    }
}

impl CtxState {
    pub fn logged_in(&self, slot: u64) -> bool {
        self.user.contains(&slot) || self.so.contains(&slot)
    }
}

/// The answers a context kept, by request id, so that a request the
/// library sent again after a lost connection is answered, not run twice.
#[derive(Default)]
struct Replay {
    entries: VecDeque<(u64, Kept)>,
    /// Bytes of the kept answers.
    bytes: usize,
    /// The highest id evicted: a resend at or below it has an unknown outcome.
    evicted: u64,
}

enum Kept {
    Running,
    /// `None`: done, but the answer was too large to keep.
    Done(Option<Box<Response>>),
}

/// Requests remembered per context.
const REPLAY_ENTRIES: usize = 256;
/// Bytes of answers kept per context, and the largest single answer kept.
const REPLAY_BYTES: usize = 1 << 20;
const REPLAY_ANSWER: usize = 64 << 10;

/// What to do with a request, given its id.
pub enum Admit {
    /// Run it (it was recorded as running).
    Run,
    /// It ran already: send this answer.
    Answer(Box<Response>),
}

impl Context {
    /// Looks a request up by id before it runs. A request whose id is
    /// already known is answered from what was kept (waiting, within
    /// `wait`, for a run still under way); a resend whose outcome is no
    /// longer known is refused with `CKR_DEVICE_ERROR` rather than run twice.
    pub fn admit(&self, id: u64, resend: bool, wait: Duration) -> Admit {
        let deadline = Instant::now() + wait;
        let mut r = self.replay.lock();
        loop {
            match r.entries.iter().find(|(i, _)| *i == id).map(|(_, k)| k) {
                Some(Kept::Done(Some(resp))) => return Admit::Answer(resp.clone()),
                Some(Kept::Done(None)) => return Admit::Answer(unknown_outcome()),
                Some(Kept::Running) => {
                    if self.replay_done.wait_until(&mut r, deadline).timed_out() {
                        return Admit::Answer(unknown_outcome());
                    }
                }
                None if resend && id <= r.evicted => return Admit::Answer(unknown_outcome()),
                None => break,
            }
        }
        if r.entries.len() >= REPLAY_ENTRIES {
            r.evict_one();
        }
        r.entries.push_back((id, Kept::Running));
        Admit::Run
    }

    /// Keeps the answer of a request that ran.
    pub fn kept(&self, id: u64, resp: &Response) {
        let mut r = self.replay.lock();
        let size = answer_size(resp);
        let keep = size <= REPLAY_ANSWER;
        if keep {
            while r.bytes + size > REPLAY_BYTES && r.entries.len() > 1 {
                r.evict_one();
            }
        }
        if let Some((_, k)) = r.entries.iter_mut().find(|(i, _)| *i == id) {
            *k = Kept::Done(keep.then(|| Box::new(resp.clone())));
            if keep {
                r.bytes += size;
            }
        }
        drop(r);
        self.replay_done.notify_all();
    }
}

/// The answer to a resend whose first run's outcome is not known any more.
fn unknown_outcome() -> Box<Response> {
    Box::new(Response::rv(CKR_DEVICE_ERROR))
}

impl Replay {
    /// Evicts the oldest finished entry.
    fn evict_one(&mut self) {
        let Some(pos) = self
            .entries
            .iter()
            .position(|(_, k)| matches!(k, Kept::Done(_)))
        else {
            return;
        };
        if let Some((id, k)) = self.entries.remove(pos) {
            self.evicted = self.evicted.max(id);
            if let Kept::Done(Some(resp)) = k {
                self.bytes -= answer_size(&resp);
            }
        }
    }
}

/// About how many bytes an answer holds (its byte payloads).
fn answer_size(r: &Response) -> usize {
    use kmsp11_proto::{AttrValue, Body};
    64 + match &r.body {
        Body::Output { data, .. } => data.as_ref().map_or(0, |d| d.len()),
        Body::Attributes(a) => a
            .iter()
            .map(|x| match &x.value {
                Some(AttrValue::Bytes(b)) => b.len(),
                Some(AttrValue::Ulongs(v)) => v.len() * 8,
                _ => 8,
            })
            .sum(),
        Body::Handles(h) | Body::Mechanisms(h) | Body::Slots(h) => h.len() * 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Identity;

    fn ctx() -> Context {
        Context::new(1, vec![0; 32], Arc::new(Identity::named("a")), 1)
    }

    #[test]
    fn a_resent_request_gets_the_kept_answer() {
        let c = ctx();
        assert!(matches!(c.admit(7, false, Duration::ZERO), Admit::Run));
        c.kept(7, &Response::ok(kmsp11_proto::Body::Handle(42)));
        match c.admit(7, true, Duration::ZERO) {
            Admit::Answer(r) => assert_eq!(r.body, kmsp11_proto::Body::Handle(42)),
            Admit::Run => panic!("ran twice"),
        }
    }

    #[test]
    fn a_resend_that_never_arrived_runs() {
        let c = ctx();
        assert!(matches!(c.admit(9, true, Duration::ZERO), Admit::Run));
    }

    #[test]
    fn a_resend_of_a_forgotten_request_is_refused() {
        let c = ctx();
        for id in 1..=(REPLAY_ENTRIES as u64 + 10) {
            assert!(matches!(c.admit(id, false, Duration::ZERO), Admit::Run));
            c.kept(id, &Response::rv(CKR_OK));
        }
        match c.admit(3, true, Duration::ZERO) {
            Admit::Answer(r) => assert_eq!(r.rv, CKR_DEVICE_ERROR),
            Admit::Run => panic!("an old resend ran"),
        }
    }

    #[test]
    fn kept_answers_are_bounded_in_bytes() {
        let c = ctx();
        let big = Response::ok(kmsp11_proto::Body::Output {
            len: 60_000,
            data: Some(vec![0; 60_000]),
        });
        for id in 1..=100 {
            c.admit(id, false, Duration::ZERO);
            c.kept(id, &big);
        }
        assert!(c.replay.lock().bytes <= REPLAY_BYTES);
    }
}
