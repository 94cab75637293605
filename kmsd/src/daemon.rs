//! The daemon's state: the backend, the virtual tokens, the identities and
//! the client contexts (DESIGN.md decisions 2 and 6), with the per-identity
//! usage that the limits in `[limits]` bound.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kmsp11_proto::pad;
use parking_lot::{Mutex, RwLock};
use pkcs11_sys::*;
use rand::RngCore;
use zeroize::Zeroizing;

pub use crate::context::{Admit, Context, CtxState, Obj, Sess};

use crate::authz::policy::Policy;
use crate::config::{Config, Limits, Mode, TokenCfg};
use crate::error::Error;
use crate::handles::{BObject, BSession};
use crate::hsm::Backend;
use crate::pin::PinChecker;

/// A token as clients see it.
#[derive(Debug)]
pub struct VToken {
    /// Slot id shown to clients.
    pub slot: u64,
    pub backend_slot: CK_SLOT_ID,
    /// Label shown to clients (32 bytes, blank padded).
    pub label: [u8; 32],
    /// Serial shown to clients (16 bytes, blank padded); `None` keeps the backend's.
    pub serial: Option<[u8; 16]>,
    /// The label identities name in their `tokens` list.
    pub name: String,
    /// kmsd holds the backend user PIN and keeps the backend logged in;
    /// clients log in with their identity's PIN.
    pub backend_pin: Option<Zeroizing<Vec<u8>>>,
    pub so_functions: bool,
    /// The backend's mechanism list for this token.
    pub mechanisms: Vec<CK_MECHANISM_TYPE>,
}

impl VToken {
    pub fn anchored(&self) -> bool {
        self.backend_pin.is_some()
    }
}

/// A configured identity and what it currently uses.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    /// The certificate name (DNS or URI SAN, else CN) it matches; its name
    /// for configured identities.
    pub subject: String,
    pub roles: Vec<String>,
    pub tokens: Vec<String>,
    pub pin_hash: Option<String>,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (hex), when the
    /// identity is pinned to one key: then only that key is this identity,
    /// whatever names its certificate carries.
    pub spki_sha256: Option<String>,
    pub usage: Usage,
    /// Execution slots for this identity's requests.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// MiB its large requests may hold at once.
    pub large_mib: Arc<tokio::sync::Semaphore>,
}

/// Counts of what an identity holds, bounded by `[limits]`.
#[derive(Debug, Default)]
pub struct Usage {
    pub connections: AtomicUsize,
    pub contexts: AtomicUsize,
    pub sessions: AtomicUsize,
    pub objects: AtomicUsize,
}

/// Takes one unit of `counter` if it is below `max`.
pub fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

pub fn give(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
        Some(c.saturating_sub(n))
    });
}

impl Identity {
    pub fn new(
        name: &str,
        roles: Vec<String>,
        tokens: Vec<String>,
        pin_hash: Option<String>,
        limits: &Limits,
    ) -> Self {
        Identity {
            name: name.to_string(),
            subject: name.to_string(),
            roles,
            tokens,
            pin_hash,
            spki_sha256: None,
            usage: Usage::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                limits.max_in_flight_per_identity,
            )),
            large_mib: Arc::new(tokio::sync::Semaphore::new(
                limits.max_large_request_mib_per_identity,
            )),
        }
    }

    /// An identity with default limits and no tokens (tests).
    pub fn named(name: &str) -> Self {
        Identity::new(name, vec![], vec![], None, &Limits::default())
    }

    pub fn sees(&self, token: &VToken) -> bool {
        self.tokens.iter().any(|t| t == "*" || *t == token.name)
    }
}

/// The backend's login on one slot in transparent mode, shared by the
/// contexts that logged in: the backend knows one application (kmsd), its
/// clients each keep their own login state over it.
struct BackendLogin {
    user_type: CK_USER_TYPE,
    holders: HashSet<u64>,
    /// Keyed hash of the PIN that logged the backend in: a later client's
    /// PIN is compared with it without disturbing the backend.
    pin_mac: [u8; 32],
}

