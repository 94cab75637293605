//! `Pipeline::run` (DESIGN.md decision 7): resolve → decide → record →
//! act → record the outcome. Every request of every door passes here, and
//! nothing reaches the HSM any other way.
//!
//! - **decide**: the key's state (pending destroy and destroyed keys are
//!   invisible; disabled, revoked and expired keys refused), then Cedar
//!   policy (default deny), then the creation constraints;
//! - **record**: lifecycle calls (generate, create, copy, destroy, unwrap,
//!   derive, set-attribute) have their decision written durably before the
//!   HSM acts; every call has one record of its outcome (refusals too);
//! - **act**: the operation in `ops/`, except that `C_DestroyObject` on a
//!   token key puts it in pending-destroy instead of destroying it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsp11_proto::{Body, CallId, Request, Response, Template};
use pkcs11_sys::*;

use super::active::{self, Step};
use super::call::{Call, Target};
use super::inventory;
use super::refusal::Refusal;
use super::resolve::resolve;
use crate::audit::Record;
use crate::authz::approvals::{self, Binding, Gate, Guarded, OnPending};
use crate::authz::constraints::non_exportable;
use crate::authz::policy::{Decision, KeyView, Principal, Situation};
use crate::authz::quota::{self, Exceeded};
use crate::authz::Action;
use crate::context::Context;
use crate::daemon::Daemon;
use crate::handles::VObject;
use crate::store::{ApprovalState, KeyState};

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub request_id: u64,
    pub peer: SocketAddr,
    /// Whether the call is audited (every call but Hello and Goodbye).
    pub audited: bool,
}

/// What became of one call ([`Pipeline::run_traced`]).
#[derive(Debug)]
pub struct Outcome {
    pub response: Response,
    /// The record of its outcome, when one was written.
    pub entry: Option<crate::audit::log::Entry>,
    /// Why kmsd refused it, when it did.
    pub refusal: Option<Refusal>,
}

pub struct Pipeline<'a> {
    pub daemon: &'a Daemon,
    pub ctx: &'a Arc<Context>,
}

/// What the decision allowed, for the records.
struct Allowed {
    rule: String,
}

/// A call under dual control: an operation `[dual_control] guarded`
/// names, or a use a policy annotates with `@approvals`.
struct Guard {
    /// The key id, or for a key being created a description of it.
    key: String,
    label: String,
    action: Action,
    approvals: u32,
    on_pending: Option<OnPending>,
    role: Option<String>,
}

impl Guard {
    /// The guard for an allowed call, if the configuration or the
    /// permitting policies put it under dual control. `target` (key,
    /// label) is only built then: most calls are not guarded.
    fn of(
        cfg: &approvals::DualControlCfg,
        guarded: Option<Guarded>,
        dec: &Decision,
        action: Action,
        target: impl FnOnce() -> (String, String),
    ) -> Option<Guard> {
        let approvals = dec.approvals.max(guarded.and_then(|g| cfg.needs(g)))?;
        let (key, label) = target();
        Some(Guard {
            key,
            label,
            action,
            approvals,
            on_pending: dec.on_pending,
            role: dec.approver_role.clone(),
        })
    }
}

/// A use of a token key the call makes, with its policy's obligations.
struct Use {
    key: crate::store::KeyId,
    rate: Option<quota::Rate>,
    daily_limit: Option<u64>,
}

