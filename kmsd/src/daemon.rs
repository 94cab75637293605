//! The daemon's state: the backend, the virtual tokens, the identities and
//! the client contexts (DESIGN.md decisions 2 and 6).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pkcs11_sys::*;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::config::{Config, Mode};
use crate::hsm::Backend;

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
    /// The backend stays logged in as user through this session (kmsd holds the PIN).
    pub anchored: bool,
    pub so_functions: bool,
}

#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub tokens: Vec<String>,
    pub pin_hash: Option<String>,
}

impl Identity {
    pub fn sees(&self, token: &VToken) -> bool {
        self.tokens.iter().any(|t| t == "*" || *t == token.name)
    }
}

pub struct Daemon {
    pub backend: Backend,
    pub mode: Mode,
    pub tokens: Vec<VToken>,
    pub identities: Vec<Arc<Identity>>,
    contexts: Mutex<HashMap<Vec<u8>, Arc<Context>>>,
    /// Backend session objects and the context that owns them: other
    /// contexts never see them.
    session_objects: Mutex<HashMap<CK_OBJECT_HANDLE, u64>>,
    next_context: AtomicU64,
    pub grace: Duration,
    /// Anchor sessions that keep each anchored backend token logged in.
    _anchors: Vec<CK_SESSION_HANDLE>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    #[error("backend token {0:?} not found (is it initialised? is SOFTHSM2_CONF right?)")]
    TokenNotFound(String),
    #[error("backend PIN for token {label:?}: {message}")]
    Pin { label: String, message: String },
    #[error("backend C_Login on token {label:?} failed with CK_RV {rv:#x} (wrong PIN?)")]
    Login { label: String, rv: CK_RV },
}

impl Daemon {
    pub fn start(cfg: &Config) -> Result<Daemon, StartError> {
        for (k, v) in &cfg.backend.env {
            std::env::set_var(k, v);
        }
        let backend = Backend::load(&cfg.backend.module)?;
        let (_, slots) = backend.slot_list(false);
        let mut by_label: HashMap<String, CK_SLOT_ID> = HashMap::new();
        let mut backend_labels: Vec<(CK_SLOT_ID, Option<String>)> = Vec::new();
        for s in &slots {
            let (rv, ti) = backend.token_info(*s);
            let label = (rv == CKR_OK && ti.flags & CKF_TOKEN_INITIALIZED != 0)
                .then(|| String::from_utf8_lossy(&ti.label).trim_end().to_string());
            if let Some(l) = &label {
                by_label.entry(l.clone()).or_insert(*s);
            }
            backend_labels.push((*s, label));
        }
        let pins: HashMap<&str, &crate::config::TokenCfg> = cfg
            .tokens
            .iter()
            .map(|t| (t.backend_label.as_str(), t))
            .collect();

        let mut tokens = Vec::new();
        let mut anchors = Vec::new();
        let mut anchor =
            |backend_slot: CK_SLOT_ID, t: &crate::config::TokenCfg| -> Result<(), StartError> {
                let pin = read_pin(t).map_err(|message| StartError::Pin {
                    label: t.backend_label.clone(),
                    message,
                })?;
                let (rv, s) = backend.open_session(backend_slot, CKF_SERIAL_SESSION);
                if rv != CKR_OK {
                    return Err(StartError::Login {
                        label: t.backend_label.clone(),
                        rv,
                    });
                }
                let rv = backend.login(s, CKU_USER, Some(&pin));
                if rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN {
                    return Err(StartError::Login {
                        label: t.backend_label.clone(),
                        rv,
                    });
                }
                anchors.push(s);
                Ok(())
            };
        match cfg.backend.mode {
            Mode::Virtual => {
                for (i, t) in cfg.tokens.iter().enumerate() {
                    let backend_slot = *by_label
                        .get(&t.backend_label)
                        .ok_or_else(|| StartError::TokenNotFound(t.backend_label.clone()))?;
                    anchor(backend_slot, t)?;
                    let name = t.label.clone().unwrap_or_default();
                    let (_, ti) = backend.token_info(backend_slot);
                    tokens.push(VToken {
                        slot: i as u64,
                        backend_slot,
                        label: pad::<32>(&name),
                        serial: Some(serial_for(&name, &ti.serialNumber)),
                        name,
                        anchored: true,
                        so_functions: false,
                    });
                }
            }
            Mode::Transparent => {
                for (s, label) in backend_labels {
                    let cfg_tok = label.as_deref().and_then(|l| pins.get(l));
                    if let Some(t) = cfg_tok {
                        anchor(s, t)?;
                    }
                    tokens.push(VToken {
                        slot: s,
                        backend_slot: s,
                        label: pad::<32>(label.as_deref().unwrap_or("")),
                        serial: None,
                        name: label.unwrap_or_default(),
                        anchored: cfg_tok.is_some(),
                        so_functions: cfg.backend.allow_so_functions,
                    });
                }
            }
        }
        let identities = cfg
            .identities
            .iter()
            .map(|i| {
                Arc::new(Identity {
                    name: i.name.clone(),
                    tokens: i.tokens.clone(),
                    pin_hash: i.pin_hash.clone(),
                })
            })
            .collect();
        Ok(Daemon {
            backend,
            mode: cfg.backend.mode,
            tokens,
            identities,
            contexts: Mutex::new(HashMap::new()),
            session_objects: Mutex::new(HashMap::new()),
            next_context: AtomicU64::new(1),
            grace: Duration::from_secs(cfg.listen.context_grace_secs),
            _anchors: anchors,
        })
    }

