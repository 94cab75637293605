//! kmsd's own state behind one [`Store`] trait: the key inventory and the
//! states of keys, the revocation list, identities added at run time,
//! usage counters and audit checkpoints.
//!
//! The trait speaks of records, never of SQL: [`sqlite::Sqlite`] is the
//! embedded implementation, and one for PostgreSQL (several kmsd instances
//! sharing state) has only to pass the same [`conformance`] suite. Every
//! change of a key's state is a compare-and-set (`from` → `to`), so two
//! instances can never both win the same transition.

pub mod conformance;
pub mod sqlite;

use std::fmt;

/// A key's id in kmsd's inventory: the same for every client and across
/// restarts (`k-` and 32 hex digits, random at first sight of the key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub String);

impl KeyId {
    /// A fresh, unguessable id.
    pub fn new() -> KeyId {
        KeyId(format!("k-{}", hex::encode(rand::random::<[u8; 16]>())))
    }
}

impl Default for KeyId {
    fn default() -> Self {
        KeyId::new()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Usable as policy allows.
    Active,
    /// Refused for every operation until enabled again.
    Disabled,
    /// Destroyed for clients; the HSM object is kept until the window ends
    /// and can be restored until then.
    PendingDestroy,
    /// The HSM object is gone.
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Disabled => "disabled",
            KeyState::PendingDestroy => "pending-destroy",
            KeyState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Result<KeyState> {
        Ok(match s {
            "active" => KeyState::Active,
            "disabled" => KeyState::Disabled,
            "pending-destroy" => KeyState::PendingDestroy,
            "destroyed" => KeyState::Destroyed,
            other => return Err(StoreError::Corrupt(format!("key state {other:?}"))),
        })
    }

    /// Whether the inventory allows `self` → `to`. Destroyed is final.
    pub fn may_become(self, to: KeyState) -> bool {
        use KeyState::*;
        matches!(
            (self, to),
            (Active, Disabled)
                | (Disabled, Active)
                | (Active | Disabled, PendingDestroy)
                | (PendingDestroy, Active)
                | (PendingDestroy, Destroyed)
        )
    }
}

/// One key of the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    /// The kmsd token (`[[token]]` name) holding it.
    pub token: String,
    /// What recognises the HSM object again after a restart (see
    /// `DESIGN.md`, decision 13); unique per token.
    pub fingerprint: Vec<u8>,
    pub label: String,
    pub class: u64,
    pub key_type: u64,
    pub owner: String,
    /// Unix seconds.
    pub created: u64,
    pub state: KeyState,
    /// Unix seconds after which a pending destroy is carried out.
    pub destroy_at: Option<u64>,
    /// Unix seconds after which only verify, decrypt and unwrap are allowed.
    pub expires: Option<u64>,
    pub tags: Vec<String>,
}

/// An entry of the key revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub key: KeyId,
    pub label: String,
    /// Unix seconds.
    pub when: u64,
    pub who: String,
    pub reason: String,
}

/// An identity added at run time (beside the configuration's `[[identity]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRecord {
    pub name: String,
    /// The certificate subject it matches (URI or DNS SAN, or CN).
    pub subject: String,
    pub roles: Vec<String>,
    pub tokens: Vec<String>,
    pub disabled: bool,
    pub added_by: String,
    /// Unix seconds.
    pub added: u64,
    /// Argon2 PHC string of its PIN for `C_Login`, if it has one.
    pub pin_hash: Option<String>,
    /// SHA-256 (hex) of the one certificate key it is pinned to, if any.
    pub spki_sha256: Option<String>,
}

/// A signed audit checkpoint: the chain's head after `sequence` records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: u64,
    pub head: [u8; 32],
    /// Unix seconds.
    pub when: u64,
    pub signature: Vec<u8>,
}

/// A request for M-of-N approval of one exact call (dual control).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// `a-` and 16 hex digits.
    pub id: String,
    pub requester: String,
    pub token: String,
    /// The policy action (`sign`, `destroy`, ...).
    pub action: String,
    /// The key id the call works on.
    pub key: String,
    pub label: String,
    /// The mechanism number, if the call has one.
    pub mechanism: Option<u64>,
    /// Approvals needed, and the role approvers must hold.
    pub required: u32,
    pub role: String,
    /// Unix seconds.
    pub created: u64,
    /// Until then the request can be approved; once approved, until then
    /// the grant can be used.
    pub expires: u64,
    pub state: ApprovalState,
    pub approvers: Vec<String>,
    /// Who denied it, if anyone.
    pub denied_by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    /// Approved by enough approvers: a single-use grant.
    Approved,
    Denied,
    /// The grant was used.
    Used,
    /// Nobody decided it, or nobody used the grant, in time.
    Expired,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Used => "used",
            ApprovalState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Result<ApprovalState> {
        Ok(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "used" => ApprovalState::Used,
            "expired" => ApprovalState::Expired,
            other => return Err(StoreError::Corrupt(format!("approval state {other:?}"))),
        })
    }
}

