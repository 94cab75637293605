//! The admin door (DESIGN.md "front/admin/"): HTTPS on its own listener,
//! the same TLS 1.3 profile and client CA as the PKCS#11 door (a client
//! certificate is required and must name exactly one identity), JSON under
//! versioned paths. Roles: `admin` changes, `auditor` (and `admin`) reads
//! the inventory, identities, quotas, policy and audit; `/health` answers
//! any identity. Every change, and every refused request, is an audit
//! record naming the caller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::tls::Tls;

mod dashboard;
use crate::audit::log::Entry;
use crate::audit::Record;
use crate::authz::approvals::{self, Binding, Gate, Guarded};
use crate::core::WorkError;
use crate::daemon::{Daemon, Identity};
use crate::identity::{self, Presented};
use crate::keys_cli;
use crate::store::{IdentityRecord, KeyState, Revocation, StoreError};

/// Admin connections open at once.
const MAX_CONNECTIONS: usize = 64;
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Who calls, from the client certificate.
#[derive(Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    pub peer: SocketAddr,
}

impl Caller {
    fn has(&self, roles: &[&str]) -> bool {
        self.identity
            .roles
            .iter()
            .any(|r| roles.contains(&r.as_str()))
    }
}

/// An error answer: a status and `{"error": code, "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// Status, code and message (for the REST API's errors).
    pub(crate) fn parts(self) -> (StatusCode, &'static str, String) {
        (self.status, self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::Exists(m) => ApiError::new(StatusCode::CONFLICT, "exists", m),
            StoreError::Transition(a, b) => ApiError::new(
                StatusCode::CONFLICT,
                "state",
                format!("key state cannot go from {a} to {b}"),
            ),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
        }
    }
}

type Answer = Result<Json<Value>, ApiError>;
type D = State<Arc<Daemon>>;
type C = Extension<Caller>;

pub struct Admin {
    daemon: Arc<Daemon>,
    tls: Arc<Tls>,
    permits: Arc<Semaphore>,
}

impl Admin {
    pub fn new(daemon: Arc<Daemon>, tls: Arc<Tls>) -> Admin {
        Admin {
            daemon,
            tls,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        let router = router(self.daemon.clone());
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "admin connection refused: {MAX_CONNECTIONS} open");
                continue;
            };
            let me = self.clone();
            let router = router.clone();
            tokio::spawn(async move {
                if let Err(why) = me.connection(tcp, peer, router).await {
                    tracing::info!(%peer, "admin connection closed: {why}");
                }
                drop(permit);
            });
        }
    }

    async fn connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        router: Router,
    ) -> Result<(), String> {
        let tls = tokio::time::timeout(HANDSHAKE, self.tls.acceptor().accept(tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let presented = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Presented::from_der(c.as_ref()))
            .unwrap_or_default();
        let identity = match identity::resolve(&self.daemon.identities(), &presented) {
            identity::Match::One(i) => i,
            _ => {
                tracing::warn!(%peer, names = ?presented.names, "admin connection refused: the certificate names no single identity");
                return Ok(());
            }
        };
        let svc = router.layer(Extension(Caller { identity, peer }));
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc))
            .await
            .map_err(|e| e.to_string())
    }
}

fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/keys", get(keys))
        .route("/v1/keys/{key}", get(key))
        .route("/v1/keys/{key}/versions", get(versions))
        .route("/v1/keys/{key}/{action}", post(key_action))
        .route("/v1/revocations", get(revocations))
        .route("/v1/certs", get(certs).post(import_certs))
        .route("/v1/certs/{sha256}/remove", post(remove_cert))
        .route("/v1/approvals", get(approvals))
        .route("/v1/approvals/{id}", get(approval))
        .route("/v1/approvals/{id}/{action}", post(approval_action))
        .route("/v1/identities", get(identities).post(add_identity))
        .route("/v1/identities/{name}/{action}", post(identity_action))
        .route("/v1/identities/{name}/certificate", post(issue_cert))
        .route("/v1/policy", get(policy))
        .route("/v1/policy/reload", post(reload_policy))
        .route("/v1/policy/validate", post(validate_policy))
        .route("/v1/quotas", get(quotas))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/audit/records/{seq}", get(audit_record))
        .route("/v1/audit/export", get(export_audit))
        .merge(dashboard::routes())
        .merge(super::rest::routes())
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn_with_state(d.clone(), in_force))
        .layer(axum::middleware::from_fn_with_state(d.clone(), count))
        .with_state(d)
}

/// The paths metrics name (anything else is `other`, so that callers
/// cannot grow the label set).
const PATHS: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/v1/status",
    "/v1/keys",
    "/v1/revocations",
    "/v1/certs",
    "/v1/approvals",
    "/v1/identities",
    "/v1/policy",
    "/v1/quotas",
    "/v1/audit",
    "/ui",
    "/kms/v1",
];

