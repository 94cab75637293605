//! Decisions over a call (DESIGN.md "authz/"): pure, no I/O. [`policy`]
//! is Cedar, default deny; [`constraints`] are the creation rules kmsd
//! applies whatever the policy says (minimum key sizes, sensitive and
//! non-extractable keys unless `export` is permitted).

pub mod approvals;
pub mod constraints;
pub mod policy;
pub mod quota;

/// The operations policy speaks of: Cedar's `Kms::Action::"<name>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    Digest,
    Wrap,
    Unwrap,
    Derive,
    /// A key leaving the HSM: wrapped (the key being wrapped), created or
    /// made extractable or not sensitive.
    Export,
    Generate,
    /// Key material from outside: `C_CreateObject`, the key `C_UnwrapKey` makes.
    Import,
    Copy,
    Destroy,
    SetAttribute,
    ReadAttribute,
    ReadSensitiveAttribute,
    /// Seeing an object at all: absent from find results, and its handle
    /// invalid, when not permitted.
    Find,
    Login,
    /// Asked by kmsd's rotation schedule only, as identity `kmsd`: a
    /// permitting policy's `@rotate_every("30d")` sets how often the key
    /// rotates. Rotating by hand needs the role admin.
    Rotate,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::Sign,
        Action::Verify,
        Action::Encrypt,
        Action::Decrypt,
        Action::Digest,
        Action::Wrap,
        Action::Unwrap,
        Action::Derive,
        Action::Export,
        Action::Generate,
        Action::Import,
        Action::Copy,
        Action::Destroy,
        Action::SetAttribute,
        Action::ReadAttribute,
        Action::ReadSensitiveAttribute,
        Action::Find,
        Action::Login,
        Action::Rotate,
    ];

    /// The actions that use a key with a mechanism: a mechanism none of
    /// them can ever be permitted with is absent from the identity's
    /// mechanism list.
    pub const WITH_MECHANISM: [Action; 10] = [
        Action::Sign,
        Action::Verify,
        Action::Encrypt,
        Action::Decrypt,
        Action::Digest,
        Action::Wrap,
        Action::Unwrap,
        Action::Derive,
        Action::Generate,
        Action::Import,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Sign => "sign",
            Action::Verify => "verify",
            Action::Encrypt => "encrypt",
            Action::Decrypt => "decrypt",
            Action::Digest => "digest",
            Action::Wrap => "wrap",
            Action::Unwrap => "unwrap",
            Action::Derive => "derive",
            Action::Export => "export",
            Action::Generate => "generate",
            Action::Import => "import",
            Action::Copy => "copy",
            Action::Destroy => "destroy",
            Action::SetAttribute => "set-attribute",
            Action::ReadAttribute => "read-attribute",
            Action::ReadSensitiveAttribute => "read-sensitive-attribute",
            Action::Find => "find",
            Action::Login => "login",
            Action::Rotate => "rotate",
        }
    }

    /// Uses of a key's material, counted by the quotas.
    pub fn is_use(self) -> bool {
        matches!(
            self,
            Action::Sign
                | Action::Verify
                | Action::Encrypt
                | Action::Decrypt
                | Action::Digest
                | Action::Wrap
                | Action::Unwrap
                | Action::Derive
        )
    }

    /// Whether an expired key may still be used for it: only what undoes
    /// earlier work (verify, decrypt, unwrap), and seeing the key.
    pub fn allowed_after_expiry(self) -> bool {
        matches!(
            self,
            Action::Verify
                | Action::Decrypt
                | Action::Unwrap
                | Action::Find
                | Action::ReadAttribute
                | Action::Destroy
        )
    }
}