/// An administrative change made to the store outside kmsd (`kmsd keys`,
/// `kmsd identities`), waiting to be written to kmsd's audit log: kmsd
/// is the log's only writer, so it moves these into the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminEvent {
    /// Unix seconds.
    pub when: u64,
    pub who: String,
    /// `keys.revoke`, `identities.disable`, ...
    pub action: String,
    /// The key id or identity name.
    pub target: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("key state cannot go from {0} to {1}")]
    Transition(&'static str, &'static str),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// kmsd's state. Implementations are shared by every door and task.
pub trait Store: Send + Sync {
    /// Adds a key; its id and its (token, fingerprint) must both be new.
    fn insert_key(&self, k: &KeyRecord) -> Result<()>;
    fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>>;
    fn key_by_fingerprint(&self, token: &str, fingerprint: &[u8]) -> Result<Option<KeyRecord>>;
    /// The keys of a token, or of all tokens, ordered by id.
    fn keys(&self, token: Option<&str>) -> Result<Vec<KeyRecord>>;
    /// Moves a key from `from` to `to` if it is in `from` (`Ok(false)` if it
    /// is not: another caller won). `destroy_at` is kept with a pending
    /// destroy and cleared otherwise.
    fn transition(
        &self,
        id: &KeyId,
        from: KeyState,
        to: KeyState,
        destroy_at: Option<u64>,
    ) -> Result<bool>;
    /// Pending destroys whose window ended at `now`.
    fn due_destroys(&self, now: u64) -> Result<Vec<KeyRecord>>;
    fn set_label(&self, id: &KeyId, label: &str) -> Result<()>;
    fn set_tags(&self, id: &KeyId, tags: &[String]) -> Result<()>;
    /// The object's fingerprint changed (its `CKA_ID` changed through kmsd);
    /// `Exists` if another key of the token already has the new one.
    fn set_fingerprint(&self, id: &KeyId, fingerprint: &[u8]) -> Result<()>;
    /// Sets (or clears) the key's expiry, Unix seconds.
    fn set_expires(&self, id: &KeyId, expires: Option<u64>) -> Result<()>;

    /// Adds `n` uses of `operation` to a key's counter.
    fn count_use(&self, id: &KeyId, operation: &str, n: u64) -> Result<()>;
    /// A key's counters by operation, ordered by operation.
    fn usage(&self, id: &KeyId) -> Result<Vec<(String, u64)>>;

    /// Adds a key to the revocation list (once; a second revocation is `Exists`).
    fn revoke(&self, r: &Revocation) -> Result<()>;
    fn revocation(&self, id: &KeyId) -> Result<Option<Revocation>>;
    /// A key and its revocation, if any: what every use of a token key
    /// reads. One query where the store can.
    fn key_status(&self, id: &KeyId) -> Result<Option<(KeyRecord, Option<Revocation>)>> {
        let Some(k) = self.key(id)? else {
            return Ok(None);
        };
        Ok(Some((k, self.revocation(id)?)))
    }
    /// The revocation list, oldest first.
    fn revocations(&self) -> Result<Vec<Revocation>>;

    fn insert_identity(&self, i: &IdentityRecord) -> Result<()>;
    fn identities(&self) -> Result<Vec<IdentityRecord>>;
    fn set_identity_disabled(&self, name: &str, disabled: bool) -> Result<()>;

    fn insert_checkpoint(&self, c: &Checkpoint) -> Result<()>;
    fn last_checkpoint(&self) -> Result<Option<Checkpoint>>;

    /// Counts one use of a key on `day` (UTC days since 1970) if it has
    /// had fewer than `limit` that day: the new count, or `None` at the
    /// limit. Atomic over every kmsd sharing the store; survives a crash
    /// of kmsd (a power loss may lose the last uses).
    fn take_daily(&self, id: &KeyId, day: u64, limit: u64) -> Result<Option<u64>>;
    /// A key's uses on `day`.
    fn daily(&self, id: &KeyId, day: u64) -> Result<u64>;
    /// Every key used on `day`, with its count.
    fn daily_all(&self, day: u64) -> Result<Vec<(KeyId, u64)>>;

    fn insert_approval(&self, a: &Approval) -> Result<()>;
    fn approval(&self, id: &str) -> Result<Option<Approval>>;
    /// Requests and grants, newest first.
    fn approvals(&self) -> Result<Vec<Approval>>;
    /// The pending requests and unused grants (expired ones included until
    /// marked so), newest first: what guarded calls and expiry look at,
    /// without the history.
    fn open_approvals(&self) -> Result<Vec<Approval>>;
    /// Replaces a request's state, approvers, expiry and denier if it is
    /// still in state `from` with `approvers_before` approvers
    /// (compare-and-set): `Ok(false)` if another change won.
    fn update_approval(
        &self,
        a: &Approval,
        from: ApprovalState,
        approvers_before: usize,
    ) -> Result<bool>;

    /// Queues an administrative change for the audit log.
    fn add_admin_event(&self, e: &AdminEvent) -> Result<()>;
    /// The queued events with their queue numbers, oldest first.
    fn admin_events(&self) -> Result<Vec<(u64, AdminEvent)>>;
    /// Removes the queued events up to and including `upto`.
    fn remove_admin_events(&self, upto: u64) -> Result<()>;
}