/// Refuses a change a page of another site asks for: a browser holding an
/// administrator's certificate presents it to any page's request, so a
/// POST must come from kmsd's own pages (or from a client that is not a
/// browser, such as kmsctl, which sends neither header).
async fn same_origin(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let h = req.headers();
        let site = h
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        let host = h
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let origin_ok = match h.get(axum::http::header::ORIGIN) {
            None => true,
            Some(o) => {
                let o = o.to_str().unwrap_or_default();
                let o = o.strip_prefix("https://").unwrap_or("");
                host.as_deref() == Some(o)
            }
        };
        if !matches!(site, "same-origin" | "none") || !origin_ok {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "changes are accepted from kmsd's own pages and from API clients only",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Refuses the requests of an identity disabled or changed since its
/// connection was accepted: a kept-alive connection outlives the identity
/// it was accepted for (a new connection is refused at its handshake).
async fn in_force(
    State(d): D,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(c) = req.extensions().get::<Caller>() {
        if !d.identities().iter().any(|i| Arc::ptr_eq(i, &c.identity)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "identity_disabled",
                format!(
                    "identity {} was disabled or changed: connect again",
                    c.identity.name
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Counts each request by path and status.
async fn count(State(d): D, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let label = PATHS
        .iter()
        .find(|p| path == **p || path.starts_with(&format!("{p}/")))
        .copied()
        .unwrap_or("other");
    let resp = next.run(req).await;
    d.metrics
        .admin_requests
        .with_label_values(&[label, resp.status().as_str()])
        .inc();
    resp
}

/// Refuses a caller without one of `roles` (403), with an audit record
/// when the request would change something.
fn require(d: &Daemon, c: &Caller, roles: &[&str], change: Option<&str>) -> Result<(), ApiError> {
    if c.has(roles) {
        return Ok(());
    }
    if let Some(op) = change {
        let _ = d.audit.record(Record {
            identity: Some(c.identity.name.clone()),
            peer: Some(c.peer.to_string()),
            op: Some(op.into()),
            decision: Some("deny".into()),
            reason: Some("role".into()),
            policy: Some(format!("needs role {}", roles.join(" or "))),
            ..Default::default()
        });
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("{} needs the role {}", c.identity.name, roles.join(" or ")),
    ))
}

/// Dual control for a change `[dual_control] guarded` names: a grant for
/// this exact change (requester, token, operation, target) is used, or the
/// change is refused with 403 `approval_required`, naming the request
/// approvers act on. Returns the grant used, if any.
fn dual_control(
    d: &Daemon,
    c: &Caller,
    what: Guarded,
    op: &str,
    token: &str,
    target: &str,
    label: &str,
) -> Result<Option<String>, ApiError> {
    let Some(need) = d.dual_control.needs(what) else {
        return Ok(None);
    };
    let b = Binding {
        requester: c.identity.name.clone(),
        token: token.into(),
        action: what.name().into(),
        key: target.into(),
        label: label.into(),
        mechanism: None,
    };
    let now = crate::core::inventory::now();
    let role = &d.dual_control.approver_role;
    let gate = approvals::gate(
        d.inventory.store.as_ref(),
        &d.dual_control,
        &b,
        need,
        role,
        now,
    )?;
    // The request, or the grant's use, is a record of its own; the
    // change's own record follows a granted one.
    let (decision, reason, rule) = match &gate {
        Gate::Granted(id) => ("allow", None, format!("approval {id} used")),
        Gate::Pending { id, have, need } => (
            "deny",
            Some("pending-approval".to_string()),
            format!("approval {id} pending ({have} of {need})"),
        ),
    };
    d.audit
        .record(Record {
            identity: Some(c.identity.name.clone()),
            peer: Some(c.peer.to_string()),
            op: Some(op.into()),
            key: Some(target.to_string()).filter(|k| k.starts_with("k-")),
            label: Some(label.to_string()).filter(|l| !l.is_empty()),
            decision: Some(decision.into()),
            reason,
            policy: Some(rule),
            ..Default::default()
        })
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit", e))?;
    let (id, have, need) = match gate {
        Gate::Granted(id) => return Ok(Some(id)),
        Gate::Pending { id, have, need } => (id, have, need),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "approval_required",
        format!(
            "{op} needs {need} approvals ({have} so far): request {id}; approvers run `kmsctl approvals approve {id}`, then repeat this"
        ),
    ))
}

const READERS: &[&str] = &["admin", "auditor"];
const ADMINS: &[&str] = &["admin"];

/// Records an administrative change made through the API.
fn record(
    d: &Daemon,
    c: &Caller,
    op: &str,
    key: Option<&str>,
    target: Option<&str>,
    detail: &str,
) -> Result<Entry, ApiError> {
    d.audit
        .record(Record {
            identity: Some(c.identity.name.clone()),
            peer: Some(c.peer.to_string()),
            op: Some(op.into()),
            key: key.map(str::to_string),
            label: target.map(str::to_string),
            decision: Some("allow".into()),
            policy: Some("role admin".into()),
            detail: Some(detail.into()),
            ..Default::default()
        })
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit", e))
}

async fn health(Extension(_c): C) -> Json<Value> {
    Json(json!({"status": "alive", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(d): D, Extension(_c): C) -> Response {
    let backend = d.backend.slot_list(false).is_ok();
    let audit = d.audit.ready().is_ok();
    let store = d.inventory.store.last_checkpoint().is_ok();
    let ok = backend && audit && store;
    let body = Json(json!({"ready": ok, "backend": backend, "audit": audit, "store": store}));
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

pub(crate) async fn metrics(State(d): D, Extension(c): C) -> Result<String, ApiError> {
    require(&d, &c, READERS, None)?;
    let m = &d.metrics;
    m.contexts.set(d.context_count() as i64);
    let ids = d.identities();
    let sum = |f: fn(&Identity) -> &std::sync::atomic::AtomicUsize| {
        ids.iter()
            .map(|i| f(i).load(std::sync::atomic::Ordering::Relaxed) as i64)
            .sum::<i64>()
    };
    m.connections.set(sum(|i| &i.usage.connections));
    m.sessions.set(sum(|i| &i.usage.sessions));
    let (seq, _) = d.audit.head();
    let (queue, last) = d.audit.queue();
    m.audit_sequence.set(seq as i64);
    m.audit_queue.set(queue as i64);
    if let Some(t) = last {
        m.audit_last_fsync.set(t);
    }
    m.quota_buckets.set(d.quotas.buckets().len() as i64);
    m.daily_limit
        .set(d.quotas.daily_limit_per_key.min(i64::MAX as u64) as i64);
    m.approvals_pending.set(pending_approvals(&d)? as i64);
    let soon = tokio::task::block_in_place(|| {
        crate::core::certs::expiring(&d, crate::core::certs::SOON_DAYS)
    });
    m.certificates_expiring.set(soon.len() as i64);
    m.key_uses_today.reset();
    for (key, n) in d.inventory.store.daily_all(crate::authz::quota::today())? {
        m.key_uses_today
            .with_label_values(&[key.0.as_str()])
            .set(n.min(i64::MAX as u64) as i64);
    }
    Ok(m.render())
}

/// Requests waiting for approvals now.
fn pending_approvals(d: &Daemon) -> Result<usize, ApiError> {
    let now = crate::core::inventory::now();
    Ok(d.inventory
        .store
        .open_approvals()?
        .iter()
        .filter(|a| a.state == crate::store::ApprovalState::Pending && a.expires > now)
        .count())
}

async fn status(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let tokens: Vec<String> = d.all_tokens().iter().map(|t| t.name.clone()).collect();
    let (seq, hash) = d.audit.head();
    let pending = pending_approvals(&d)?;
    let soon = tokio::task::block_in_place(|| {
        crate::core::certs::expiring(&d, crate::core::certs::SOON_DAYS)
    });
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "tokens": tokens,
        "backend": {
            "module": d.backend_module(),
            "reachable": d.backend.slot_list(false).is_ok(),
        },
        "contexts": d.context_count(),
        "policies": d.policy().len(),
        "pending_approvals": pending,
        "audit": {"sequence": seq, "head": hash},
        "certificates_expiring": soon,
    })))
}

async fn keys(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let keys = d.inventory.store.keys(None)?;
    Ok(Json(Value::Array(
        keys.iter().map(keys_cli::json).collect(),
    )))
}

/// A key's versions by its label (or a version's, `label@vN`): newest
/// first, each record with its `version`.
async fn versions(State(d): D, Extension(c): C, Path(name): Path<String>) -> Answer {
    require(&d, &c, READERS, None)?;
    let (base, _) = crate::core::rotate::split_version(&name);
    let keys = d.inventory.store.keys(None)?;
    let v = crate::core::rotate::versions(base, &keys);
    if v.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key labelled {base:?}"),
        ));
    }
    Ok(Json(Value::Array(
        v.into_iter()
            .map(|(n, k)| {
                let mut j = keys_cli::json(k);
                j["version"] = n.into();
                j
            })
            .collect(),
    )))
}

async fn key(State(d): D, Extension(c): C, Path(key): Path<String>) -> Answer {
    require(&d, &c, READERS, None)?;
    let s = d.inventory.store.as_ref();
    let k = keys_cli::find(s, &key)
        .map_err(|m| ApiError::new(StatusCode::NOT_FOUND, "not_found", m))?;
    let mut v = keys_cli::json(&k);
    v["usage"] = s
        .usage(&k.id)?
        .into_iter()
        .map(|(op, n)| (op, Value::from(n)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    v["today"] = s.daily(&k.id, crate::authz::quota::today())?.into();
    if let Some(r) = s.revocation(&k.id)? {
        v["revocation"] = keys_cli::revocation_json(&r);
    }
    Ok(Json(v))
}

/// The body of a key action; each action reads what it needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyChange {
    pub reason: Option<String>,
    pub tags: Option<Vec<String>>,
    /// RFC 3339, or null to clear.
    pub at: Option<String>,
    /// A certificate subject, `CN=...,O=...` (csr, self-sign).
    pub subject: Option<String>,
    /// A self-signed certificate's validity in days (default 365).
    pub days: Option<u32>,
}

async fn key_action(
    State(d): D,
    Extension(c): C,
    Path((key, action)): Path<(String, String)>,
    body: Option<Json<KeyChange>>,
) -> Answer {
    let body = body.map(|b| b.0).unwrap_or_default();
    key_change(&d, &c, &key, &action, body).map(|(v, _)| Json(v))
}

/// A key action (`keys.<action>`) by an administrator: the key's record
/// after it and the audit record of the change.
pub(crate) fn key_change(
    d: &Arc<Daemon>,
    c: &Caller,
    key: &str,
    action: &str,
    body: KeyChange,
) -> Result<(Value, Entry), ApiError> {
    let op = format!("keys.{action}");
    require(d, c, ADMINS, Some(&op))?;
    let s = d.inventory.store.as_ref();
    let find = if matches!(action, "rotate" | "csr" | "self-sign") {
        keys_cli::find_private
    } else {
        keys_cli::find
    };
    let k = find(s, key).map_err(|m| ApiError::new(StatusCode::NOT_FOUND, "not_found", m))?;
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m.to_string());
    let conflict = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "state",
            format!("{} is {}", k.id, k.state.as_str()),
        )
    };
    let cas = |from: KeyState, to: KeyState, at: Option<u64>| -> Result<(), ApiError> {
        if k.state != from || !s.transition(&k.id, from, to, at)? {
            return Err(conflict());
        }
        Ok(())
    };
    let detail = match action {
        "disable" => {
            cas(KeyState::Active, KeyState::Disabled, None)?;
            "disabled".to_string()
        }
        "enable" => {
            cas(KeyState::Disabled, KeyState::Active, None)?;
            "enabled".to_string()
        }
        "cancel-destroy" => {
            cas(KeyState::PendingDestroy, KeyState::Active, None)?;
            "restored".to_string()
        }
        "schedule-destroy" => {
            if k.state != KeyState::PendingDestroy {
                dual_control(d, c, Guarded::Destroy, &op, &k.token, &k.id.0, &k.label)?;
            }
            let at = crate::core::inventory::now() + d.inventory.destroy_window.as_secs();
            cas(k.state, KeyState::PendingDestroy, Some(at))?;
            format!("pending destroy until {}", keys_cli::rfc3339(at))
        }
        "revoke" => {
            let reason = body.reason.ok_or_else(|| bad("revoke needs {\"reason\": ...}"))?;
            s.revoke(&Revocation {
                key: k.id.clone(),
                label: k.label.clone(),
                when: crate::core::inventory::now(),
                who: c.identity.name.clone(),
                reason: reason.clone(),
            })?;
            format!("revoked: {reason}")
        }
        "rotate" => {
            use crate::core::rotate::rotate;
            dual_control(d, c, Guarded::Rotate, &op, &k.token, &k.id.0, &k.label)?;
            // HSM work: off the runtime's workers.
            let r = tokio::task::block_in_place(|| rotate(d, &k));
            let (r, entry) = worked(d, c, &op, Some(&k.id.0), r, CONFLICT, |r| r.describe(&k.id))?;
            let new = s
                .key(&r.key)?
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "key gone"))?;
            let mut v = keys_cli::json(&new);
            v["version"] = (r.version + 1).into();
            v["previous"] = serde_json::json!({
                "id": k.id.0,
                "label": r.old_label,
                "version": r.version,
            });
            return Ok((v, entry));
        }
        "csr" | "self-sign" => {
            let subject = body
                .subject
                .ok_or_else(|| bad(&format!("{action} needs {{\"subject\": \"CN=...\"}}")))?;
            let r = tokio::task::block_in_place(|| {
                if action == "csr" {
                    crate::core::csr::csr(d, &k, &subject).map(|pem| {
                        json!({"key": k.id.0, "subject": subject, "csr": pem})
                    })
                } else {
                    crate::core::csr::self_sign(d, &k, &subject, body.days.unwrap_or(365))
                        .map(|made| serde_json::to_value(made).unwrap_or_default())
                }
            });
            return worked(d, c, &op, Some(&k.id.0), r, INVALID, |_| {
                format!("subject {subject}")
            });
        }
        "tag" => {
            let tags = body.tags.ok_or_else(|| bad("tag needs {\"tags\": [...]}"))?;
            s.set_tags(&k.id, &tags)?;
            format!("tags [{}]", tags.join(","))
        }
        "expire" => {
            let at = match body.at.as_deref() {
                None => None,
                Some(t) => Some(
                    humantime::parse_rfc3339_weak(t)
                        .map_err(|e| bad(&format!("at {t:?}: {e}")))?
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_err(|_| bad("at: before 1970"))?
                        .as_secs(),
                ),
            };
            s.set_expires(&k.id, at)?;
            at.map_or("no expiry".into(), |t| format!("expires {}", keys_cli::rfc3339(t)))
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no key action {other:?} (disable, enable, revoke, rotate, csr, self-sign, cancel-destroy, schedule-destroy, tag, expire)"),
            ))
        }
    };
    let entry = record(d, c, &op, Some(&k.id.0), None, &detail)?;
    let k = s
        .key(&k.id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "key gone"))?;
    Ok((keys_cli::json(&k), entry))
}