impl Pipeline<'_> {
    /// Runs one request to its answer; the calls of a batch in order,
    /// each as if it had come alone, up to the first that does not answer
    /// `CKR_OK`.
    pub fn run(&self, request: Request, origin: Origin) -> Response {
        let batch = match request {
            Request::Batch(b) => b,
            request => return self.run_one(request, origin),
        };
        if let Some(why) = batch.refusal() {
            tracing::warn!(context = self.ctx.id, "batch refused: {why}");
            return Response::rv(CKR_ARGUMENTS_BAD);
        }
        let mut answers = Vec::with_capacity(batch.calls.len());
        for call in batch.calls {
            let r = self.run_one(call, origin);
            let stop = r.rv != CKR_OK;
            answers.push(r);
            if stop {
                break;
            }
        }
        Response::ok(Body::Batch(answers))
    }

    fn run_one(&self, request: Request, origin: Origin) -> Response {
        self.run_traced(request, origin).response
    }

    /// Runs one call (not a batch) and tells what became of it: the
    /// answer, the audit record of its outcome, and why it was refused.
    pub fn run_traced(&self, request: Request, origin: Origin) -> Outcome {
        let op = request.call().c_name();
        let started = Instant::now();
        let mut out = Outcome {
            response: Response::rv(CKR_GENERAL_ERROR),
            entry: None,
            refusal: None,
        };
        out.response = self.run_inner(request, origin, started, &mut out);
        let resp = &out.response;
        let m = &self.daemon.metrics;
        m.calls
            .with_label_values(&[op, &crate::error::rv_name(resp.rv)])
            .inc();
        m.latency
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// A door that authenticated its caller by client certificate alone
    /// (the REST API) logs the context in as user on the token of
    /// `session`: judged as `C_Login` is (policy `login` on the token, the
    /// identity's rate) and recorded, on a token whose PIN kmsd holds only
    /// (elsewhere only the HSM can check a user, with its PIN).
    pub fn certificate_login(&self, session: u64, origin: Origin) -> Outcome {
        let (d, ctx) = (self.daemon, self.ctx);
        let started = Instant::now();
        let mut out = Outcome {
            response: Response::rv(CKR_DEVICE_ERROR),
            entry: None,
            refusal: None,
        };
        let mut request = Request::Login(kmsp11_proto::Login {
            session,
            user_type: CKU_USER,
            pin: None,
        });
        if d.audit.ready().is_err() {
            return out;
        }
        let call = match resolve(d, ctx, &request, None, origin.request_id) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(context = ctx.id, "store: {e}; refusing");
                return out;
            }
        };
        let (Some(sess), Some(token)) = (call.sess, call.token.as_ref()) else {
            out.response = Response::rv(CKR_SESSION_HANDLE_INVALID);
            return out;
        };
        if !token.anchored() {
            out.response = Response::rv(CKR_USER_TYPE_INVALID);
            return out;
        }
        let allowed = match self.decide(&call, &mut request) {
            Ok(a) => a,
            Err(refusal) => {
                out.response = self.refuse(&call, refusal, origin, started, &mut out);
                return out;
            }
        };
        let mut r = self.record(&call, origin, "allow", &allowed.rule, None);
        r.detail = Some("client certificate".into());
        r.rv = Some("CKR_OK".into());
        match d.audit.record(r) {
            Ok(e) => {
                ctx.state.lock().user.insert(sess.slot);
                out.entry = Some(e);
                out.response = Response::rv(CKR_OK);
            }
            Err(_) => out.response = Response::rv(CKR_DEVICE_ERROR),
        }
        out
    }

    fn run_inner(
        &self,
        mut request: Request,
        origin: Origin,
        started: Instant,
        out: &mut Outcome,
    ) -> Response {
        let (d, ctx) = (self.daemon, self.ctx);
        if origin.audited && d.audit.ready().is_err() {
            return Response::rv(CKR_DEVICE_ERROR);
        }
        let step = active::step(&request);
        let call = match resolve(d, ctx, &request, step.as_ref(), origin.request_id) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(context = ctx.id, "store: {e}; refusing");
                return Response::rv(CKR_DEVICE_ERROR);
            }
        };
        let decided = self.decide(&call, &mut request);
        let allowed = match decided {
            Ok(a) => a,
            Err(refusal) => return self.refuse(&call, refusal, origin, started, out),
        };
        // A judged call allowed: the session's last refusal is history.
        if let (Some(s), Some(_)) = (call.session, call.action) {
            ctx.state.lock().device_errors.remove(&s);
        }
        if origin.audited && call.lifecycle() {
            let mut r = self.record(&call, origin, "allow", &allowed.rule, None);
            r.rv = Some("pending".into());
            if d.audit.record(r).is_err() {
                return Response::rv(CKR_DEVICE_ERROR);
            }
        }
        let mut resp = self.act(&call, request, step.as_ref());
        self.after(&call, &mut resp, step.as_ref());
        if origin.audited {
            let mut r = self.record(&call, origin, "allow", &allowed.rule, None);
            r.rv = Some(crate::error::rv_name(resp.rv).into_owned());
            r.duration_us = Some(started.elapsed().as_micros() as u64);
            if let Some(created) = self.created_key(&resp) {
                r.key = Some(created);
            }
            // An answer whose record cannot be written is not given.
            let written = if call.outcome_waits(&resp) {
                d.audit.record(r)
            } else {
                d.audit.record_lazily(r)
            };
            match written {
                Ok(e) => out.entry = Some(e),
                Err(_) => resp = Response::rv(CKR_DEVICE_ERROR),
            }
        }
        resp
    }

    fn refuse(
        &self,
        call: &Call,
        refusal: Refusal,
        origin: Origin,
        started: Instant,
        out: &mut Outcome,
    ) -> Response {
        let rv = refusal.rv();
        self.daemon
            .metrics
            .refusals
            .with_label_values(&[refusal.reason()])
            .inc();
        tracing::info!(
            identity = %call.principal.name,
            op = call.op.c_name(),
            key = call.key.as_ref().map(|k| k.key_id()).unwrap_or_default(),
            reason = refusal.reason(),
            rule = %refusal.rule(),
            "refused"
        );
        if let Some(s) = call.session {
            self.ctx
                .state
                .lock()
                .device_errors
                .insert(s, refusal.device_error());
        }
        if origin.audited {
            let mut r = self.record(
                call,
                origin,
                "deny",
                &refusal.rule(),
                Some(refusal.reason()),
            );
            r.rv = Some(crate::error::rv_name(rv).into_owned());
            r.duration_us = Some(started.elapsed().as_micros() as u64);
            match self.daemon.audit.record(r) {
                Ok(e) => out.entry = Some(e),
                Err(_) => return Response::rv(CKR_DEVICE_ERROR),
            }
        }
        out.refusal = Some(refusal);
        Response::rv(rv)
    }

    fn record(
        &self,
        call: &Call,
        origin: Origin,
        decision: &str,
        rule: &str,
        reason: Option<&str>,
    ) -> Record {
        let key = call.key.as_ref();
        Record {
            request: Some(origin.request_id),
            identity: Some(call.principal.name.clone()),
            peer: Some(origin.peer.to_string()),
            pid: Some(self.ctx.pid),
            token: call.token.as_ref().map(|t| t.name.clone()),
            op: Some(call.op.c_name().to_string()),
            key: key.map(|k| k.key_id()).filter(|k| !k.is_empty()),
            handle: key.map(|k| k.handle),
            label: key
                .map(|k| k.known.facts.label.clone())
                .or_else(|| call.creates.as_ref().map(|v| v.label.clone()))
                .filter(|l| !l.is_empty()),
            mechanism: call.mechanism.map(super::mechanism_name),
            decision: Some(decision.into()),
            policy: (!rule.is_empty()).then(|| rule.to_string()),
            reason: reason.map(str::to_string),
            ..Default::default()
        }
    }

    /// The key id of a key the call just created, for its record.
    fn created_key(&self, resp: &Response) -> Option<String> {
        let handles: Vec<u64> = match &resp.body {
            Body::Handle(h) if resp.rv == CKR_OK => vec![*h],
            Body::KeyPair { public, private } if resp.rv == CKR_OK => vec![*private, *public],
            _ => return None,
        };
        let ids: Vec<String> = handles
            .into_iter()
            .filter_map(|h| {
                let o = self.ctx.state.lock().objects.get(VObject(h)).copied()?;
                let t = self.daemon.token(self.ctx, o.slot)?;
                let k = self.daemon.inventory.cached(t.backend_slot, o.backend)?;
                k.key.as_ref().map(|k| k.0.clone())
            })
            .collect();
        (!ids.is_empty()).then(|| ids.join(","))
    }

    // ---- decide ----

    fn decide(&self, call: &Call, request: &mut Request) -> Result<Allowed, Refusal> {
        let d = self.daemon;
        let policy = d.policy();
        let who = call.principal();
        let situation = Situation {
            mechanism: call.mechanism,
            wrapping_key: None,
            time: inventory::now() as i64,
        };
        if let (CallId::GetMechanismInfo, Some(m)) = (call.op, call.mechanism) {
            if !policy.mechanism_possible(&who, m) {
                return Err(Refusal::Mechanism {
                    rule: "default-deny".into(),
                });
            }
        }
        let Some(action) = call.action else {
            return Ok(Allowed {
                rule: String::new(),
            });
        };
        let mut rules = Vec::new();
        if action == Action::Login {
            let dec = policy.decide_token(&who, action, call.token_name(), &situation);
            let allowed = verdict(dec, |rule| Refusal::Policy { rule })?;
            self.quotas(call, &[])?;
            return Ok(allowed);
        }
        let mut uses = Vec::new();
        let mut guards = Vec::new();
        if let Some(k) = &call.key {
            rules.push(self.judge(call, k, action, &situation, &mut uses, &mut guards)?);
        }
        // Keys a mechanism parameter names take part as the key does (a
        // salt key, the second key of a concatenation, MQV's private data).
        for k in &call.params {
            rules.push(self.judge(call, k, action, &situation, &mut uses, &mut guards)?);
        }
        if let Some(w) = &call.wrapped {
            // A key leaves the HSM under a key the client chose.
            let s = Situation {
                wrapping_key: call.key.as_ref().map(|k| k.key_id()),
                ..situation.clone()
            };
            rules.push(self.judge(call, w, Action::Export, &s, &mut uses, &mut guards)?);
        }
        if let Some(view) = &call.creates {
            rules.push(self.judge_creation(
                call,
                view,
                action,
                request,
                &situation,
                &mut guards,
            )?);
        }
        self.quotas(call, &uses)?;
        for g in &guards {
            rules.push(self.dual_control(call, g)?);
        }
        Ok(Allowed {
            rule: rules.join(","),
        })
    }

    /// Dual control for a use a policy annotated with `@approvals`: a
    /// grant for this exact call is used, or the call waits for approvals.
    fn dual_control(&self, call: &Call, g: &Guard) -> Result<String, Refusal> {
        let d = self.daemon;
        let b = Binding {
            requester: call.principal.name.clone(),
            token: call.token_name().to_string(),
            action: g.action.name().to_string(),
            key: g.key.clone(),
            label: g.label.clone(),
            mechanism: call.mechanism,
        };
        let role = g.role.as_deref().unwrap_or(&d.dual_control.approver_role);
        let gate = approvals::gate(
            d.inventory.store.as_ref(),
            &d.dual_control,
            &b,
            g.approvals,
            role,
            inventory::now(),
        )
        .map_err(|e| Refusal::Store(e.to_string()))?;
        let (id, have, need) = match gate {
            Gate::Granted(id) => return Ok(format!("approval {id} used")),
            Gate::Pending { id, have, need } => (id, have, need),
        };
        if g.on_pending.unwrap_or(d.dual_control.on_pending) == OnPending::Refuse {
            return Err(Refusal::Pending { id, have, need });
        }
        // Wait mode: hold the call (its execution slot too) until the
        // request is decided or `wait_secs` pass.
        tracing::info!(approval = %id, identity = %call.principal.name, "call held for approval");
        let deadline = Instant::now() + Duration::from_secs(d.dual_control.wait_secs);
        let store = d.inventory.store.as_ref();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let Some(a) = store
                .approval(&id)
                .map_err(|e| Refusal::Store(e.to_string()))?
            else {
                break;
            };
            let now = inventory::now();
            match a.state {
                ApprovalState::Pending if a.expires > now => continue,
                ApprovalState::Approved if a.expires > now => {
                    let again = approvals::gate(store, &d.dual_control, &b, g.approvals, role, now)
                        .map_err(|e| Refusal::Store(e.to_string()))?;
                    if let Gate::Granted(id) = again {
                        return Ok(format!("approval {id} used"));
                    }
                    break;
                }
                _ => {
                    return Err(Refusal::Denied {
                        id,
                        state: approvals::state_name(&a, now),
                    })
                }
            }
        }
        Err(Refusal::Pending { id, have, need })
    }

    /// Quotas, once policy allowed everything: the identity's rate, each
    /// key's rate for this identity, then each key's daily count (durable,
    /// so taken last).
    fn quotas(&self, call: &Call, uses: &[Use]) -> Result<(), Refusal> {
        let q = &self.daemon.quotas;
        let who = &call.principal.name;
        q.take_identity(who).map_err(Refusal::Quota)?;
        for u in uses {
            q.take_key(who, &u.key.0, u.rate).map_err(Refusal::Quota)?;
        }
        for u in uses {
            let Some(limit) = q.daily_limit(u.daily_limit) else {
                continue;
            };
            let taken = self
                .daemon
                .inventory
                .store
                .take_daily(&u.key, quota::today(), limit)
                .map_err(|e| Refusal::Store(e.to_string()))?;
            if taken.is_none() {
                return Err(Refusal::Quota(Exceeded::DailyLimit(limit)));
            }
        }
        Ok(())
    }

    /// An existing key: its state, then policy. A use of a token key is
    /// added to `uses`, with the obligations of the policies that allowed it.
    fn judge(
        &self,
        call: &Call,
        k: &Target,
        action: Action,
        s: &Situation,
        uses: &mut Vec<Use>,
        guards: &mut Vec<Guard>,
    ) -> Result<String, Refusal> {
        if let Some(st) = &k.status {
            match st.record.state {
                KeyState::PendingDestroy | KeyState::Destroyed => {
                    return Err(Refusal::Hidden {
                        rule: st.record.state.as_str().into(),
                    })
                }
                KeyState::Disabled
                    if !matches!(
                        action,
                        Action::Find | Action::ReadAttribute | Action::Destroy
                    ) =>
                {
                    return Err(Refusal::KeyDisabled)
                }
                _ => {}
            }
            if let Some(r) = &st.revoked {
                if !matches!(
                    action,
                    Action::Find | Action::ReadAttribute | Action::Destroy
                ) {
                    return Err(Refusal::KeyRevoked {
                        reason: r.reason.clone(),
                    });
                }
            }
            if st.record.expires.is_some_and(|t| t <= inventory::now())
                && !action.allowed_after_expiry()
            {
                return Err(Refusal::KeyExpired);
            }
        }
        let policy = self.daemon.policy();
        let who = call.principal();
        let view = k.view(call.token_name());
        let dec = policy.decide_key(&who, action, &view, s);
        if dec.allowed {
            if let (Some(key), Some(_)) = (&k.known.key, &k.status) {
                let guarded = match action {
                    Action::Destroy => Some(Guarded::Destroy),
                    Action::Export => Some(Guarded::Export),
                    _ => None,
                };
                let cfg = &self.daemon.dual_control;
                guards.extend(Guard::of(cfg, guarded, &dec, action, || {
                    (key.0.clone(), k.known.facts.label.clone())
                }));
            }
            if let (true, Some(key)) = (action.is_use(), &k.known.key) {
                uses.push(Use {
                    key: key.clone(),
                    rate: dec.rate,
                    daily_limit: dec.daily_limit,
                });
            }
            return Ok(dec.rule());
        }
        // Not even visible: as if the handle did not exist.
        // (`find` is judged as find calls are: without a mechanism.)
        let seeing = Situation {
            mechanism: None,
            wrapping_key: None,
            time: s.time,
        };
        if action != Action::Find
            && !policy
                .decide_key(&who, Action::Find, &view, &seeing)
                .allowed
        {
            return Err(Refusal::Hidden { rule: dec.rule() });
        }
        if let Some(m) = s.mechanism {
            if !policy.mechanism_possible(&who, m) {
                return Err(Refusal::Mechanism { rule: dec.rule() });
            }
        }
        Err(Refusal::Policy { rule: dec.rule() })
    }

    /// A key the call creates: policy on the key its template describes,
    /// the minimum sizes, and sensitive / non-extractable unless policy
    /// permits `export` of it (missing attributes added to the template).
    fn judge_creation(
        &self,
        call: &Call,
        view: &KeyView,
        action: Action,
        request: &mut Request,
        s: &Situation,
        guards: &mut Vec<Guard>,
    ) -> Result<String, Refusal> {
        let policy = self.daemon.policy();
        let who = call.principal();
        // Unwrap and derive are judged on the unwrapping / base key; what
        // they make is an import / a generation.
        let made = match action {
            Action::Unwrap => Action::Import,
            Action::Derive => Action::Generate,
            a => a,
        };
        let dec = policy.decide_key(&who, made, view, s);
        if !dec.allowed {
            if let Some(m) = s.mechanism {
                if !policy.mechanism_possible(&who, m) {
                    return Err(Refusal::Mechanism { rule: dec.rule() });
                }
            }
            return Err(Refusal::Policy { rule: dec.rule() });
        }
        let key_type = key_type_of(view);
        if let Some(kt) = key_type {
            let size = (view.size > 0).then_some(view.size as u64);
            self.daemon
                .min_sizes
                .check(kt, size)
                .map_err(Refusal::Constraint)?;
        }
        let is_key = matches!(view.class.as_str(), "private-key" | "secret-key");
        if is_key && !view.session_object {
            let guarded = match made {
                Action::Generate => Some(Guarded::Generate),
                Action::Import | Action::Copy => Some(Guarded::Import),
                _ => None,
            };
            let cfg = &self.daemon.dual_control;
            guards.extend(Guard::of(cfg, guarded, &dec, made, || {
                // The key does not exist yet: the grant is for one like it.
                let like = format!(
                    "new {} {} {} on {}",
                    view.key_type, view.class, view.size, view.token
                );
                (like, view.label.clone())
            }));
        }
        if is_key {
            let exportable = policy.decide_key(&who, Action::Export, view, s).allowed;
            if let Some(t) = creation_template(request) {
                let mut v = t.take().unwrap_or_default();
                let r = non_exportable(&mut v, exportable);
                *t = Some(v);
                r.map_err(Refusal::Constraint)?;
            }
        }
        Ok(dec.rule())
    }

    // ---- act ----

    fn act(&self, call: &Call, request: Request, step: Option<&Step>) -> Response {
        let (d, ctx) = (self.daemon, self.ctx);
        if let (Request::DestroyObject(q), Some(k)) = (&request, &call.key) {
            if let (Some(id), Some(_)) = (&k.known.key, &k.status) {
                if k.known.facts.is_key() {
                    return match d.inventory.schedule_destroy(id) {
                        Ok(true) => {
                            ctx.remove_object(VObject(q.object));
                            tracing::info!(key = %id, identity = %call.principal.name, "key pending destroy");
                            Response::rv(CKR_OK)
                        }
                        Ok(false) => Response::rv(CKR_OBJECT_HANDLE_INVALID),
                        Err(e) => {
                            tracing::error!("store: {e}");
                            Response::rv(CKR_DEVICE_ERROR)
                        }
                    };
                }
            }
        }
        let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::ops::dispatch(d, ctx, call, request)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(context = ctx.id, "request handler panicked");
            Response::rv(CKR_GENERAL_ERROR)
        });
        if let Some(s) = step {
            ctx.state.lock().active.follow(s, resp.rv);
            if resp.rv == CKR_OK && s.completes() {
                if let Some(id) = call.key.as_ref().and_then(|k| k.known.key.as_ref()) {
                    d.inventory.count(id, s.kinds()[0].action().name());
                }
            }
        }
        resp
    }

    /// What follows an answer: the mechanism list without what policy
    /// never permits; a changed object read again.
    fn after(&self, call: &Call, resp: &mut Response, _step: Option<&Step>) {
        let d = self.daemon;
        if call.op == CallId::GetMechanismList {
            if let Body::Mechanisms(list) = &mut resp.body {
                let policy = d.policy();
                let who: Principal = call.principal();
                list.retain(|m| policy.mechanism_possible(&who, *m));
            }
        }
        if call.op == CallId::SetAttributeValue && resp.rv == CKR_OK {
            if let (Some(k), Some(t), Some(sess)) = (&call.key, &call.token, call.sess) {
                if let Err(e) =
                    d.inventory
                        .changed(&d.backend, sess.backend, t.backend_slot, k.backend)
                {
                    tracing::warn!("store: {e}");
                }
            }
        }
    }
}

