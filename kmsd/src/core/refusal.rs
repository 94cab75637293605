//! Why kmsd refused a call (DESIGN.md decision 8): the client's CK_RV, the
//! `ulDeviceError` its session reports afterwards (`C_GetSessionInfo`),
//! and the reason and rule the audit record names.

use pkcs11_sys::*;

use crate::authz::constraints::Violation;
use crate::authz::quota::Exceeded;

/// kmsd's device error codes (`CK_SESSION_INFO.ulDeviceError` after a
/// refusal), documented in the README. `0x4B4D` is "KM".
pub mod device_error {
    pub const POLICY: u64 = 0x4B4D_0001;
    pub const MECHANISM: u64 = 0x4B4D_0002;
    pub const CONSTRAINT: u64 = 0x4B4D_0003;
    pub const KEY_DISABLED: u64 = 0x4B4D_0101;
    pub const KEY_REVOKED: u64 = 0x4B4D_0102;
    pub const KEY_EXPIRED: u64 = 0x4B4D_0103;
    pub const AUDIT: u64 = 0x4B4D_0201;
    pub const IDENTITY_RATE: u64 = 0x4B4D_0301;
    pub const KEY_RATE: u64 = 0x4B4D_0302;
    pub const DAILY_LIMIT: u64 = 0x4B4D_0303;
    pub const PENDING_APPROVAL: u64 = 0x4B4D_0401;
    pub const APPROVAL_DENIED: u64 = 0x4B4D_0402;
    pub const STORE: u64 = 0x4B4D_0202;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Policy does not permit the operation on this key.
    Policy {
        rule: String,
    },
    /// Policy never permits this mechanism to this identity.
    Mechanism {
        rule: String,
    },
    /// The key is not visible to this identity (or is pending destroy).
    Hidden {
        rule: String,
    },
    /// A creation constraint.
    Constraint(Violation),
    KeyDisabled,
    KeyRevoked {
        reason: String,
    },
    KeyExpired,
    /// Over a quota.
    Quota(Exceeded),
    /// Dual control: waiting for approvals of this request.
    Pending {
        id: String,
        have: usize,
        need: u32,
    },
    /// Dual control: the request was denied (or lapsed) while the call waited.
    Denied {
        id: String,
        state: &'static str,
    },
    /// The audit log cannot be written: fail closed.
    Audit,
    /// The store cannot be read or written: fail closed.
    Store(String),
}

impl Refusal {
    pub fn rv(&self) -> CK_RV {
        match self {
            Refusal::Policy { .. } => CKR_KEY_FUNCTION_NOT_PERMITTED,
            Refusal::Mechanism { .. } => CKR_MECHANISM_INVALID,
            Refusal::Hidden { .. } => CKR_OBJECT_HANDLE_INVALID,
            Refusal::Constraint(v) => v.rv(),
            Refusal::KeyDisabled | Refusal::KeyRevoked { .. } | Refusal::KeyExpired => {
                CKR_KEY_FUNCTION_NOT_PERMITTED
            }
            Refusal::Quota(_) => CKR_FUNCTION_FAILED,
            Refusal::Pending { .. } | Refusal::Denied { .. } => CKR_FUNCTION_REJECTED,
            Refusal::Audit | Refusal::Store(_) => CKR_DEVICE_ERROR,
        }
    }

    pub fn device_error(&self) -> u64 {
        use device_error::*;
        match self {
            Refusal::Policy { .. } | Refusal::Hidden { .. } => POLICY,
            Refusal::Mechanism { .. } => MECHANISM,
            Refusal::Constraint(_) => CONSTRAINT,
            Refusal::KeyDisabled => KEY_DISABLED,
            Refusal::KeyRevoked { .. } => KEY_REVOKED,
            Refusal::KeyExpired => KEY_EXPIRED,
            Refusal::Quota(Exceeded::IdentityRate(_)) => IDENTITY_RATE,
            Refusal::Quota(Exceeded::KeyRate(_)) => KEY_RATE,
            Refusal::Quota(Exceeded::DailyLimit(_)) => DAILY_LIMIT,
            Refusal::Pending { .. } => PENDING_APPROVAL,
            Refusal::Denied { .. } => APPROVAL_DENIED,
            Refusal::Audit => AUDIT,
            Refusal::Store(_) => STORE,
        }
    }

    /// The reason, for the audit record.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Policy { .. } => "policy",
            Refusal::Mechanism { .. } => "mechanism",
            Refusal::Hidden { .. } => "not-visible",
            Refusal::Constraint(_) => "constraint",
            Refusal::KeyDisabled => "key-disabled",
            Refusal::KeyRevoked { .. } => "key-revoked",
            Refusal::KeyExpired => "key-expired",
            Refusal::Quota(_) => "quota",
            Refusal::Pending { .. } => "pending-approval",
            Refusal::Denied { .. } => "approval-denied",
            Refusal::Audit => "audit",
            Refusal::Store(_) => "store",
        }
    }

    /// The rule that decided, for the audit record.
    pub fn rule(&self) -> String {
        match self {
            Refusal::Policy { rule } | Refusal::Mechanism { rule } | Refusal::Hidden { rule } => {
                rule.clone()
            }
            Refusal::Constraint(v) => v.rule().to_string(),
            Refusal::KeyRevoked { reason } => format!("revoked: {reason}"),
            Refusal::Quota(e) => e.rule(),
            Refusal::Pending { id, have, need } => format!("approval {id} ({have} of {need})"),
            Refusal::Denied { id, state } => format!("approval {id} {state}"),
            other => other.reason().to_string(),
        }
    }
}