fn approval_json(a: &crate::store::Approval) -> Value {
    let now = crate::core::inventory::now();
    json!({
        "id": a.id,
        "requester": a.requester,
        "token": a.token,
        "action": a.action,
        "key": a.key,
        "label": a.label,
        "mechanism": a.mechanism.map(crate::core::mechanism_name),
        "required": a.required,
        "role": a.role,
        "approvers": a.approvers,
        "state": crate::authz::approvals::state_name(a, now),
        "created": keys_cli::rfc3339(a.created),
        "expires": keys_cli::rfc3339(a.expires),
        "denied_by": a.denied_by,
    })
}

async fn approvals(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let list = d.inventory.store.approvals()?;
    Ok(Json(Value::Array(list.iter().map(approval_json).collect())))
}

async fn approval(State(d): D, Extension(c): C, Path(id): Path<String>) -> Answer {
    require(&d, &c, READERS, None)?;
    let a = d.inventory.store.approval(&id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval request {id}"),
        )
    })?;
    Ok(Json(approval_json(&a)))
}

/// Approves or denies a request: the caller must hold the request's
/// approver role and may not be its requester.
async fn approval_action(
    State(d): D,
    Extension(c): C,
    Path((id, action)): Path<(String, String)>,
) -> Answer {
    use crate::authz::approvals::{decide, Refused};
    let approve = match action.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no approval action {other:?} (approve, deny)"),
            ))
        }
    };
    let op = format!("approvals.{action}");
    let decided = decide(
        d.inventory.store.as_ref(),
        &d.dual_control,
        &id,
        &c.identity.name,
        &c.identity.roles,
        approve,
        crate::core::inventory::now(),
    );
    let a = match decided {
        Ok(a) => a,
        Err(e) => {
            let _ = d.audit.record(Record {
                identity: Some(c.identity.name.clone()),
                peer: Some(c.peer.to_string()),
                op: Some(op),
                decision: Some("deny".into()),
                reason: Some("dual-control".into()),
                detail: Some(format!("{id}: {e}")),
                ..Default::default()
            });
            let (status, code) = match e {
                Refused::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                Refused::OwnRequest | Refused::Role(..) => (StatusCode::FORBIDDEN, "forbidden"),
                Refused::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
                _ => (StatusCode::CONFLICT, "state"),
            };
            return Err(ApiError::new(status, code, e.to_string()));
        }
    };
    let detail = format!(
        "{id}: {} ({} of {})",
        crate::authz::approvals::state_name(&a, crate::core::inventory::now()),
        a.approvers.len(),
        a.required
    );
    record(&d, &c, &op, Some(&a.key), Some(&a.requester), &detail)?;
    Ok(Json(approval_json(&a)))
}