fn verdict(dec: Decision, refuse: impl FnOnce(String) -> Refusal) -> Result<Allowed, Refusal> {
    if dec.allowed {
        Ok(Allowed { rule: dec.rule() })
    } else {
        Err(refuse(dec.rule()))
    }
}

/// The key type a creation view names.
fn key_type_of(v: &KeyView) -> Option<u64> {
    Some(match v.key_type.as_str() {
        "RSA" => CKK_RSA,
        "EC" => CKK_EC,
        "EC_EDWARDS" => CKK_EC_EDWARDS,
        "EC_MONTGOMERY" => CKK_EC_MONTGOMERY,
        "AES" => CKK_AES,
        _ => return None,
    })
}

/// The template of the private or secret key a creating request makes.
fn creation_template(r: &mut Request) -> Option<&mut Template> {
    Some(match r {
        Request::GenerateKey(q) => &mut q.template,
        Request::GenerateKeyPair(q) => &mut q.private,
        Request::UnwrapKey(q) => &mut q.template,
        Request::DeriveKey(q) => &mut q.template,
        Request::CreateObject(q) => &mut q.template,
        _ => return None,
    })
}

/// Whether a context may see an object found on a token: not pending
/// destroy, and policy permits `find` of it.
pub fn visible(d: &Daemon, ctx: &Context, token: &str, t: &Target) -> Result<bool, Refusal> {
    if let Some(st) = &t.status {
        if matches!(
            st.record.state,
            KeyState::PendingDestroy | KeyState::Destroyed
        ) {
            return Ok(false);
        }
    }
    let who = Principal {
        name: &ctx.identity.name,
        roles: &ctx.identity.roles,
    };
    let s = Situation {
        time: inventory::now() as i64,
        ..Default::default()
    };
    Ok(d.policy()
        .decide_key(&who, Action::Find, &t.view(token), &s)
        .allowed)
}
