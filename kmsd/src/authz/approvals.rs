//! Dual control (DESIGN.md decision 10), for the operations
//! `[dual_control] guarded` names (token key generation, import, export,
//! destroy, policy reload, identity changes: all of them by default) and
//! the uses a permitting policy annotates with `@approvals("N")`: the call
//! without a grant creates a pending request and is refused
//! (`CKR_FUNCTION_REJECTED`, or HTTP 403 `approval_required`); N distinct
//! approvers holding `[dual_control] approver_role` (or the policy's
//! `@approver_role`), never the requester, approve it through the admin
//! API; the identical call (same requester, token, action, key and
//! mechanism) then succeeds once. Requests and grants expire, and live in
//! the store, so they survive restarts.

use serde::Deserialize;

use crate::store::{Approval, ApprovalState, Store, StoreError};

/// What a guarded call without a grant does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPending {
    /// Answer `CKR_FUNCTION_REJECTED` at once; the identical retry
    /// succeeds once approved.
    Refuse,
    /// Hold the call until approved (it then completes), denied or
    /// `wait_secs` pass (`CKR_FUNCTION_REJECTED`): for clients that cannot retry.
    Wait,
}

impl OnPending {
    pub fn parse(s: &str) -> Option<OnPending> {
        match s {
            "refuse" => Some(OnPending::Refuse),
            "wait" => Some(OnPending::Wait),
            _ => None,
        }
    }
}

/// Operations under dual control whatever the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarded {
    /// Generating or deriving a token key.
    Generate,
    /// Creating or unwrapping a token key (key material from outside).
    Import,
    /// Wrapping a token key (its material leaves the HSM).
    Export,
    /// Destroying a token key (PKCS#11 or the admin API).
    Destroy,
    /// Loading a new policy through the admin API.
    PolicyReload,
    /// Adding, disabling or enabling an identity through the admin API.
    IdentityChange,
    /// Rotating a key through the admin API (a scheduled rotation is
    /// kmsd's own, by its configuration).
    Rotate,
}

impl Guarded {
    pub const ALL: [Guarded; 7] = [
        Guarded::Generate,
        Guarded::Import,
        Guarded::Export,
        Guarded::Destroy,
        Guarded::PolicyReload,
        Guarded::IdentityChange,
        Guarded::Rotate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Guarded::Generate => "generate",
            Guarded::Import => "import",
            Guarded::Export => "export",
            Guarded::Destroy => "destroy",
            Guarded::PolicyReload => "policy-reload",
            Guarded::IdentityChange => "identity-change",
            Guarded::Rotate => "rotate",
        }
    }
}

/// `[dual_control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DualControlCfg {
    /// Operations that need `approvals` approvals whatever the policy says.
    pub guarded: Vec<Guarded>,
    /// How many approvals a guarded operation needs (a policy's
    /// `@approvals` may ask more).
    pub approvals: u32,
    /// The role approvers must hold.
    pub approver_role: String,
    /// `refuse` or `wait` (a policy's `@on_pending` overrides it).
    pub on_pending: OnPending,
    /// How long `wait` holds a call. Keep it below the library's
    /// `request_timeout_ms` (120 s by default).
    pub wait_secs: u64,
    /// How long a request waits for its approvals.
    pub request_ttl_secs: u64,
    /// How long an approved grant can be used (once).
    pub grant_ttl_secs: u64,
}

impl Default for DualControlCfg {
    fn default() -> DualControlCfg {
        DualControlCfg {
            guarded: Guarded::ALL.to_vec(),
            approvals: 2,
            approver_role: "admin".into(),
            on_pending: OnPending::Refuse,
            wait_secs: 60,
            request_ttl_secs: 3600,
            grant_ttl_secs: 600,
        }
    }
}

impl DualControlCfg {
    /// Approvals a guarded operation needs, if `what` is guarded.
    pub fn needs(&self, what: Guarded) -> Option<u32> {
        self.guarded.contains(&what).then_some(self.approvals)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.approvals) {
            return Err(format!(
                "dual_control.approvals = {}: expected 1 to 16",
                self.approvals
            ));
        }
        if self.approver_role.trim().is_empty() {
            return Err("dual_control.approver_role is empty".into());
        }
        Ok(())
    }
}