/// Certificates on the tokens, soonest to expire first.
async fn certs(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let list = tokio::task::block_in_place(|| crate::core::certs::list(&d))
        .map_err(|e| work_error(e, INVALID))?;
    Ok(Json(serde_json::to_value(list).unwrap_or_default()))
}

/// The body of a certificate import.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertImport {
    /// PEM text (one or more CERTIFICATE blocks, leaf first).
    pub pem: Option<String>,
    /// A DER certificate, hex.
    pub der_hex: Option<String>,
    /// The key (id or label) the leaf certifies; without it, every
    /// certificate is an authority (a trust anchor or a CA of a chain).
    pub key: Option<String>,
    /// The token, when no key names it (default: the first served).
    pub token: Option<String>,
}

async fn import_certs(State(d): D, Extension(c): C, Json(body): Json<CertImport>) -> Answer {
    let (made, _) = certs_import(&d, &c, body)?;
    Ok(Json(serde_json::to_value(made).unwrap_or_default()))
}

/// Imports the certificates of `body` (`certs.import`, administrators).
pub(crate) fn certs_import(
    d: &Daemon,
    c: &Caller,
    body: CertImport,
) -> Result<(Vec<crate::core::certs::Listed>, Entry), ApiError> {
    let op = "certs.import";
    require(d, c, ADMINS, Some(op))?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let file = match (body.pem, body.der_hex) {
        (Some(p), None) => p.into_bytes(),
        (None, Some(h)) => hex::decode(h.trim()).map_err(|e| bad(format!("der_hex: {e}")))?,
        _ => return Err(bad("give one of pem, der_hex".into())),
    };
    let ders = crate::core::certs::parse_file(&file).map_err(|e| work_error(e, INVALID))?;
    let s = d.inventory.store.as_ref();
    let key = match &body.key {
        Some(k) => Some(
            keys_cli::find_private(s, k)
                .map_err(|m| ApiError::new(StatusCode::NOT_FOUND, "not_found", m))?,
        ),
        None => None,
    };
    let token = match (&key, &body.token) {
        (Some(k), _) => d.token_named(&k.token),
        (None, Some(t)) => d.token_named(t),
        (None, None) => d.all_tokens().into_iter().next(),
    }
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such token"))?;
    let r =
        tokio::task::block_in_place(|| crate::core::certs::import(d, &token, &ders, key.as_ref()));
    let key = key.as_ref().map(|k| k.id.0.as_str());
    worked(d, c, op, key, r, INVALID, |made| {
        let subjects: Vec<&str> = made.iter().map(|m| m.subject.as_str()).collect();
        format!(
            "{} of {} certificates made: {}",
            made.len(),
            ders.len(),
            subjects.join("; ")
        )
    })
}