    pub fn identity(&self, names: &[String]) -> Option<Arc<Identity>> {
        self.identities
            .iter()
            .find(|i| names.iter().any(|n| *n == i.name))
            .cloned()
    }

    /// Opens a context, or rejoins one that belongs to the same identity.
    pub fn open_context(
        &self,
        identity: &Arc<Identity>,
        rejoin: Option<&[u8]>,
        pid: u32,
    ) -> (Arc<Context>, bool) {
        let mut contexts = self.contexts.lock();
        if let Some(token) = rejoin {
            if let Some(c) = contexts.get(token) {
                if Arc::ptr_eq(&c.identity, identity) {
                    c.attach();
                    return (c.clone(), true);
                }
                tracing::warn!(identity = %identity.name, "context rejoin refused: token belongs to another identity");
            }
        }
        let mut token = vec![0u8; kmsp11_proto::CONTEXT_TOKEN_LEN];
        rand::thread_rng().fill_bytes(&mut token);
        let ctx = Arc::new(Context::new(
            self.next_context.fetch_add(1, Ordering::Relaxed),
            token.clone(),
            identity.clone(),
            pid,
        ));
        ctx.attach();
        contexts.insert(token, ctx.clone());
        (ctx, false)
    }

    /// Ends a context: its backend sessions are closed, its session objects
    /// go with them. Returns how many sessions were closed.
    pub fn end_context(&self, ctx: &Context) -> usize {
        self.contexts.lock().remove(&ctx.token);
        let sessions: Vec<CK_SESSION_HANDLE> = {
            let mut st = ctx.state.lock();
            let s = st.sessions.drain().map(|(_, s)| s.backend).collect();
            st.objects.clear();
            st.by_backend.clear();
            s
        };
        let n = sessions.len();
        for s in sessions {
            self.backend.close_session(s);
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
    }

    pub fn token(&self, ctx: &Context, slot: u64) -> Option<&VToken> {
        self.tokens
            .iter()
            .find(|t| t.slot == slot && ctx.identity.sees(t))
    }

    pub fn own_session_object(&self, ctx: &Context, h: CK_OBJECT_HANDLE) {
        self.session_objects.lock().insert(h, ctx.id);
    }

    pub fn session_object_owner(&self, h: CK_OBJECT_HANDLE) -> Option<u64> {
        self.session_objects.lock().get(&h).copied()
    }

    pub fn forget_session_objects(&self, handles: &[CK_OBJECT_HANDLE]) {
        let mut m = self.session_objects.lock();
        for h in handles {
            m.remove(h);
        }
    }
}

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
}

#[derive(Default)]
pub struct CtxState {
    /// Virtual slots where this context is logged in as user.
    pub user: HashSet<u64>,
    /// Virtual slots where this context's SO login was forwarded to the backend.
    pub so: HashSet<u64>,
    pub sessions: HashMap<u64, Sess>,
    pub objects: HashMap<u64, Obj>,
    pub by_backend: HashMap<CK_OBJECT_HANDLE, u64>,
    next_session: u64,
    next_object: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Sess {
    pub backend: CK_SESSION_HANDLE,
    pub slot: u64,
    pub flags: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub backend: CK_OBJECT_HANDLE,
    pub slot: u64,
    pub private: bool,
    /// The virtual session a session object belongs to.
    pub session: Option<u64>,
}

impl Context {
    fn new(id: u64, token: Vec<u8>, identity: Arc<Identity>, pid: u32) -> Context {
        // Handles start at a random base so that a handle from before a
        // daemon restart does not name something in the new context.
        let mut r = rand::thread_rng();
        let state = CtxState {
            next_session: 0x10000 + (r.next_u32() as u64 & 0x3fff_0000),
            next_object: 0x10000 + (r.next_u32() as u64 & 0x3fff_0000),
            ..Default::default()
        };
        Context {
            id,
            pid,
            token,
            identity,
            state: Mutex::new(state),
            conns: Mutex::new((0, None)),
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

    fn idle_for(&self) -> Option<Duration> {
        let c = self.conns.lock();
        if c.0 == 0 {
            c.1.map(|t| t.elapsed())
        } else {
            None
        }
    }
}

impl CtxState {
    pub fn add_session(&mut self, s: Sess) -> u64 {
        self.next_session += 1;
        self.sessions.insert(self.next_session, s);
        self.next_session
    }

    pub fn add_object(&mut self, o: Obj) -> u64 {
        if let Some(v) = self.by_backend.get(&o.backend) {
            return *v;
        }
        self.next_object += 1;
        self.objects.insert(self.next_object, o);
        self.by_backend.insert(o.backend, self.next_object);
        self.next_object
    }

    pub fn remove_object(&mut self, v: u64) {
        if let Some(o) = self.objects.remove(&v) {
            self.by_backend.remove(&o.backend);
        }
    }

    pub fn logged_in(&self, slot: u64) -> bool {
        self.user.contains(&slot) || self.so.contains(&slot)
    }
}

fn read_pin(t: &crate::config::TokenCfg) -> Result<Zeroizing<Vec<u8>>, String> {
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

pub fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let b = s.as_bytes();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
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
    pad::<16>(&hex)
}