/// The exact call a request or grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub requester: String,
    pub token: String,
    pub action: String,
    pub key: String,
    pub label: String,
    pub mechanism: Option<u64>,
}

impl Binding {
    fn matches(&self, a: &Approval) -> bool {
        a.requester == self.requester
            && a.token == self.token
            && a.action == self.action
            && a.key == self.key
            && a.mechanism == self.mechanism
    }
}

/// What dual control says about a guarded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// A grant was used: go on.
    Granted(String),
    /// Waiting for approvals: this request.
    Pending { id: String, have: usize, need: u32 },
}

/// A request's state as people see it: pending past its expiry is `expired`.
pub fn state_name(a: &Approval, now: u64) -> &'static str {
    match a.state {
        ApprovalState::Pending | ApprovalState::Approved if a.expires <= now => "expired",
        s => s.as_str(),
    }
}

/// Uses a live grant for `b`, or finds or creates its pending request
/// (for `need` approvers holding `role`).
pub fn gate(
    s: &dyn Store,
    cfg: &DualControlCfg,
    b: &Binding,
    need: u32,
    role: &str,
    now: u64,
) -> Result<Gate, StoreError> {
    let mine: Vec<Approval> = s
        .open_approvals()?
        .into_iter()
        .filter(|a| b.matches(a) && a.expires > now)
        .collect();
    for a in mine.iter().filter(|a| a.state == ApprovalState::Approved) {
        let used = Approval {
            state: ApprovalState::Used,
            ..a.clone()
        };
        if s.update_approval(&used, ApprovalState::Approved, a.approvers.len())? {
            return Ok(Gate::Granted(a.id.clone()));
        }
    }
    if let Some(p) = mine.iter().find(|a| a.state == ApprovalState::Pending) {
        return Ok(Gate::Pending {
            id: p.id.clone(),
            have: p.approvers.len(),
            need: p.required,
        });
    }
    let a = Approval {
        id: format!("a-{}", hex::encode(rand::random::<[u8; 8]>())),
        requester: b.requester.clone(),
        token: b.token.clone(),
        action: b.action.clone(),
        key: b.key.clone(),
        label: b.label.clone(),
        mechanism: b.mechanism,
        required: need,
        role: role.to_string(),
        created: now,
        expires: now + cfg.request_ttl_secs,
        state: ApprovalState::Pending,
        approvers: vec![],
        denied_by: None,
    };
    s.insert_approval(&a)?;
    Ok(Gate::Pending {
        id: a.id,
        have: 0,
        need,
    })
}

/// Why an approval or denial was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("{0} is {1}, not pending")]
    NotPending(String, &'static str),
    #[error("the requester cannot approve or deny their own request")]
    OwnRequest,
    #[error("{0} needs the role {1}")]
    Role(String, String),
    #[error("{0} has already approved it")]
    Twice(String),
    #[error("another decision on it was made meanwhile; try again")]
    Raced,
    #[error("store: {0}")]
    Store(String),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e.to_string())
    }
}