async fn remove_cert(State(d): D, Extension(c): C, Path(sha256): Path<String>) -> Answer {
    let op = "certs.remove";
    require(&d, &c, ADMINS, Some(op))?;
    let r = tokio::task::block_in_place(|| crate::core::certs::remove(&d, &sha256));
    let (r, _) = worked(&d, &c, op, None, r, INVALID, |r| {
        format!("removed {} {} ({})", r.label, r.subject, r.sha256)
    })?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

/// How a refusal of kmsd's own work answers: 409 for a key's state or
/// kind, 422 for what the request gave.
type Refusal = (StatusCode, &'static str);
const CONFLICT: Refusal = (StatusCode::CONFLICT, "state");
const INVALID: Refusal = (StatusCode::UNPROCESSABLE_ENTITY, "invalid");

fn work_error(e: WorkError, refused: Refusal) -> ApiError {
    match e {
        WorkError::Refused(m) => ApiError::new(refused.0, refused.1, m),
        WorkError::Failed(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "hsm", m),
    }
}

/// The outcome of kmsd's own work for admin operation `op`, recorded in
/// the audit log either way (`detail` of what was done, or why not) and
/// answered.
fn worked<T>(
    d: &Daemon,
    c: &Caller,
    op: &str,
    key: Option<&str>,
    r: Result<T, WorkError>,
    refused: Refusal,
    detail: impl FnOnce(&T) -> String,
) -> Result<(T, Entry), ApiError> {
    match r {
        Ok(v) => {
            let entry = record(d, c, op, key, None, &detail(&v))?;
            Ok((v, entry))
        }
        Err(e) => {
            record(d, c, op, key, None, &format!("not done: {e}"))?;
            Err(work_error(e, refused))
        }
    }
}

async fn revocations(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let list = d.inventory.store.revocations()?;
    Ok(Json(Value::Array(
        list.iter().map(keys_cli::revocation_json).collect(),
    )))
}

async fn identities(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let v: Vec<Value> = d
        .identities()
        .iter()
        .map(
            |i| json!({"name": i.name, "subject": i.subject, "roles": i.roles, "tokens": i.tokens, "spki_sha256": i.spki_sha256}),
        )
        .collect();
    let disabled: Vec<String> = d
        .inventory
        .store
        .identities()?
        .into_iter()
        .filter(|r| r.disabled)
        .map(|r| r.name)
        .collect();
    Ok(Json(json!({"enabled": v, "disabled": disabled})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIdentity {
    pub name: String,
    pub subject: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub tokens: Vec<String>,
    pub pin_hash: Option<String>,
    /// SHA-256 (hex) of the one certificate key this identity is.
    pub spki_sha256: Option<String>,
    /// A PEM certificate issued elsewhere: the identity is pinned to its key.
    pub certificate: Option<String>,
}

/// A client certificate asked for an identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRequest {
    /// PEM PKCS#10 request: only its public key is used.
    pub csr: String,
    #[serde(default = "default_cert_days")]
    pub days: u32,
}

fn default_cert_days() -> u32 {
    365
}

/// Issues a client certificate for an identity from a CSR, with kmsd's
/// issuing CA: an identity change, under dual control when guarded.
async fn issue_cert(
    State(d): D,
    Extension(c): C,
    Path(name): Path<String>,
    Json(r): Json<CertRequest>,
) -> Answer {
    let op = "identities.issue-cert";
    require(&d, &c, ADMINS, Some(op))?;
    let Some((ca_cert, ca_key)) = d.issuing_ca.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_issuing_ca",
            "kmsd issues no certificates ([tls] issuing_ca_cert and issuing_ca_key are not set): have one issued by your CA and register it with `kmsctl identities add NAME --pin-cert FILE`",
        ));
    };
    let id = d
        .identities()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no identity {name}"),
            )
        })?;
    if id.spki_sha256.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "pinned",
            format!("{name} is pinned to one certificate key; a new certificate would not be it"),
        ));
    }
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let spki = crate::issue::csr_spki_sha256(&r.csr).map_err(bad)?;
    let target = format!("certificate {name} {spki}");
    dual_control(&d, &c, Guarded::IdentityChange, op, "", &target, &name)?;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io",
                format!("{}: {e}", p.display()),
            )
        })
    };
    let ca_pem = read(&ca_cert)?;
    let key_pem = zeroize::Zeroizing::new(read(&ca_key)?);
    let issued =
        crate::issue::issue(&ca_pem, &key_pem, &r.csr, &id.subject, r.days).map_err(bad)?;
    record(
        &d,
        &c,
        op,
        None,
        Some(&name),
        &format!(
            "issued serial {} for key sha256:{} until {}",
            issued.serial,
            issued.spki_sha256,
            keys_cli::rfc3339(issued.not_after)
        ),
    )?;
    Ok(Json(json!({
        "name": name,
        "certificate": issued.pem,
        "ca": ca_pem,
        "serial": issued.serial,
        "spki_sha256": issued.spki_sha256,
        "not_after": keys_cli::rfc3339(issued.not_after),
    })))
}