pub struct Daemon {
    pub backend: Backend,
    pub mode: Mode,
    tokens: RwLock<Vec<Arc<VToken>>>,
    /// The identities in force: the configured ones not disabled in the
    /// store, and those added at run time (see [`Daemon::refresh_identities`]).
    identities: RwLock<Vec<Arc<Identity>>>,
    configured: Vec<Arc<Identity>>,
    contexts: Mutex<HashMap<Vec<u8>, Arc<Context>>>,
    /// Backend session objects and the context that owns them: other
    /// contexts never see them.
    session_objects: Mutex<HashMap<BObject, u64>>,
    next_context: AtomicU64,
    pub grace: Duration,
    pub limits: Limits,
    pub pins: PinChecker,
    /// Vendor mechanisms whose parameter is forwarded as raw bytes.
    pub raw_vendor: Vec<u64>,
    backend_logins: Mutex<HashMap<CK_SLOT_ID, BackendLogin>>,
    /// Transparent mode: the `[[token]]` entries by backend label, for
    /// tokens that appear after start.
    token_cfgs: HashMap<String, TokenCfg>,
    so_functions: bool,
    /// Anchor sessions that keep each anchored backend token logged in.
    anchors: Mutex<Vec<BSession>>,
    /// Every call's record, written before its answer leaves.
    pub audit: crate::audit::log::Log,
    pub inventory: crate::core::inventory::Inventory,
    policy: RwLock<Arc<Policy>>,
    pub min_sizes: crate::authz::constraints::MinSizes,
    pub quotas: crate::authz::quota::Quotas,
    pub metrics: crate::metrics::Metrics,
    pub dual_control: crate::authz::approvals::DualControlCfg,
    /// The backend PKCS#11 module's path, for status.
    backend_module: std::path::PathBuf,
    /// `[tls] issuing_ca_cert` and `issuing_ca_key`, when kmsd issues
    /// client certificates.
    pub issuing_ca: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    #[error("backend token {0:?} not found (is it initialised? is SOFTHSM2_CONF right?)")]
    TokenNotFound(String),
    #[error("backend PIN for token {label:?}: {message}")]
    Pin { label: String, message: String },
    #[error("backend token {label:?}: {source} (wrong PIN?)")]
    Login { label: String, source: Error },
    #[error("backend: {0}")]
    Backend(#[from] Error),
    #[error("{0}")]
    Audit(String),
    #[error("policy: {0}")]
    Policy(#[from] crate::authz::policy::PolicyError),
    #[error("store {path}: {message}")]
    Store { path: String, message: String },
}

impl Daemon {
    pub fn start(cfg: &Config) -> Result<Daemon, StartError> {
        for (k, v) in &cfg.backend.env {
            std::env::set_var(k, v);
        }
        let instance = hex::encode(rand::random::<[u8; 8]>());
        let audit = crate::audit::log::LogCfg::from_config(&cfg.audit, instance)
            .map_err(StartError::Audit)?;
        let audit =
            crate::audit::log::Log::open(audit).map_err(|e| StartError::Audit(e.to_string()))?;
        let policy = Policy::load(&cfg.policy.path)?;
        let store =
            crate::store::sqlite::Sqlite::open(&cfg.store.path).map_err(|e| StartError::Store {
                path: cfg.store.path.display().to_string(),
                message: e.to_string(),
            })?;
        let mut inventory = crate::core::inventory::Inventory::new(
            Arc::new(store),
            Duration::from_secs(cfg.keys.destroy_window_secs),
        );
        inventory.rotation = crate::core::rotate::Schedule::from(&cfg.keys);
        let backend = Backend::load(&cfg.backend.module)?;
        let configured: Vec<Arc<Identity>> = cfg
            .identities
            .iter()
            .map(|i| {
                let mut id = Identity::new(
                    &i.name,
                    i.roles.clone(),
                    i.tokens.clone(),
                    i.pin_hash.clone(),
                    &cfg.limits,
                );
                id.spki_sha256 = i.spki_sha256.as_deref().map(str::to_ascii_lowercase);
                Arc::new(id)
            })
            .collect();
        let d = Daemon {
            backend,
            mode: cfg.backend.mode,
            tokens: RwLock::new(Vec::new()),
            identities: RwLock::new(configured.clone()),
            configured,
            contexts: Mutex::new(HashMap::new()),
            session_objects: Mutex::new(HashMap::new()),
            next_context: AtomicU64::new(1),
            grace: Duration::from_secs(cfg.listen.context_grace_secs),
            limits: cfg.limits.clone(),
            pins: PinChecker::new(&cfg.login),
            raw_vendor: cfg.backend.raw_vendor_mechanisms.clone(),
            backend_logins: Mutex::new(HashMap::new()),
            token_cfgs: cfg
                .tokens
                .iter()
                .map(|t| (t.backend_label.clone(), t.clone()))
                .collect(),
            so_functions: cfg.backend.allow_so_functions,
            anchors: Mutex::new(Vec::new()),
            audit,
            inventory,
            policy: RwLock::new(Arc::new(policy)),
            min_sizes: cfg.policy.min,
            quotas: crate::authz::quota::Quotas::new(&cfg.quotas),
            metrics: crate::metrics::Metrics::new(),
            dual_control: cfg.dual_control.clone(),
            backend_module: cfg.backend.module.clone(),
            issuing_ca: cfg
                .tls
                .issuing_ca_cert
                .clone()
                .zip(cfg.tls.issuing_ca_key.clone()),
        };
        match cfg.backend.mode {
            Mode::Virtual => {
                let by_label: HashMap<String, CK_SLOT_ID> = d
                    .backend_tokens()?
                    .into_iter()
                    .filter_map(|(s, l)| l.map(|l| (l, s)))
                    .collect();
                let mut tokens = Vec::new();
                for (i, t) in cfg.tokens.iter().enumerate() {
                    let backend_slot = *by_label
                        .get(&t.backend_label)
                        .ok_or_else(|| StartError::TokenNotFound(t.backend_label.clone()))?;
                    let pin = d.anchor(backend_slot, t)?;
                    let name = t.label.clone().unwrap_or_default();
                    let ti = d.backend.token_info(backend_slot)?;
                    tokens.push(Arc::new(VToken {
                        slot: i as u64,
                        backend_slot,
                        label: pad::<32>(name.as_bytes()),
                        serial: Some(serial_for(&name, &ti.serialNumber)),
                        name,
                        backend_pin: Some(pin),
                        so_functions: false,
                        mechanisms: d.backend.mechanism_list(backend_slot)?,
                    }));
                }
                *d.tokens.write() = tokens;
            }
            Mode::Transparent => d.refresh_slots()?,
        }
        d.refresh_identities();
        Ok(d)
    }

    /// The identities in force.
    pub fn identities(&self) -> Vec<Arc<Identity>> {
        self.identities.read().clone()
    }

    /// Reads the identities added, changed or disabled at run time from the
    /// store (at start and every few seconds). A configured identity
    /// disabled in the store is out; a run-time identity is in while not
    /// disabled. The contexts of an identity that is out (or changed) are
    /// closed at once, not only refused at its next connect.
    pub fn refresh_identities(&self) {
        let records = match self.inventory.store.identities() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("store: {e}; identities not refreshed");
                return;
            }
        };
        let disabled: HashSet<&str> = records
            .iter()
            .filter(|r| r.disabled)
            .map(|r| r.name.as_str())
            .collect();
        let current = self.identities();
        let mut next: Vec<Arc<Identity>> = self
            .configured
            .iter()
            .filter(|i| !disabled.contains(i.name.as_str()))
            .cloned()
            .collect();
        for r in records.iter().filter(|r| !r.disabled) {
            if self.configured.iter().any(|c| c.name == r.name) {
                continue;
            }
            let same = current.iter().find(|i| {
                i.name == r.name
                    && i.subject == r.subject
                    && i.roles == r.roles
                    && i.tokens == r.tokens
                    && i.pin_hash == r.pin_hash
                    && i.spki_sha256 == r.spki_sha256
            });
            next.push(same.cloned().unwrap_or_else(|| {
                let mut i = Identity::new(
                    &r.name,
                    r.roles.clone(),
                    r.tokens.clone(),
                    r.pin_hash.clone(),
                    &self.limits,
                );
                i.subject = r.subject.clone();
                i.spki_sha256 = r.spki_sha256.clone();
                tracing::info!(identity = %r.name, subject = %r.subject, roles = ?r.roles, "run-time identity in force");
                Arc::new(i)
            }));
        }
        *self.identities.write() = next.clone();
        let gone: Vec<Arc<Context>> = self
            .contexts
            .lock()
            .values()
            .filter(|c| !next.iter().any(|i| Arc::ptr_eq(i, &c.identity)))
            .cloned()
            .collect();
        for c in gone {
            let sessions = self.end_context(&c);
            tracing::warn!(identity = %c.identity.name, context = c.id, sessions, "identity disabled or changed: its context is closed");
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    /// Loads the policy file again; a bad file is refused and the policy
    /// in force stays.
    pub fn reload_policy(&self) -> Result<usize, crate::authz::policy::PolicyError> {
        let path = self.policy().path.clone();
        let p = Policy::load(&path)?;
        let n = p.len();
        *self.policy.write() = Arc::new(p);
        Ok(n)
    }

    /// The backend PKCS#11 module's path.
    pub fn backend_module(&self) -> String {
        self.backend_module.display().to_string()
    }

    /// Loads `text` (read from the policy file) as the policy: the text
    /// an approval was given for, not whatever the file holds a moment later.
    pub fn load_policy_text(&self, text: &str) -> Result<usize, crate::authz::policy::PolicyError> {
        let path = self.policy().path.clone();
        let p = Policy::parse(&path, text)?;
        let n = p.len();
        *self.policy.write() = Arc::new(p);
        Ok(n)
    }

    /// The backend's slots with the labels of their initialised tokens.
    fn backend_tokens(&self) -> Result<Vec<(CK_SLOT_ID, Option<String>)>, Error> {
        Ok(self
            .backend
            .slot_list(false)?
            .into_iter()
            .map(|s| {
                let label = self
                    .backend
                    .token_info(s)
                    .ok()
                    .filter(|ti| ti.flags & CKF_TOKEN_INITIALIZED != 0)
                    .map(|ti| String::from_utf8_lossy(&ti.label).trim_end().to_string());
                (s, label)
            })
            .collect())
    }

    /// Logs the backend token in with the PIN kmsd holds, on a session kept
    /// open for that purpose, and returns the PIN (kept for re-authentication).
    fn anchor(&self, slot: CK_SLOT_ID, t: &TokenCfg) -> Result<Zeroizing<Vec<u8>>, StartError> {
        let pin = read_pin(t).map_err(|message| StartError::Pin {
            label: t.backend_label.clone(),
            message,
        })?;
        let failed = |source| StartError::Login {
            label: t.backend_label.clone(),
            source,
        };
        let s = self
            .backend
            .open_session(slot, CKF_SERIAL_SESSION)
            .map_err(failed)?;
        match self.backend.login(s, CKU_USER, Some(&pin)) {
            Ok(())
            | Err(Error::Backend {
                rv: CKR_USER_ALREADY_LOGGED_IN,
                ..
            }) => {}
            Err(e) => {
                let _ = self.backend.close_session(s);
                return Err(failed(e));
            }
        }
        self.anchors.lock().push(s);
        Ok(pin)
    }

    /// Transparent mode: re-reads the backend's slot list, so that a token
    /// initialised after start (by kmsd's own `C_InitToken`, or by another
    /// program where the backend reports it) appears, and a relabelled one
    /// shows its new label. Slots never disappear while kmsd runs.
    pub fn refresh_slots(&self) -> Result<(), StartError> {
        if self.mode != Mode::Transparent {
            return Ok(());
        }
        let found = self.backend_tokens()?;
        let mut tokens = self.tokens.write();
        for (s, label) in found {
            let name = label.clone().unwrap_or_default();
            if let Some(t) = tokens.iter().find(|t| t.backend_slot == s) {
                if t.name == name {
                    continue;
                }
            }
            let cfg = label.as_deref().and_then(|l| self.token_cfgs.get(l));
            let backend_pin = match cfg {
                Some(t) => Some(self.anchor(s, t)?),
                None => None,
            };
            let vt = Arc::new(VToken {
                slot: s,
                backend_slot: s,
                label: pad::<32>(name.as_bytes()),
                serial: None,
                name,
                backend_pin,
                so_functions: self.so_functions,
                mechanisms: self.backend.mechanism_list(s)?,
            });
            match tokens.iter_mut().find(|t| t.backend_slot == s) {
                Some(t) => *t = vt,
                None => tokens.push(vt),
            }
        }
        Ok(())
    }

    /// The tokens this identity may see, in slot order.
    pub fn tokens_for(&self, identity: &Identity) -> Vec<Arc<VToken>> {
        self.tokens
            .read()
            .iter()
            .filter(|t| identity.sees(t))
            .cloned()
            .collect()
    }

    pub fn token(&self, ctx: &Context, slot: u64) -> Option<Arc<VToken>> {
        self.tokens
            .read()
            .iter()
            .find(|t| t.slot == slot && ctx.identity.sees(t))
            .cloned()
    }

    /// The served token named `name`, whoever asks.
    pub fn token_named(&self, name: &str) -> Option<Arc<VToken>> {
        self.tokens.read().iter().find(|t| t.name == name).cloned()
    }

    /// Every served token.
    pub fn all_tokens(&self) -> Vec<Arc<VToken>> {
        self.tokens.read().clone()
    }

    /// Open client contexts.
    pub fn context_count(&self) -> usize {
        self.contexts.lock().len()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.read().len()
    }

    /// Opens a context, or rejoins one that belongs to the same identity.
    /// `None` when the identity already holds as many contexts as allowed.
    pub fn open_context(
        &self,
        identity: &Arc<Identity>,
        rejoin: Option<&[u8]>,
        pid: u32,
    ) -> Option<(Arc<Context>, bool)> {
        let mut contexts = self.contexts.lock();
        if let Some(token) = rejoin {
            if let Some(c) = contexts.get(token) {
                if Arc::ptr_eq(&c.identity, identity) {
                    c.attach();
                    return Some((c.clone(), true));
                }
                tracing::warn!(identity = %identity.name, "context rejoin refused: token belongs to another identity");
            }
        }
        if !take(
            &identity.usage.contexts,
            self.limits.max_contexts_per_identity,
        ) {
            return None;
        }
        let mut token = vec![0u8; kmsp11_proto::CONTEXT_TOKEN_LEN];
        rand::rngs::OsRng.fill_bytes(&mut token);
        let ctx = Arc::new(Context::new(
            self.next_context.fetch_add(1, Ordering::Relaxed),
            token.clone(),
            identity.clone(),
            pid,
        ));
        ctx.attach();
        contexts.insert(token, ctx.clone());
        Some((ctx, false))
    }

    /// Ends a context for all its connections: its backend sessions are
    /// closed, its session objects go with them, its logins end. Returns
    /// how many sessions were closed.
    pub fn end_context(&self, ctx: &Context) -> usize {
        self.contexts.lock().remove(&ctx.token);
        let Some((sessions, slots)) = ctx.end() else {
            return 0;
        };
        let n = sessions.len();
        give(&ctx.identity.usage.sessions, n);
        give(&ctx.identity.usage.contexts, 1);
        for slot in slots {
            if let Some(t) = self.tokens.read().iter().find(|t| t.slot == slot).cloned() {
                self.leave_backend_login(ctx, &t);
            }
        }
        for s in sessions {
            let _ = self.backend.close_session(s.backend);
        }
        self.session_objects
            .lock()
            .retain(|_, owner| *owner != ctx.id);
        n
    }

    /// Ends contexts with no connection for longer than the grace period.
    pub fn reap(&self) {
        let expired: Vec<Arc<Context>> = self
            .contexts
            .lock()
            .values()
            .filter(|c| c.idle_for().is_some_and(|d| d > self.grace))
            .cloned()
            .collect();
        for c in expired {
            let sessions = self.end_context(&c);
            tracing::info!(context = c.id, identity = %c.identity.name, pid = c.pid, sessions, "context expired after grace period; its sessions are closed");
        }
        self.refresh_identities();
        self.quotas.sweep();
        crate::core::lifecycle::tick(self);
        self.audit.sync_pending();
    }

    pub fn own_session_object(&self, ctx: &Context, h: BObject) {
        self.session_objects.lock().insert(h, ctx.id);
    }

    pub fn session_object_owner(&self, h: BObject) -> Option<u64> {
        self.session_objects.lock().get(&h).copied()
    }

    pub fn forget_session_objects(&self, handles: &[BObject]) {
        let mut m = self.session_objects.lock();
        for h in handles {
            m.remove(h);
        }
    }

    /// Transparent mode, a token whose PIN kmsd does not hold: logs this
    /// context in over the backend's one login. The first context logs the
    /// backend in through its own session; later ones have their PIN
    /// compared with the one that did.
    pub fn join_backend_login(
        &self,
        ctx: &Context,
        t: &VToken,
        session: BSession,
        user_type: CK_USER_TYPE,
        pin: Option<&[u8]>,
    ) -> Result<(), Error> {
        let mac = self.pins.mac(b"backend login", pin.unwrap_or_default());
        let mut logins = self.backend_logins.lock();
        match logins.get_mut(&t.backend_slot) {
            Some(l) if l.user_type != user_type => {
                Err(Error::Rv(CKR_USER_ANOTHER_ALREADY_LOGGED_IN))
            }
            Some(l) => {
                if bool::from(subtle::ConstantTimeEq::ct_eq(&l.pin_mac[..], &mac[..])) {
                    l.holders.insert(ctx.id);
                    Ok(())
                } else {
                    Err(Error::Rv(CKR_PIN_INCORRECT))
                }
            }
            None => {
                let r = self.backend.login(session, user_type, pin);
                if r.is_ok() {
                    logins.insert(
                        t.backend_slot,
                        BackendLogin {
                            user_type,
                            holders: HashSet::from([ctx.id]),
                            pin_mac: mac,
                        },
                    );
                }
                r
            }
        }
    }

    /// This context's login on a transparent token ends; the backend is
    /// logged out when no context is logged in any more.
    pub fn leave_backend_login(&self, ctx: &Context, t: &VToken) {
        let mut logins = self.backend_logins.lock();
        let Some(l) = logins.get_mut(&t.backend_slot) else {
            return;
        };
        l.holders.remove(&ctx.id);
        if !l.holders.is_empty() {
            return;
        }
        logins.remove(&t.backend_slot);
        drop(logins);
        // Any session of the application logs it out; use one of our own,
        // read-write because an SO login refuses new read-only sessions.
        if let Ok(s) = self
            .backend
            .open_session(t.backend_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        {
            let _ = self.backend.logout(s);
            let _ = self.backend.close_session(s);
        }
    }

    /// After `C_SetPIN` succeeded on a transparent token: later logins compare against the new PIN.
    pub fn backend_pin_changed(&self, t: &VToken, new: Option<&[u8]>) {
        if let Some(l) = self.backend_logins.lock().get_mut(&t.backend_slot) {
            l.pin_mac = self.pins.mac(b"backend login", new.unwrap_or_default());
        }
    }
}

fn read_pin(t: &TokenCfg) -> Result<Zeroizing<Vec<u8>>, String> {
    if let Some(p) = &t.pin_file {
        let s = Zeroizing::new(
            std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        );
        let line = s.lines().next().unwrap_or("").trim_end_matches('\r');
        return Ok(Zeroizing::new(line.as_bytes().to_vec()));
    }
    if let Some(v) = &t.pin_env {
        let s = Zeroizing::new(
            std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?,
        );
        return Ok(Zeroizing::new(s.as_bytes().to_vec()));
    }
    Err("no pin_file or pin_env".into())
}

/// A stable serial: the same virtual label over the same backend token
/// always gives the same 16 hex digits; two virtual tokens never share one.
fn serial_for(label: &str, backend_serial: &[u8]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"kmsp11 virtual token serial\0");
    h.update(label.as_bytes());
    h.update([0]);
    h.update(backend_serial);
    let hex = hex::encode(&h.finalize()[..8]);
    pad::<16>(hex.as_bytes())
}