/// `who` (holding `roles`) approves (or denies) request `id`: the updated
/// request.
pub fn decide(
    s: &dyn Store,
    cfg: &DualControlCfg,
    id: &str,
    who: &str,
    roles: &[String],
    approve: bool,
    now: u64,
) -> Result<Approval, Refused> {
    let a = s
        .approval(id)?
        .ok_or_else(|| Refused::NotFound(id.into()))?;
    if a.state != ApprovalState::Pending || a.expires <= now {
        return Err(Refused::NotPending(id.into(), state_name(&a, now)));
    }
    if a.requester == who {
        return Err(Refused::OwnRequest);
    }
    if !roles.contains(&a.role) {
        return Err(Refused::Role(who.into(), a.role.clone()));
    }
    if a.approvers.iter().any(|x| x == who) {
        return Err(Refused::Twice(who.into()));
    }
    let mut next = a.clone();
    if approve {
        next.approvers.push(who.into());
        if next.approvers.len() as u32 >= a.required {
            next.state = ApprovalState::Approved;
            next.expires = now + cfg.grant_ttl_secs;
        }
    } else {
        next.state = ApprovalState::Denied;
        next.denied_by = Some(who.into());
    }
    if !s.update_approval(&next, ApprovalState::Pending, a.approvers.len())? {
        return Err(Refused::Raced);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Sqlite;

    fn binding() -> Binding {
        Binding {
            requester: "alice".into(),
            token: "t".into(),
            action: "sign".into(),
            key: "k-1".into(),
            label: "release".into(),
            mechanism: Some(0x1041),
        }
    }

    #[test]
    fn two_approvals_make_one_grant() {
        let s = Sqlite::in_memory().unwrap();
        let cfg = DualControlCfg::default();
        let admin = vec!["admin".to_string()];
        let Gate::Pending { id, .. } = gate(&s, &cfg, &binding(), 2, "admin", 100).unwrap() else {
            panic!("granted without approvals")
        };
        // The same call again finds the same request.
        assert_eq!(
            gate(&s, &cfg, &binding(), 2, "admin", 101).unwrap(),
            Gate::Pending {
                id: id.clone(),
                have: 0,
                need: 2
            }
        );
        assert_eq!(
            decide(&s, &cfg, &id, "alice", &admin, true, 102),
            Err(Refused::OwnRequest)
        );
        assert_eq!(
            decide(&s, &cfg, &id, "eve", &["user".to_string()], true, 102),
            Err(Refused::Role("eve".into(), "admin".into()))
        );
        decide(&s, &cfg, &id, "bob", &admin, true, 102).unwrap();
        assert_eq!(
            decide(&s, &cfg, &id, "bob", &admin, true, 103),
            Err(Refused::Twice("bob".into()))
        );
        assert!(matches!(
            gate(&s, &cfg, &binding(), 2, "admin", 103).unwrap(),
            Gate::Pending { have: 1, .. }
        ));
        assert_eq!(
            decide(&s, &cfg, &id, "carol", &admin, true, 104)
                .unwrap()
                .state,
            ApprovalState::Approved
        );
        // Another key is not granted; the bound call is, once.
        let other = Binding {
            key: "k-2".into(),
            ..binding()
        };
        assert!(matches!(
            gate(&s, &cfg, &other, 2, "admin", 105).unwrap(),
            Gate::Pending { .. }
        ));
        assert_eq!(
            gate(&s, &cfg, &binding(), 2, "admin", 105).unwrap(),
            Gate::Granted(id.clone())
        );
        assert!(matches!(
            gate(&s, &cfg, &binding(), 2, "admin", 106).unwrap(),
            Gate::Pending { have: 0, .. }
        ));
    }

    #[test]
    fn requests_and_grants_expire_and_denials_end_them() {
        let s = Sqlite::in_memory().unwrap();
        let cfg = DualControlCfg::default();
        let admin = vec!["admin".to_string()];
        let Gate::Pending { id, .. } = gate(&s, &cfg, &binding(), 1, "admin", 100).unwrap() else {
            panic!()
        };
        assert!(matches!(
            decide(
                &s,
                &cfg,
                &id,
                "bob",
                &admin,
                true,
                100 + cfg.request_ttl_secs
            ),
            Err(Refused::NotPending(_, "expired"))
        ));
        let Gate::Pending { id, .. } = gate(&s, &cfg, &binding(), 1, "admin", 5000).unwrap() else {
            panic!()
        };
        assert_eq!(
            decide(&s, &cfg, &id, "bob", &admin, false, 5001)
                .unwrap()
                .state,
            ApprovalState::Denied
        );
        let Gate::Pending { id, .. } = gate(&s, &cfg, &binding(), 1, "admin", 5002).unwrap() else {
            panic!()
        };
        decide(&s, &cfg, &id, "bob", &admin, true, 5003).unwrap();
        // The grant lapses unused.
        assert!(matches!(
            gate(&s, &cfg, &binding(), 1, "admin", 5003 + cfg.grant_ttl_secs).unwrap(),
            Gate::Pending { .. }
        ));
    }
}