async fn add_identity(State(d): D, Extension(c): C, Json(mut n): Json<NewIdentity>) -> Answer {
    require(&d, &c, ADMINS, Some("identities.add"))?;
    if let Some(pem) = n.certificate.take() {
        let pin = crate::issue::cert_spki_sha256(&pem)
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
        if n.spki_sha256
            .as_ref()
            .is_some_and(|p| !p.eq_ignore_ascii_case(&pin))
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "spki_sha256 and certificate name different keys",
            ));
        }
        n.spki_sha256 = Some(pin);
    }
    if d.identities().iter().any(|i| i.name == n.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("identity {} exists", n.name),
        ));
    }
    if let Some(p) = &n.spki_sha256 {
        if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "spki_sha256: expected 64 hex digits (SHA-256 of the SubjectPublicKeyInfo)",
            ));
        }
    }
    if let Some(h) = &n.pin_hash {
        argon2::PasswordHash::new(h).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("pin_hash: {e}"),
            )
        })?;
    }
    let detail = format!(
        "added: roles [{}], tokens [{}]",
        n.roles.join(","),
        n.tokens.join(",")
    );
    // The grant is for exactly this identity: name, subject, roles, tokens, PIN.
    let what = format!(
        "identity {} {}",
        n.name,
        hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(&json!([
                n.subject,
                n.roles,
                n.tokens,
                n.pin_hash,
                n.spki_sha256
            ]))
            .unwrap_or_default()
        ))
    );
    dual_control(
        &d,
        &c,
        Guarded::IdentityChange,
        "identities.add",
        "",
        &what,
        &n.name,
    )?;
    d.inventory.store.insert_identity(&IdentityRecord {
        subject: n.subject.unwrap_or_else(|| n.name.clone()),
        name: n.name.clone(),
        roles: n.roles,
        tokens: n.tokens,
        disabled: false,
        added_by: c.identity.name.clone(),
        added: crate::core::inventory::now(),
        pin_hash: n.pin_hash,
        spki_sha256: n.spki_sha256.map(|p| p.to_ascii_lowercase()),
    })?;
    d.refresh_identities();
    record(&d, &c, "identities.add", None, Some(&n.name), &detail)?;
    Ok(Json(json!({"name": n.name, "added": true})))
}

async fn identity_action(
    State(d): D,
    Extension(c): C,
    Path((name, action)): Path<(String, String)>,
) -> Answer {
    let op = format!("identities.{action}");
    require(&d, &c, ADMINS, Some(&op))?;
    let store = &d.inventory.store;
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no identity action {other:?}"),
            ))
        }
    };
    let known = d.identities().iter().any(|i| i.name == name)
        || store.identities()?.iter().any(|i| i.name == name);
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no identity {name}"),
        ));
    }
    let what = format!("identity {name} {action}");
    dual_control(&d, &c, Guarded::IdentityChange, &op, "", &what, &name)?;
    match store.set_identity_disabled(&name, disabled) {
        Ok(()) => {}
        Err(StoreError::NotFound(_))
            if disabled && d.identities().iter().any(|i| i.name == name) =>
        {
            store.insert_identity(&IdentityRecord {
                name: name.clone(),
                subject: name.clone(),
                roles: vec![],
                tokens: vec![],
                disabled: true,
                added_by: c.identity.name.clone(),
                added: crate::core::inventory::now(),
                pin_hash: None,
                spki_sha256: None,
            })?
        }
        Err(e) => return Err(e.into()),
    }
    d.refresh_identities();
    record(&d, &c, &op, None, Some(&name), &action)?;
    Ok(Json(json!({"name": name, "disabled": disabled})))
}

async fn policy(State(d): D, Extension(c): C) -> Result<String, ApiError> {
    require(&d, &c, READERS, None)?;
    std::fs::read_to_string(&d.policy().path)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()))
}

async fn reload_policy(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, ADMINS, Some("policy.reload"))?;
    let path = d.policy().path.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io",
            format!("{}: {e}", path.display()),
        )
    })?;
    // An invalid file is refused before anyone is asked to approve it.
    if let Err(e) = crate::authz::policy::Policy::parse(&path, &text) {
        return Err(invalid_policy(&d, &c, e));
    }
    // Approvers approve this text: its SHA-256 is the request's target.
    let digest = format!(
        "policy sha256:{}",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    let path_name = path.display().to_string();
    dual_control(
        &d,
        &c,
        Guarded::PolicyReload,
        "policy.reload",
        "",
        &digest,
        &path_name,
    )?;
    match d.load_policy_text(&text) {
        Ok(n) => {
            record(
                &d,
                &c,
                "policy.reload",
                None,
                None,
                &format!("{n} policies"),
            )?;
            Ok(Json(json!({"reloaded": true, "policies": n})))
        }
        Err(e) => Err(invalid_policy(&d, &c, e)),
    }
}

/// The answer to a policy file that does not load, recorded.
fn invalid_policy(d: &Daemon, c: &Caller, e: crate::authz::policy::PolicyError) -> ApiError {
    let _ = d.audit.record(Record {
        identity: Some(c.identity.name.clone()),
        peer: Some(c.peer.to_string()),
        op: Some("policy.reload".into()),
        decision: Some("deny".into()),
        reason: Some("invalid-policy".into()),
        detail: Some(e.to_string()),
        ..Default::default()
    });
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_policy",
        e.to_string(),
    )
}

/// Checks policy text against kmsd's schema without loading it.
async fn validate_policy(State(d): D, Extension(c): C, text: String) -> Answer {
    require(&d, &c, READERS, None)?;
    match crate::authz::policy::Policy::parse(std::path::Path::new("policy"), &text) {
        Ok(p) => Ok(Json(json!({"valid": true, "policies": p.len()}))),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            e.to_string(),
        )),
    }
}

async fn quotas(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let q = &d.quotas;
    Ok(Json(json!({
        "identity_rate": q.identity_rate.map(|r| r.to_string()),
        "key_rate": q.key_rate.map(|r| r.to_string()),
        "daily_limit_per_key": q.daily_limit_per_key,
        "buckets": q.buckets(),
    })))
}

/// One record by its sequence number, from any file of the chain.
async fn audit_record(State(d): D, Extension(c): C, Path(seq): Path<u64>) -> Answer {
    require(&d, &c, READERS, None)?;
    let files = d.audit.files();
    let found = tokio::task::spawn_blocking(move || {
        files.iter().rev().find_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|r| r["seq"] == seq)
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    found.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no audit record {seq}"),
        )
    })
}

/// The whole chain as JSON Lines, oldest first (rotated files, then the
/// current one): what `kmsd audit verify` checks offline.
async fn export_audit(State(d): D, Extension(c): C) -> Result<String, ApiError> {
    require(&d, &c, READERS, None)?;
    let files = d.audit.files();
    tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        for f in files {
            out.push_str(&std::fs::read_to_string(&f).map_err(|e| e.to_string())?);
        }
        Ok::<String, String>(out)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e))
}

/// Verifies the whole audit chain (rotated files too) with kmsd's own
/// checkpoint key.
async fn verify_audit(State(d): D, Extension(c): C) -> Answer {
    require(&d, &c, READERS, None)?;
    let files = d.audit.files();
    let key = d.audit.public_key();
    let v = tokio::task::spawn_blocking(move || {
        crate::audit::verify::verify(&files, key.as_deref(), None).map_err(|b| b.to_string())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(match v {
        Ok(v) => {
            json!({"valid": true, "records": v.records, "first": v.first_seq, "last": v.last_seq, "checkpoints": v.checkpoints})
        }
        Err(why) => json!({"valid": false, "error": why}),
    }))
}

#[derive(Debug, Deserialize)]
pub struct Tail {
    pub tail: Option<usize>,
}

async fn audit(State(d): D, Extension(c): C, Query(t): Query<Tail>) -> Answer {
    require(&d, &c, READERS, None)?;
    let n = t.tail.unwrap_or(50).min(1000);
    let text = std::fs::read_to_string(d.audit.path())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()))?;
    let lines: Vec<&str> = text.lines().collect();
    let records: Vec<Value> = lines[lines.len().saturating_sub(n)..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(Json(Value::Array(records)))
}
